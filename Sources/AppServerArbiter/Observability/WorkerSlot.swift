import AppServerConfig
import AppServerHTTP
import Atomics
import Foundation

/// A few words of memory shared between the arbiter and one worker (an anonymous shared mapping made
/// before fork): the worker's heartbeat, whether it booted and accepts, how many requests it served,
/// and (for statsd) how many with each status and in each duration bucket. The arbiter reads them
/// without any message passing, so a worker stuck anywhere still shows as stuck. After them, the
/// worker's last words.
final class WorkerSlot: @unchecked Sendable {
    private let memory: UnsafeMutableRawPointer
    private static let wordsSize = 8192
    private static let size = wordsSize + LastWords.capacity
    /// Status codes 100 to 599, a counter each, from word 4.
    private static let statusBase = 4
    private static let statusCount = 500
    /// Durations in buckets of a quarter power of two from 0.1 ms (bucket i: about 0.1 * 2^(i/4) ms).
    private static let durationBase = statusBase + statusCount
    static let durationBuckets = 64
    private let words: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>

    /// CLOCK_MONOTONIC nanoseconds of the last sign of life (the oldest in-flight request's progress
    /// when one is stuck).
    let heartbeat: UnsafeAtomic<Int64>
    /// 1 once the app imported and the worker accepts connections.
    let booted: UnsafeAtomic<Int64>
    let requests: UnsafeAtomic<Int64>
    /// 1 while the worker accepts connections; back to 0 once its listeners are closed (draining).
    let accepting: UnsafeAtomic<Int64>
    /// What the metrics endpoint publishes, after the statsd counters.
    let metrics: WorkerMetrics
    private static let metricsBase = durationBase + durationBuckets
    /// Why the worker exited, when it says so.
    let lastWords: LastWords

    init() {
        guard let memory = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
            fatalError("mmap of a worker slot failed: \(String(cString: strerror(errno)))")
        }
        self.memory = memory
        let words = memory.bindMemory(to: UnsafeAtomic<Int64>.Storage.self, capacity: Self.durationBase + Self.durationBuckets)
        self.words = words
        heartbeat = UnsafeAtomic(at: words)
        booted = UnsafeAtomic(at: words + 1)
        requests = UnsafeAtomic(at: words + 2)
        accepting = UnsafeAtomic(at: words + 3)
        metrics = WorkerMetrics(memory: UnsafeMutableRawPointer(words + Self.metricsBase))
        lastWords = LastWords(memory: memory + Self.wordsSize)
        precondition((Self.metricsBase + WorkerMetrics.wordCount) * 8 <= Self.wordsSize, "the worker slot is too small")
        heartbeat.store(MonotonicClock.nanoseconds(), ordering: .relaxed)
    }

    deinit {
        munmap(memory, Self.size)
    }

    /// The worker, after each response (on its event loop).
    func record(status: Int, nanoseconds: Int64) {
        if status >= 100 && status < 600 {
            UnsafeAtomic<Int64>(at: words + Self.statusBase + status - 100).wrappingIncrement(ordering: .relaxed)
        }
        UnsafeAtomic<Int64>(at: words + Self.durationBase + Self.bucket(nanoseconds: nanoseconds)).wrappingIncrement(ordering: .relaxed)
    }

    static func bucket(nanoseconds: Int64) -> Int {
        let tenthsOfMilliseconds = Double(max(nanoseconds, 1)) / 100_000
        return min(durationBuckets - 1, max(0, Int((4 * log2(tenthsOfMilliseconds)).rounded(.down))))
    }

    /// A bucket's middle, in milliseconds.
    static func milliseconds(ofBucket index: Int) -> Double {
        0.1 * pow(2, (Double(index) + 0.5) / 4)
    }

    /// What the arbiter reads for statsd.
    struct Counts {
        var requests: Int64 = 0
        var statuses: [Int: Int64] = [:]
        var durations: [Int: Int64] = [:]

        mutating func add(_ other: Counts) {
            requests += other.requests
            for (code, count) in other.statuses { statuses[code, default: 0] += count }
            for (bucket, count) in other.durations { durations[bucket, default: 0] += count }
        }

        func subtracting(_ earlier: Counts) -> Counts {
            var result = Counts(requests: requests - earlier.requests)
            for (code, count) in statuses where count != earlier.statuses[code] ?? 0 { result.statuses[code] = count - (earlier.statuses[code] ?? 0) }
            for (bucket, count) in durations where count != earlier.durations[bucket] ?? 0 { result.durations[bucket] = count - (earlier.durations[bucket] ?? 0) }
            return result
        }
    }

    func counts() -> Counts {
        var result = Counts(requests: requests.load(ordering: .relaxed))
        for index in 0..<Self.statusCount {
            let count = UnsafeAtomic<Int64>(at: words + Self.statusBase + index).load(ordering: .relaxed)
            if count > 0 { result.statuses[100 + index] = count }
        }
        for index in 0..<Self.durationBuckets {
            let count = UnsafeAtomic<Int64>(at: words + Self.durationBase + index).load(ordering: .relaxed)
            if count > 0 { result.durations[index] = count }
        }
        return result
    }
}

enum MonotonicClock {
    static func nanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func seconds() -> Double { Double(nanoseconds()) / 1e9 }
}
