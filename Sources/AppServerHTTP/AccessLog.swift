#if canImport(Glibc)
import Glibc
#endif
import AppServerConfig
import NIOCore
import Synchronization

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
/// A line is written as bytes, from the request's own bytes where it can (the target, the method, header
/// values), with the `%(t)s` text made once a second: as Strings, with an atom's name matched and the
/// time formatted for every line, the default format cost more than the rest of a hello request.
public struct AccessLogFormatter: Sendable {
    /// Gunicorn's atoms.
    enum Atom: Sendable, Equatable {
        case remoteAddress, ident, user, time, requestLine, method, path, query, protocolVersion, status
        case responseBytes, responseBytesOrDash, referer, userAgent, seconds, milliseconds, microseconds, decimalSeconds, pid
        case unknown

        init(_ name: String) {
            switch name {
            case "h": self = .remoteAddress
            case "l": self = .ident
            case "u": self = .user
            case "t": self = .time
            case "r": self = .requestLine
            case "m": self = .method
            case "U": self = .path
            case "q": self = .query
            case "H": self = .protocolVersion
            case "s": self = .status
            case "B": self = .responseBytes
            case "b": self = .responseBytesOrDash
            case "f": self = .referer
            case "a": self = .userAgent
            case "T": self = .seconds
            case "M": self = .milliseconds
            case "D": self = .microseconds
            case "L": self = .decimalSeconds
            case "p": self = .pid
            default: self = .unknown
            }
        }
    }

    /// A piece of the format. Literal text and request header names are ranges of `text`: pieces that
    /// hold no reference of their own are read without a retain and release each, on every line.
    enum Piece: Equatable, Sendable {
        case literal(Range<Int>)
        case atom(Atom)
        case requestHeader(Range<Int>)
        case responseHeader(String)
        case environment(String)
    }

    let pieces: [Piece]
    /// The literals' bytes (`%%` read as `%`) and the request header names (lower case), one after another.
    let text: [UInt8]
    /// Whether the app's response headers must be kept for the log line.
    public let needsResponseHeaders: Bool
    let json: Bool
    /// The request id's header (lower case): `%({x-request-id}i)s` shows an id made here too.
    let requestIDHeader: [UInt8]?

    public init(format: String, requestIDHeader: String? = nil) {
        self.requestIDHeader = requestIDHeader.flatMap { $0.isEmpty ? nil : Array($0.lowercased().utf8) }
        json = format.trimmingCharacters(in: " ") == "json"
        if json {
            pieces = []
            text = []
            needsResponseHeaders = false
            return
        }
        var pieces: [Piece] = []
        var text: [UInt8] = []
        func bytes(_ added: some Sequence<UInt8>) -> Range<Int> {
            let start = text.count
            text.append(contentsOf: added)
            return start..<text.count
        }
        // Text between atoms, `%%` read as `%` as Python's formatting reads it, wherever it stands.
        func literalPiece(_ literal: String) -> Piece { .literal(bytes(literal.replacingOccurrences(of: "%%", with: "%").utf8)) }
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
            if !literal.isEmpty { pieces.append(literalPiece(literal)); literal = "" }
            if name.hasPrefix("{"), let end = name.lastIndex(of: "}") {
                let key = String(name[name.index(after: name.startIndex)..<end]).lowercased()
                switch name[name.index(after: end)...] {
                case "i": pieces.append(.requestHeader(bytes(key.utf8)))
                case "o": pieces.append(.responseHeader(key))
                case "e": pieces.append(.environment(String(name[name.index(after: name.startIndex)..<end])))
                default: pieces.append(.literal(bytes("-".utf8)))
                }
            } else {
                pieces.append(.atom(Atom(name)))
            }
            rest = afterOpen[close.upperBound...]
        }
        literal += rest
        if !literal.isEmpty { pieces.append(literalPiece(literal)) }
        self.pieces = pieces
        self.text = text
        self.needsResponseHeaders = pieces.contains { if case .responseHeader = $0 { return true } else { return false } }
    }

    public func format(_ record: AccessLogRecord) -> String {
        String(decoding: line(record), as: UTF8.self)
    }

    /// The record's line as bytes, without its newline.
    public func line(_ record: AccessLogRecord) -> [UInt8] {
        var line: [UInt8] = []
        line.reserveCapacity(256)
        append(record, to: &line)
        return line
    }

    /// Appends the record's line, without its newline, to `line`: a batch of lines being gathered.
    public func append(_ record: AccessLogRecord, to line: inout [UInt8]) {
        if json {
            line.append(contentsOf: jsonLine(record).utf8)
            return
        }
        AccessLineBuilder.build(into: &line) { line in
            text.withUnsafeBytes { text in
                for piece in pieces {
                    switch piece {
                    case .literal(let range): line.append(contentsOf: UnsafeRawBufferPointer(rebasing: text[range]))
                    case .atom(let atom): append(atom, of: record, to: &line)
                    case .requestHeader(let range):
                        let name = UnsafeRawBufferPointer(rebasing: text[range])
                        if record.request.requestIDMade, let id = record.request.requestID, requestIDHeader?.elementsEqual(name) == true {
                            line.append(contentsOf: id.utf8)
                        } else {
                            Self.appendHeader(name, of: record.request, to: &line)
                        }
                    case .responseHeader(let name): line.append(contentsOf: (record.responseHeaders.first { $0.name.lowercased() == name }?.value ?? "-").utf8)
                    case .environment(let name): line.append(contentsOf: (getenv(name).map { String(cString: $0) } ?? "-").utf8)
                    }
                }
            }
        }
    }

    /// One of Gunicorn's atoms (`h`, `r`, `s`, ...) of the record, as the line shows it.
    public func atom(_ name: String, _ record: AccessLogRecord) -> String {
        var bytes: [UInt8] = []
        AccessLineBuilder.build(into: &bytes) { append(Atom(name), of: record, to: &$0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func append(_ atom: Atom, of r: AccessLogRecord, to line: inout AccessLineBuilder) {
        let request = r.request
        switch atom {
        case .remoteAddress:
            if let client = request.origin?.client {
                line.append(contentsOf: client.host.utf8)
            } else if let address = request.remoteAddress {
                withUnsafeTemporaryAllocation(byteCount: 64, alignment: 1) { buffer in
                    let length = address.writeIPText(into: buffer)
                    if length > 0 {
                        line.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<length]))
                    } else {
                        line.append(UInt8(ascii: "-"))   // a unix socket
                    }
                }
            } else {
                line.append(UInt8(ascii: "-"))
            }
        case .ident, .unknown: line.append(UInt8(ascii: "-"))
        case .user:
            if let user = Self.basicAuthUser(request) { line.append(contentsOf: user.utf8) } else { line.append(UInt8(ascii: "-")) }
        case .time: Self.appendCLFTime(r.startedWallClock, to: &line)
        case .requestLine:
            request.head.withMethod { line.append(contentsOf: $0) }
            line.append(UInt8(ascii: " "))
            request.head.withTarget { line.append(contentsOf: $0) }
            line.append(UInt8(ascii: " "))
            appendVersion(request, to: &line)
        case .method: request.head.withMethod { line.append(contentsOf: $0) }
        case .path: request.head.withTarget { target in line.append(contentsOf: target[..<(target.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex)]) }
        case .query:
            request.head.withTarget { target in
                if let mark = target.firstIndex(of: UInt8(ascii: "?")) { line.append(contentsOf: target[(mark + 1)...]) }
            }
        case .protocolVersion: appendVersion(request, to: &line)
        case .status: line.appendDecimal(r.status)
        case .responseBytes: line.appendDecimal(Int(r.responseBytes))
        case .responseBytesOrDash:
            if r.responseBytes > 0 { line.appendDecimal(Int(r.responseBytes)) } else { line.append(UInt8(ascii: "-")) }
        case .referer: Self.appendHeader(Self.referer, of: request, to: &line)
        case .userAgent: Self.appendHeader(Self.userAgent, of: request, to: &line)
        case .seconds: line.appendDecimal(Int(Self.elapsed(r) / 1_000_000_000))
        case .milliseconds: line.appendDecimal(Int(Self.elapsed(r) / 1_000_000))
        case .microseconds: line.appendDecimal(Int(Self.elapsed(r) / 1_000))
        case .decimalSeconds:
            let micros = Int((Double(Self.elapsed(r)) / 1e3).rounded())
            line.appendDecimal(micros / 1_000_000)
            line.append(UInt8(ascii: "."))
            let fraction = micros % 1_000_000
            var digits = 6, rest = fraction
            while rest >= 10 { digits -= 1; rest /= 10 }
            line.append(repeating: UInt8(ascii: "0"), count: digits - 1)
            line.appendDecimal(fraction)
        case .pid:
            line.append(UInt8(ascii: "<"))
            line.appendDecimal(Int(getpid()))
            line.append(UInt8(ascii: ">"))
        }
    }

    private func appendVersion(_ request: RequestInfo, to line: inout AccessLineBuilder) {
        line.append(contentsOf: "HTTP/".utf8)
        line.appendDecimal(request.version.major)
        line.append(UInt8(ascii: "."))
        line.appendDecimal(request.version.minor)
    }

    private static func elapsed(_ r: AccessLogRecord) -> Int64 { r.finished.nanoseconds - r.request.started.nanoseconds }

    /// The first value of the request's header `name` (lower case), or `-`.
    private static func appendHeader(_ name: UnsafeRawBufferPointer, of request: RequestInfo, to line: inout AccessLineBuilder) {
        var found = false
        request.head.headers.forEach { fieldName, value in
            if !found && equalsLowercased(fieldName, name) {
                found = true
                line.append(contentsOf: value)
            }
        }
        if !found { line.append(UInt8(ascii: "-")) }
    }

    private static func appendHeader(_ name: [UInt8], of request: RequestInfo, to line: inout AccessLineBuilder) {
        name.withUnsafeBytes { appendHeader($0, of: request, to: &line) }
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

    // The header names the default format reads, made once rather than for every line.
    private static let authorization = Array("authorization".utf8), referer = Array("referer".utf8), userAgent = Array("user-agent".utf8)

    /// The user of a Basic `Authorization` header, if the request has one.
    static func basicAuthUser(_ request: RequestInfo) -> String? {
        var header: String?
        request.head.headers.forEach { name, value in
            if header == nil && RequestHeaders.equalsLowercased(name, authorization) {
                header = String(decoding: value, as: UTF8.self)
            }
        }
        guard let header, header.lowercased().hasPrefix("basic "),
              let decoded = Base64.decode(String(header.dropFirst(6)).trimmingCharacters(in: " ")) else { return nil }
        return decoded.split(separator: ":", maxSplits: 1).first.map(String.init)
    }

    /// `[10/Oct/2000:13:55:36 -0700]`, local time: made once a second, and shared by all threads.
    private static func appendCLFTime(_ wall: timespec, to line: inout AccessLineBuilder) {
        clfCache.withLock { cached in
            if cached.second != wall.tv_sec {
                cached = (wall.tv_sec, Array(formatted(wall, "[%d/%b/%Y:%H:%M:%S %z]", utc: false).utf8))
            }
            line.append(contentsOf: cached.text)
        }
    }

    private static let clfCache = Mutex<(second: Int, text: [UInt8])>((-1, []))

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
