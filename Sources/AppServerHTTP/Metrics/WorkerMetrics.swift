import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// What one worker counts for the metrics endpoint, in words of memory it shares with the arbiter
/// (part of the worker's slot, mapped before fork). The worker writes; the arbiter reads at a scrape
/// and once more after the worker exited, so a dead worker's counts are never lost.
///
/// Almost every word has one writer, the worker's I/O thread: a relaxed load and store, no locked
/// instruction, is all an update costs. The few counted from app threads (app exceptions) use an
/// atomic add.
public final class WorkerMetrics: @unchecked Sendable {
    /// Words this layout takes.
    public static let wordCount = Layout.end

    /// Method classes of `appserver_requests_total` (the rest count as `other`).
    public static let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"]
    public static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
    /// Upper bounds of the request duration histogram, in seconds: from a fast JSON view to a slow
    /// report (the last bucket, +Inf, is implicit).
    public static let durationBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
    private static let durationBoundsNanoseconds: [Int64] = durationBounds.map { Int64($0 * 1e9) }
    /// What the HTTP layer refuses before the app sees a request, by status.
    public static let refusals: [(status: Int, reason: String)] = [
        (400, "bad_request"), (408, "request_timeout"), (413, "content_too_large"), (414, "uri_too_long"),
        (431, "header_fields_too_large"), (501, "not_implemented"), (505, "http_version_not_supported"), (0, "other"),
    ]

    enum Layout {
        static let requests = 0                                                       // method x status class
        static let durations = requests + WorkerMetrics.methods.count * WorkerMetrics.statusClasses.count
        static let durationSum = durations + WorkerMetrics.durationBounds.count + 1   // nanoseconds
        static let requestBodyBytes = durationSum + 1
        static let responseBytes = requestBodyBytes + 1
        static let inFlight = responseBytes + 1                                       // gauge
        static let connections = inFlight + 1                                         // gauge
        static let webSockets = connections + 1                                       // gauge
        static let appExceptions = webSockets + 1
        static let timedOut = appExceptions + 1                                       // answered 504
        static let refused = timedOut + 1
        static let connectionsAccepted = refused + WorkerMetrics.refusals.count
        static let webSocketsAccepted = connectionsAccepted + 1
        /// Set by the worker when it retires itself after max_requests (why it exits).
        static let retiredAfterMaxRequests = webSocketsAccepted + 1
        static let end = retiredAfterMaxRequests + 1
    }

    private let words: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>

    /// `memory` holds `wordCount` zeroed words that outlive this object (the worker's slot).
    public init(memory: UnsafeMutableRawPointer) {
        words = memory.bindMemory(to: UnsafeAtomic<Int64>.Storage.self, capacity: Self.wordCount)
    }

    @inline(__always) private func word(_ index: Int) -> UnsafeAtomic<Int64> { UnsafeAtomic(at: words + index) }

    /// One writer: no locked add.
    @inline(__always) private func bump(_ index: Int, by amount: Int64 = 1) {
        let w = word(index)
        w.store(w.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    // MARK: the worker's side (the I/O thread unless said otherwise)

    /// A response ended: its method, status, time since the head arrived, and bytes each way.
    public func requestFinished(method: String, status: Int, nanoseconds: Int64, requestBodyBytes: Int64, responseBytes: Int64) {
        let statusClass = min(max(status / 100, 1), 5) - 1
        bump(Layout.requests + Self.methodClass(method) * Self.statusClasses.count + statusClass)
        var bucket = 0
        let bounds = Self.durationBoundsNanoseconds
        while bucket < bounds.count && nanoseconds > bounds[bucket] { bucket += 1 }
        bump(Layout.durations + bucket)
        bump(Layout.durationSum, by: nanoseconds)
        if requestBodyBytes > 0 { bump(Layout.requestBodyBytes, by: requestBodyBytes) }
        bump(Layout.responseBytes, by: responseBytes)
    }

    static func methodClass(_ method: String) -> Int {
        switch method {
        case "GET": return 0
        case "HEAD": return 1
        case "POST": return 2
        case "PUT": return 3
        case "PATCH": return 4
        case "DELETE": return 5
        case "OPTIONS": return 6
        default: return 7
        }
    }

    public func requestStarted() { bump(Layout.inFlight) }
    public func requestEnded() { bump(Layout.inFlight, by: -1) }
    public func connectionOpened() { bump(Layout.connections); bump(Layout.connectionsAccepted) }
    public func connectionClosed() { bump(Layout.connections, by: -1) }
    public func webSocketOpened() { bump(Layout.webSockets); bump(Layout.webSocketsAccepted) }
    public func webSocketClosed() { bump(Layout.webSockets, by: -1) }
    public func requestTimedOut() { bump(Layout.timedOut) }
    public func retiringAfterMaxRequests() { word(Layout.retiredAfterMaxRequests).store(1, ordering: .relaxed) }

    public func refused(status: Int) {
        let index = Self.refusals.firstIndex { $0.status == status } ?? Self.refusals.count - 1
        bump(Layout.refused + index)
    }

    /// From any thread: the app raised (an error response was made for it, or its response broke off).
    public func appException() { word(Layout.appExceptions).wrappingIncrement(ordering: .relaxed) }

    // MARK: the arbiter's side

    public var retiredAfterMaxRequests: Bool { word(Layout.retiredAfterMaxRequests).load(ordering: .relaxed) == 1 }

    public var gauges: Gauges {
        Gauges(inFlight: max(0, word(Layout.inFlight).load(ordering: .relaxed)),
               connections: max(0, word(Layout.connections).load(ordering: .relaxed)),
               webSockets: max(0, word(Layout.webSockets).load(ordering: .relaxed)))
    }

    public func counters() -> Counters {
        var result = Counters()
        for index in 0..<Counters.size where index != Layout.inFlight && index != Layout.connections && index != Layout.webSockets {
            result.values[index] = word(index).load(ordering: .relaxed)
        }
        return result
    }

    public struct Gauges: Sendable {
        public var inFlight: Int64 = 0
        public var connections: Int64 = 0
        public var webSockets: Int64 = 0

        public init(inFlight: Int64 = 0, connections: Int64 = 0, webSockets: Int64 = 0) {
            self.inFlight = inFlight
            self.connections = connections
            self.webSockets = webSockets
        }

        public static func + (a: Gauges, b: Gauges) -> Gauges {
            Gauges(inFlight: a.inFlight + b.inFlight, connections: a.connections + b.connections, webSockets: a.webSockets + b.webSockets)
        }
    }

    /// Every counter of a worker (or a sum of workers), in the shared layout; gauge words stay 0.
    public struct Counters: Sendable, Equatable {
        public static let size = Layout.retiredAfterMaxRequests
        public var values = [Int64](repeating: 0, count: size)

        public init() {}

        public init(values: [Int64]) {
            precondition(values.count == Self.size)
            self.values = values
        }

        public static func + (a: Counters, b: Counters) -> Counters {
            var sum = a
            sum += b
            return sum
        }

        public static func += (a: inout Counters, b: Counters) {
            for index in 0..<size { a.values[index] &+= b.values[index] }
        }

        public func requests(method: Int, statusClass: Int) -> Int64 {
            values[Layout.requests + method * WorkerMetrics.statusClasses.count + statusClass]
        }

        public var requestsTotal: Int64 {
            values[Layout.requests..<Layout.durations].reduce(0, +)
        }

        /// Per bucket (not cumulative), the last one past the largest bound.
        public var durationBuckets: ArraySlice<Int64> { values[Layout.durations..<Layout.durationSum] }
        public var durationSumSeconds: Double { Double(values[Layout.durationSum]) / 1e9 }
        public var requestBodyBytes: Int64 { values[Layout.requestBodyBytes] }
        public var responseBytes: Int64 { values[Layout.responseBytes] }
        public var appExceptions: Int64 { values[Layout.appExceptions] }
        public var timedOut: Int64 { values[Layout.timedOut] }
        public func refused(_ index: Int) -> Int64 { values[Layout.refused + index] }
        public var connectionsAccepted: Int64 { values[Layout.connectionsAccepted] }
        public var webSocketsAccepted: Int64 { values[Layout.webSocketsAccepted] }
    }

    /// The worker process's own metrics, set once before it serves (nil in the arbiter and in tests).
    nonisolated(unsafe) public static var current: WorkerMetrics?
}
