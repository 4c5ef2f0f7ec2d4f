#if canImport(Glibc)
import Glibc
#endif
import AppServerConfig
import NIOCore

/// One finished request, as the access log sees it.
public struct AccessLogRecord {
    public var request: RequestInfo
    public var status: Int
    public var responseBytes: Int64
    public var responseHeaders: [(name: String, value: String)]
    public var finished: Monotonic
    /// The wall-clock time the request started: the wall clock now, less the time it took (as the
    /// monotonic clock measured it).
    public var startedWallClock: timespec

    public init(request: RequestInfo, status: Int, responseBytes: Int64, responseHeaders: [(name: String, value: String)], finished: Monotonic) {
        self.request = request
        self.status = status
        self.responseBytes = responseBytes
        self.responseHeaders = responseHeaders
        self.finished = finished
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let started = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - max(0, finished.nanoseconds - request.started.nanoseconds)
        startedWallClock = timespec(tv_sec: Int(started / 1_000_000_000), tv_nsec: Int(started % 1_000_000_000))
    }
}

/// Gunicorn's access log format: `%(h)s %(l)s ...` with the same atoms, parsed once; or `json`: one
/// JSON object a line with the atoms as keys (numbers as numbers), an ISO 8601 `time` and the `request_id`.
public struct AccessLogFormatter: Sendable {
    enum Piece: Equatable, Sendable {
        case literal(String)
        case atom(String)
        case requestHeader(String)
        case responseHeader(String)
        case environment(String)
    }

    let pieces: [Piece]
    /// Whether the app's response headers must be kept for the log line.
    public let needsResponseHeaders: Bool
    let json: Bool
    /// The request id's header (lower case): `%({x-request-id}i)s` shows an id made here too.
    let requestIDHeader: String?

    public init(format: String, requestIDHeader: String? = nil) {
        self.requestIDHeader = requestIDHeader.flatMap { $0.isEmpty ? nil : $0.lowercased() }
        json = format.trimmingCharacters(in: " ") == "json"
        if json {
            pieces = []
            needsResponseHeaders = false
            return
        }
        var pieces: [Piece] = []
        var literal = ""
        var rest = Substring(format)
        while let start = rest.range(of: "%(") {
            literal += rest[..<start.lowerBound]
            let afterOpen = rest[start.upperBound...]
            guard let close = afterOpen.range(of: ")s") else {
                literal += rest[start.lowerBound...]
                rest = ""
                break
            }
            let name = String(afterOpen[..<close.lowerBound])
            if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
            if name.hasPrefix("{"), let end = name.lastIndex(of: "}") {
                let key = String(name[name.index(after: name.startIndex)..<end]).lowercased()
                switch name[name.index(after: end)...] {
                case "i": pieces.append(.requestHeader(key))
                case "o": pieces.append(.responseHeader(key))
                case "e": pieces.append(.environment(String(name[name.index(after: name.startIndex)..<end])))
                default: pieces.append(.literal("-"))
                }
            } else {
                pieces.append(.atom(name))
            }
            rest = afterOpen[close.upperBound...]
        }
        literal += rest
        if !literal.isEmpty { pieces.append(.literal(literal.replacingOccurrences(of: "%%", with: "%"))) }
        self.pieces = pieces
        self.needsResponseHeaders = pieces.contains { if case .responseHeader = $0 { return true } else { return false } }
    }

    public func format(_ record: AccessLogRecord) -> String {
        if json { return jsonLine(record) }
        var line = ""
        for piece in pieces {
            switch piece {
            case .literal(let text): line += text
            case .atom(let name): line += atom(name, record)
            case .requestHeader(let name):
                if name == requestIDHeader, record.request.requestIDMade, let id = record.request.requestID {
                    line += id
                } else {
                    line += record.request.headers.first(name: name) ?? "-"
                }
            case .responseHeader(let name): line += record.responseHeaders.first { $0.name.lowercased() == name }?.value ?? "-"
            case .environment(let name): line += getenv(name).map { String(cString: $0) } ?? "-"
            }
        }
        return line
    }

    /// One of Gunicorn's atoms (`h`, `r`, `s`, ...) of the record, as the line shows it.
    public func atom(_ name: String, _ r: AccessLogRecord) -> String {
        let elapsed = r.finished.nanoseconds - r.request.started.nanoseconds
        let uri = r.request.uri
        let query = uri.firstIndex(of: "?")
        switch name {
        case "h": return r.request.origin?.client?.host ?? Self.host(r.request.remoteAddress)
        case "l": return "-"
        case "u": return Self.basicAuthUser(r.request.headers.first(name: "authorization")) ?? "-"
        case "t": return Self.clfTime(r.startedWallClock)
        case "r": return "\(r.request.method) \(uri) HTTP/\(r.request.version.major).\(r.request.version.minor)"
        case "m": return r.request.method
        case "U": return String(uri[..<(query ?? uri.endIndex)])
        case "q": return query.map { String(uri[uri.index(after: $0)...]) } ?? ""
        case "H": return "HTTP/\(r.request.version.major).\(r.request.version.minor)"
        case "s": return String(r.status)
        case "B": return String(r.responseBytes)
        case "b": return r.responseBytes > 0 ? String(r.responseBytes) : "-"
        case "f": return r.request.headers.first(name: "referer") ?? "-"
        case "a": return r.request.headers.first(name: "user-agent") ?? "-"
        case "T": return String(elapsed / 1_000_000_000)
        case "M": return String(elapsed / 1_000_000)
        case "D": return String(elapsed / 1_000)
        case "L": return String(format6(Double(elapsed) / 1e9))
        case "p": return "<\(getpid())>"
        default: return "-"
        }
    }

    /// Gunicorn's atoms, in its documentation's order; these are numbers in JSON.
    public static let jsonAtoms = ["h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D", "L", "p"]
    static let numericAtoms: Set<String> = ["s", "B", "T", "M", "D", "L"]

    private func jsonLine(_ record: AccessLogRecord) -> String {
        var line = "{\"time\":" + Self.isoTime(record.startedWallClock).doubleQuotedEscaped
        for name in Self.jsonAtoms {
            let value = atom(name, record)
            line += ",\"" + name + "\":"
            if Self.numericAtoms.contains(name) || (name == "b" && value != "-") {
                line += value
            } else if name == "b" {
                line += "null"
            } else {
                line += value.doubleQuotedEscaped
            }
        }
        line += ",\"request_id\":" + (record.request.requestID.map(\.doubleQuotedEscaped) ?? "null") + "}"
        return line
    }

    /// `2026-11-29T10:00:00.123Z`.
    static func isoTime(_ wall: timespec) -> String {
        let millis = String(wall.tv_nsec / 1_000_000)
        return formatted(wall, "%Y-%m-%dT%H:%M:%S", utc: true) + "." + String(repeating: "0", count: 3 - millis.count) + millis + "Z"
    }

    private func format6(_ value: Double) -> String {
        let micros = Int64((value * 1_000_000).rounded())
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
    }

    static func host(_ address: SocketAddress?) -> String {
        guard let address else { return "-" }
        switch address {
        case .unixDomainSocket: return "-"
        default: return address.ipAddress ?? "-"
        }
    }

    static func basicAuthUser(_ header: String?) -> String? {
        guard let header, header.lowercased().hasPrefix("basic "),
              let decoded = Base64.decode(String(header.dropFirst(6)).trimmingCharacters(in: " ")) else { return nil }
        return decoded.split(separator: ":", maxSplits: 1).first.map(String.init)
    }

    /// `[10/Oct/2000:13:55:36 -0700]`, local time.
    static func clfTime(_ wall: timespec) -> String { formatted(wall, "[%d/%b/%Y:%H:%M:%S %z]", utc: false) }

    /// strftime of a wall-clock time, in UTC or local time.
    private static func formatted(_ wall: timespec, _ format: String, utc: Bool) -> String {
        var seconds = wall.tv_sec
        var tm = tm()
        if utc { gmtime_r(&seconds, &tm) } else { localtime_r(&seconds, &tm) }
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, format, &tm)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        String(Substring(self).trimmingCharacters(in: set))
    }
}
