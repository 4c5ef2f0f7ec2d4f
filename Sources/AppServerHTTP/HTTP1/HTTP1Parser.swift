// The HTTP/1.1 request parser (RFC 9112), byte for byte: no string is made of what the client sent,
// so what reaches the app is exactly those bytes. Pure Swift over raw bytes, without SwiftNIO, so the
// fuzzer (fuzz/, `make fuzz`) compiles it alone.
#if canImport(Glibc)
import Glibc
#endif

/// Limits the parser holds a request to; 0 turns one off.
public struct HTTP1ParserLimits: Sendable, Equatable {
    /// The request line (method, target, version), as Gunicorn's `limit_request_line`.
    public var requestLine = 4094
    /// Header fields in a head (and in a trailer section).
    public var fieldCount = 100
    /// One field line, name and value.
    public var fieldSize = 8190
    /// One chunk's extensions (RFC 9112 7.1.1 asks for a limit).
    public var chunkExtensions = 4096
    /// A whole head, request line and fields; past it 431.
    public var headSize = 64 * 1024
    /// The names whose fields the head notes in `watchedFields` (the server's own readers of fields).
    public var watchedNames = WatchedFieldNames.all

    public init() {}
}

/// Why a request is refused, and with which status. Every refusal closes the connection.
public struct HTTP1ParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: Int
    public var reason: String

    init(_ status: Int, _ reason: String) {
        self.status = status
        self.reason = reason
    }

    static func bad(_ reason: String) -> HTTP1ParseError { HTTP1ParseError(400, reason) }

    public var description: String { "\(status) \(reason)" }
}

/// Where a field's name and value are in the head's bytes (the value without surrounding whitespace).
public struct HTTP1Field: Equatable, Sendable {
    public var nameStart: Int32
    public var nameEnd: Int32
    public var valueStart: Int32
    public var valueEnd: Int32

    @usableFromInline var name: Range<Int> { Int(nameStart)..<Int(nameEnd) }
    @usableFromInline var value: Range<Int> { Int(valueStart)..<Int(valueEnd) }
}

/// A parsed request head: offsets into its bytes, and what the server must know to frame and route it.
public struct HTTP1Head: Equatable, Sendable {
    public var method: Range<Int>
    public var target: Range<Int>
    /// 1.0 or 1.1; a later 1.x is served as 1.1 (RFC 9110 2.5).
    public var minorVersion: Int
    public var fields: [HTTP1Field]
    /// Bytes of the head, the final empty line included.
    public var length: Int
    public var contentLength: Int64?
    public var chunked = false
    /// The client allows another request on this connection after this one.
    public var keepAlive: Bool
    public var expectsContinue = false
    /// `Connection: upgrade` and an `Upgrade` field.
    public var upgrade = false
    /// Bit i: field i's name may be one of the parser's `watchedNames` (bit 63: field 63 or any after it).
    /// A field whose bit is clear is none of them.
    public var watchedFields = UInt64.max
    public var hasBody: Bool { chunked || (contentLength ?? 0) > 0 }
}

/// An incremental request parser: given the bytes received so far (from the start of what it has
/// not consumed yet), it says what they hold and how many bytes that took. A pure state machine.
public struct HTTP1Parser: Sendable {
    public enum Event: Equatable {
        /// The bytes hold no complete element yet.
        case needMore
        case head(HTTP1Head)
        /// Body bytes at this range of the given bytes.
        case body(Range<Int>)
        /// The request is complete (its trailers, if any, were checked and dropped).
        case end
        case error(HTTP1ParseError)
    }

    private enum State: Equatable {
        case head
        case fixedBody(remaining: Int64)
        case chunkLine
        case chunkData(remaining: Int64)
        case chunkDataEnd
        case trailers(count: Int)
        case failed
    }

    public let limits: HTTP1ParserLimits
    private var state = State.head
    /// How far a partial head was already searched for its end, so a slow client costs no rescans.
    private var scanned = 0

    public init(limits: HTTP1ParserLimits = HTTP1ParserLimits()) {
        self.limits = limits
    }

    /// Between requests: the next bytes start a request head.
    public var isAtRequestStart: Bool { state == .head }

    /// Reads the next element of `bytes`; `consumed` bytes of them are done with.
    public mutating func next(_ bytes: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        switch state {
        case .failed:
            return (.needMore, bytes.count)
        case .head:
            return parseHead(bytes)
        case .fixedBody(let remaining):
            guard !bytes.isEmpty else { return (.needMore, 0) }
            let n = Int(min(Int64(bytes.count), remaining))
            state = remaining - Int64(n) == 0 ? .trailers(count: -1) : .fixedBody(remaining: remaining - Int64(n))
            return (.body(0..<n), n)
        case .chunkLine:
            return parseChunkLine(bytes)
        case .chunkData(let remaining):
            guard !bytes.isEmpty else { return (.needMore, 0) }
            let n = Int(min(Int64(bytes.count), remaining))
            state = remaining - Int64(n) == 0 ? .chunkDataEnd : .chunkData(remaining: remaining - Int64(n))
            return (.body(0..<n), n)
        case .chunkDataEnd:
            guard bytes.count >= 2 else {
                if bytes.count == 1 && bytes[0] != cr { return fail(.bad("a chunk's data is not followed by CRLF")) }
                return (.needMore, 0)
            }
            guard bytes[0] == cr, bytes[1] == lf else { return fail(.bad("a chunk's data is not followed by CRLF")) }
            state = .chunkLine
            return Self.shift(next(UnsafeRawBufferPointer(rebasing: bytes[2...])), by: 2)
        case .trailers(let count):
            if count < 0 {
                // The end of a Content-Length body (or of a bodyless request): nothing to read.
                state = .head
                scanned = 0
                return (.end, 0)
            }
            return parseTrailerLine(bytes, count: count)
        }
    }

    private mutating func fail(_ error: HTTP1ParseError) -> (event: Event, consumed: Int) {
        state = .failed
        return (.error(error), 0)
    }

    // MARK: the head

    private mutating func parseHead(_ bytes: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        // Empty lines before a request line are skipped (RFC 9112 2.2), within the head's limit.
        var start = 0
        while start + 1 < bytes.count && bytes[start] == cr && bytes[start + 1] == lf && start < 64 { start += 2 }
        // A head that came whole (nearly all) is read in one pass, each line's end found by reading the
        // line. Anything else, an incomplete head or one with an error, goes the way below, which finds
        // the head's end first and reads its lines after: that way's answer, error or not, is the
        // parser's, and a head read in one pass is exactly what it would have read (HTTP1ParserTests
        // compare the two). Tried on a head's first bytes only: a slow client's later ones are not reread.
        if scanned == 0 && bytes.count <= Int(Int32.max), case .success(let head) = readHead(bytes, from: start, end: nil) {
            state = head.chunked ? .chunkLine : head.hasBody ? .fixedBody(remaining: head.contentLength!) : .trailers(count: -1)
            return (.head(head), head.length)
        }
        // Find the empty line that ends the head: CRLF CRLF, from one LF to the next (memchr: a
        // browser's head of 1 KiB is ~25 lines, and a byte-stepping search cost ~4 instructions a byte).
        // A bare LF anywhere is refused below.
        var index = max(start, scanned)
        var end = -1
        while let lineEnd = firstIndex(of: lf, in: bytes, from: index) {
            if lineEnd - 3 >= start && bytes[lineEnd - 1] == cr && bytes[lineEnd - 2] == lf && bytes[lineEnd - 3] == cr {
                end = lineEnd + 1
                break
            }
            index = lineEnd + 1
        }
        if end < 0 {
            // Every LF so far was looked at (each with the three bytes before it): the next bytes go on from here.
            scanned = max(start, bytes.count)
            // Bytes that cannot start a request line (a TLS handshake, a uwsgi packet, binary noise)
            // are refused at once rather than waited on.
            var i = start
            while i < bytes.count && isTokenByte(bytes[i]) { i += 1 }
            if i < bytes.count && (bytes[i] != space || i == start) && !(i == start && bytes[i] == cr) {
                return fail(.bad("the request does not start with a method"))
            }
            // Refuse early what can never become a valid head: an over-long request line, a huge head.
            let lineEnd = firstIndex(of: lf, in: bytes, from: start)
            if limits.requestLine > 0 && (lineEnd ?? bytes.count) - start > limits.requestLine + 2 {
                return fail(HTTP1ParseError(414, "the request line is longer than \(limits.requestLine) bytes"))
            }
            if let lineEnd, lineEnd == start || bytes[lineEnd - 1] != cr {
                return fail(.bad("a line ends with a bare LF"))
            }
            if limits.headSize > 0 && bytes.count - start > limits.headSize {
                return fail(HTTP1ParseError(431, "the request head is larger than \(limits.headSize) bytes"))
            }
            return (.needMore, 0)
        }
        scanned = 0
        switch readHead(bytes, from: start, end: end) {
        case .success(let head):
            state = head.chunked ? .chunkLine : head.hasBody ? .fixedBody(remaining: head.contentLength!) : .trailers(count: -1)
            return (.head(head), end)
        case .failure(let error):
            return fail(error)
        }
    }

    /// Reads a head from `start` to `knownEnd`, the end of its empty line; or, with `knownEnd` nil, in one
    /// pass up to its empty line, which must be in `bytes` (a failure otherwise, and for any line that
    /// is not a well-formed field line: the caller then reads the head the other way).
    func readHead(_ bytes: UnsafeRawBufferPointer, from start: Int, end knownEnd: Int?) -> Result<HTTP1Head, HTTP1ParseError> {
        let onePass = knownEnd == nil
        var end = knownEnd ?? bytes.count
        // The request line: method SP request-target SP HTTP-version CRLF.
        guard let lineEnd = firstIndex(of: lf, in: bytes, from: start), lineEnd > start, lineEnd < end, bytes[lineEnd - 1] == cr else {
            return .failure(.bad("a line ends with a bare LF"))
        }
        if limits.requestLine > 0 && lineEnd - 1 - start > limits.requestLine {
            return .failure(HTTP1ParseError(414, "the request line is longer than \(limits.requestLine) bytes"))
        }
        var i = start
        while i < lineEnd - 1 && isTokenByte(bytes[i]) { i += 1 }
        let method = start..<i
        guard !method.isEmpty, bytes[i] == space else { return .failure(.bad("the method is not a token followed by one space")) }
        i += 1
        let targetStart = i
        while i < lineEnd - 1 && bytes[i] > space && bytes[i] != 0x7F { i += 1 }
        let target = targetStart..<i
        guard !target.isEmpty, bytes[i] == space else { return .failure(.bad("the request target is empty, holds a control byte, or is not followed by one space")) }
        i += 1
        // HTTP-version = "HTTP/" DIGIT "." DIGIT
        guard lineEnd - 1 - i == 8, bytes[i] == 0x48, bytes[i + 1] == 0x54, bytes[i + 2] == 0x54, bytes[i + 3] == 0x50, bytes[i + 4] == 0x2F,
              isDigit(bytes[i + 5]), bytes[i + 6] == 0x2E, isDigit(bytes[i + 7]) else {
            return .failure(.bad("the request line does not end with HTTP/x.y"))
        }
        let major = Int(bytes[i + 5] - 0x30), minor = Int(bytes[i + 7] - 0x30)
        guard major == 1 else { return .failure(HTTP1ParseError(505, "HTTP/\(major).\(minor) is not served (HTTP/1.x is)")) }
        let isConnect = equals(bytes, method, "CONNECT"), isOptions = equals(bytes, method, "OPTIONS")
        if isConnect {
            // authority-form, for CONNECT only (RFC 9112 3.2.3).
            guard isAuthority(bytes, target) else { return .failure(.bad("CONNECT needs a host:port target")) }
        } else {
            switch bytes[target.lowerBound] {
            case 0x2F:   // origin-form
                break
            case 0x2A:   // asterisk-form, for OPTIONS only (RFC 9112 3.2.4)
                guard target.count == 1, isOptions else { return .failure(.bad("'*' is a request target for OPTIONS only")) }
            default:     // absolute-form
                guard isAbsoluteURI(bytes, target) else {
                    return .failure(.bad("the request target is neither a path, an absolute URI, nor '*'"))
                }
            }
        }

        var head = HTTP1Head(method: method, target: target, minorVersion: min(minor, 1), fields: [], length: end,
                             keepAlive: minor >= 1)
        // Room for a browser's head behind a proxy (two dozen fields): grown from 8, such a head's array
        // was made three times (~800 instructions); a hello request's larger first one costs nothing.
        head.fields.reserveCapacity(32)
        head.watchedFields = 0
        var hosts = 0
        var closeToken = false, keepAliveToken = false, upgradeToken = false, hasUpgradeField = false
        var transferCodings: [Range<Int>] = []
        var hasTransferEncoding = false   // a Transfer-Encoding field, even one without codings
        var line = lineEnd + 1
        while true {
            let field: HTTP1Field
            if onePass {
                guard line + 1 < bytes.count else { return .failure(.bad("an incomplete head")) }
                if bytes[line] == cr && bytes[line + 1] == lf {
                    end = line + 2
                    break
                }
                guard let (read, next) = readFieldInOnePass(bytes, from: line) else { return .failure(.bad("not read in one pass")) }
                field = read
                line = next
            } else {
                guard line < end - 2 else { break }
                guard let next = firstIndex(of: lf, in: bytes, from: line), next < end, bytes[next - 1] == cr else {
                    return .failure(.bad("a line ends with a bare LF"))
                }
                switch readField(bytes, line..<(next - 1)) {
                case .success(let read): field = read
                case .failure(let error): return .failure(error)
                }
                line = next + 1
            }
            head.fields.append(field)
            if limits.fieldCount > 0 && head.fields.count > limits.fieldCount {
                return .failure(HTTP1ParseError(431, "more than \(limits.fieldCount) header fields"))
            }
            let name = field.name, value = field.value
            if limits.watchedNames.mayContain(length: name.count, first: bytes[name.lowerBound], last: bytes[name.upperBound - 1]) {
                head.watchedFields |= 1 << UInt64(min(head.fields.count - 1, 63))
            }
            switch name.count {
            case 4 where equalsLowercased(bytes, name, "host"):
                hosts += 1
                guard hosts == 1 else { return .failure(.bad("more than one Host field")) }
                guard isHost(bytes, value) else { return .failure(.bad("the Host field is not a host[:port]")) }
            case 6 where equalsLowercased(bytes, name, "expect"):
                guard equalsLowercased(bytes, value, "100-continue") else {
                    return .failure(HTTP1ParseError(417, "an expectation other than 100-continue"))
                }
                head.expectsContinue = minor >= 1
            case 7 where equalsLowercased(bytes, name, "upgrade"):
                hasUpgradeField = true
            case 10 where equalsLowercased(bytes, name, "connection"):
                forEachListElement(bytes, value) { token in
                    if equalsLowercased(bytes, token, "close") { closeToken = true }
                    else if equalsLowercased(bytes, token, "keep-alive") { keepAliveToken = true }
                    else if equalsLowercased(bytes, token, "upgrade") { upgradeToken = true }
                }
            case 14 where equalsLowercased(bytes, name, "content-length"):
                guard head.contentLength == nil else { return .failure(.bad("more than one Content-Length field")) }
                guard !value.isEmpty, value.count <= 18, value.allSatisfy({ isDigit(bytes[$0]) }) else {
                    return .failure(.bad("Content-Length is not one decimal number"))
                }
                head.contentLength = value.reduce(Int64(0)) { $0 * 10 + Int64(bytes[$1] - 0x30) }
            case 17 where equalsLowercased(bytes, name, "transfer-encoding"):
                hasTransferEncoding = true
                forEachListElement(bytes, value) { transferCodings.append($0) }
            default:
                break
            }
        }
        head.length = end
        if hasTransferEncoding {
            guard minor >= 1 else { return .failure(.bad("Transfer-Encoding in an HTTP/1.0 request")) }
            guard head.contentLength == nil else { return .failure(.bad("both Content-Length and Transfer-Encoding")) }
            guard let last = transferCodings.last, equalsLowercased(bytes, last, "chunked") else {
                return .failure(.bad("chunked is not the final transfer coding"))
            }
            if transferCodings.dropLast().contains(where: { equalsLowercased(bytes, $0, "chunked") }) {
                return .failure(.bad("chunked applied more than once"))
            }
            guard transferCodings.count == 1 else {
                return .failure(HTTP1ParseError(501, "a transfer coding other than chunked"))
            }
            head.chunked = true
        }
        if minor >= 1 && hosts == 0 { return .failure(.bad("no Host field in an HTTP/1.1 request")) }
        if closeToken { head.keepAlive = false } else if keepAliveToken { head.keepAlive = true }
        head.upgrade = upgradeToken && hasUpgradeField
        return .success(consume head)
    }

    /// One field line (without its CRLF): a token, a colon, the value between optional whitespace.
    private func readField(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> Result<HTTP1Field, HTTP1ParseError> {
        guard !line.isEmpty else { return .failure(.bad("an empty field line")) }
        if bytes[line.lowerBound] == space || bytes[line.lowerBound] == tab {
            return .failure(.bad("a folded field line (obs-fold)"))
        }
        if limits.fieldSize > 0 && line.count > limits.fieldSize {
            return .failure(HTTP1ParseError(431, "a header field longer than \(limits.fieldSize) bytes"))
        }
        var i = tokenEnd(bytes, from: line.lowerBound, bound: line.upperBound)
        let base = bytes.baseAddress!
        guard i > line.lowerBound, i < line.upperBound, bytes[i] == colon else {
            return .failure(.bad(i < line.upperBound && (bytes[i] == space || bytes[i] == tab)
                                 ? "whitespace between a field name and its colon" : "a field name that is not a token"))
        }
        let nameEnd = i
        i += 1
        while i < line.upperBound && (bytes[i] == space || bytes[i] == tab) { i += 1 }
        let valueStart = i
        // Eight bytes at a time while no byte can be a control byte (most values), then one at a time.
        while i + 8 <= line.upperBound && !mayHoldControlByte(base.loadUnaligned(fromByteOffset: i, as: UInt64.self)) {
            i += 8
        }
        // The last bytes (fewer than eight) as the line's last eight, overlapping what was checked.
        if i < line.upperBound && line.upperBound - i < 8 && line.upperBound - 8 >= valueStart
            && !mayHoldControlByte(base.loadUnaligned(fromByteOffset: line.upperBound - 8, as: UInt64.self)) {
            i = line.upperBound
        }
        while i < line.upperBound {
            let c = bytes[i]
            guard c >= space || c == tab, c != 0x7F else { return .failure(.bad("a control byte in a field value")) }
            i += 1
        }
        var valueEnd = line.upperBound
        while valueEnd > valueStart && (bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab) { valueEnd -= 1 }
        return .success(HTTP1Field(nameStart: Int32(line.lowerBound), nameEnd: Int32(nameEnd), valueStart: Int32(valueStart), valueEnd: Int32(valueEnd)))
    }

    /// Where the token that starts at `start` ends (at `bound` at most): a field name's end, where its
    /// colon should be. Eight bytes at a time while they are letters, digits and '-' (most names), then
    /// one at a time. The word with the colon is looked for first: most names end in their first or
    /// second word, and the whole-word check on that word (~27 instructions) could only fail; the bytes
    /// before the colon are checked at once (the rest set to 'a').
    @inline(__always) private func tokenEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, bound: Int) -> Int {
        let base = bytes.baseAddress!
        var i = start
        while i + 8 <= bound {
            let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            if let colonAt = firstByte(colon, in: word) {
                if isWordOfNameBytes(bytesBefore(colonAt, of: word, filledWith: 0x61)) { i += colonAt }
                break
            }
            guard isWordOfNameBytes(word) else { break }
            i += 8
        }
        while i < bound && isTokenByte(bytes[i]) { i += 1 }
        return i
    }

    /// One field line read from `start` to its CRLF, the line's end found on the way (the other way
    /// finds it first with memchr, then reads the line): the name as `readField` reads it, then the value
    /// a word at a time up to its first byte below 0x20 or 0x7F, which on a well-formed line is the CR
    /// of the CRLF that ends it (a tab goes on). Nil for anything `readField` would refuse, and for a
    /// line that does not end in `bytes`: the caller then reads the head the other way, whose answer
    /// is the parser's. Returns the field and where the next line starts. (`bytes` are at most
    /// Int32.max long: the caller checks.)
    private func readFieldInOnePass(_ bytes: UnsafeRawBufferPointer, from start: Int) -> (field: HTTP1Field, next: Int)? {
        let base = bytes.baseAddress!, count = bytes.count
        var i = tokenEnd(bytes, from: start, bound: count)
        guard i > start, i < count, bytes[i] == colon else { return nil }
        let nameEnd = i
        i += 1
        while i < count && (bytes[i] == space || bytes[i] == tab) { i += 1 }
        let valueStart = i
        var lineEnd = 0
        scan: while true {
            while i + 8 <= count {
                let marks = controlByteMarks(base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                if marks == 0 { i += 8; continue }
                i += marks.trailingZeroBitCount >> 3
                break
            }
            // At the control byte found, or in the last bytes (fewer than eight) one at a time.
            while i < count {
                let c = bytes[i]
                if c >= space && c != 0x7F {
                    i += 1
                } else if c == tab {
                    i += 1
                    continue scan
                } else if c == cr && i + 1 < count && bytes[i + 1] == lf {
                    lineEnd = i
                    break scan
                } else {
                    return nil
                }
            }
            return nil
        }
        if limits.fieldSize > 0 && lineEnd - start > limits.fieldSize { return nil }
        var valueEnd = lineEnd
        while valueEnd > valueStart && (bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab) { valueEnd -= 1 }
        return (HTTP1Field(nameStart: Int32(truncatingIfNeeded: start), nameEnd: Int32(truncatingIfNeeded: nameEnd),
                           valueStart: Int32(truncatingIfNeeded: valueStart), valueEnd: Int32(truncatingIfNeeded: valueEnd)), lineEnd + 2)
    }

    // MARK: chunked bodies

    private mutating func parseChunkLine(_ bytes: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        guard let lineEnd = firstIndex(of: lf, in: bytes, from: 0) else {
            if bytes.count > 16 + 2 + limits.chunkExtensions { return fail(.bad("a chunk line longer than its limit")) }
            if let crIndex = bytes.firstIndex(of: cr), crIndex + 1 < bytes.count { return fail(.bad("a bare CR in a chunk line")) }
            return (.needMore, 0)
        }
        guard lineEnd > 0, bytes[lineEnd - 1] == cr else { return fail(.bad("a chunk line ends with a bare LF")) }
        var size: Int64 = 0
        var i = 0
        while i < lineEnd - 1, let digit = hexValue(bytes[i]) {
            guard size <= (Int64.max - 15) / 16 else { return fail(.bad("a chunk size that overflows")) }
            size = size * 16 + Int64(digit)
            i += 1
        }
        guard i > 0 else { return fail(.bad("a chunk line without a hexadecimal size")) }
        // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): checked for shape, then ignored.
        let extensions = i..<(lineEnd - 1)
        if !extensions.isEmpty {
            if limits.chunkExtensions > 0 && extensions.count > limits.chunkExtensions {
                return fail(.bad("chunk extensions longer than \(limits.chunkExtensions) bytes"))
            }
            var j = i
            while j < extensions.upperBound && (bytes[j] == space || bytes[j] == tab) { j += 1 }
            guard j < extensions.upperBound, bytes[j] == semicolon else { return fail(.bad("text after a chunk size that is not an extension")) }
            if extensions.contains(where: { (bytes[$0] < space && bytes[$0] != tab) || bytes[$0] == 0x7F }) {
                return fail(.bad("a control byte in a chunk extension"))
            }
        }
        state = size == 0 ? .trailers(count: 0) : .chunkData(remaining: size)
        return Self.shift(next(UnsafeRawBufferPointer(rebasing: bytes[(lineEnd + 1)...])), by: lineEnd + 1)
    }

    /// A trailer field line, or the empty line that ends the request. Trailers are checked and dropped.
    private mutating func parseTrailerLine(_ bytes: UnsafeRawBufferPointer, count: Int) -> (event: Event, consumed: Int) {
        guard let lineEnd = firstIndex(of: lf, in: bytes, from: 0) else {
            if limits.fieldSize > 0 && bytes.count > limits.fieldSize + 2 {
                return fail(HTTP1ParseError(431, "a trailer field longer than \(limits.fieldSize) bytes"))
            }
            return (.needMore, 0)
        }
        guard lineEnd > 0, bytes[lineEnd - 1] == cr else { return fail(.bad("a trailer line ends with a bare LF")) }
        if lineEnd == 1 {
            state = .head
            scanned = 0
            return (.end, 2)
        }
        switch readField(bytes, 0..<(lineEnd - 1)) {
        case .failure(let error): return fail(error)
        case .success(let field):
            if limits.fieldCount > 0 && count + 1 > limits.fieldCount {
                return fail(HTTP1ParseError(431, "more than \(limits.fieldCount) trailer fields"))
            }
            let name = field.name
            for forbidden in Self.forbiddenTrailers where equalsLowercased(bytes, name, forbidden) {
                return fail(.bad("a trailer field that may not be a trailer (\(forbidden))"))
            }
            state = .trailers(count: count + 1)
            return Self.shift(next(UnsafeRawBufferPointer(rebasing: bytes[(lineEnd + 1)...])), by: lineEnd + 1)
        }
    }

    /// Fields that frame, route, authenticate or steer a request may not come as trailers (RFC 9110 6.5.1).
    static let forbiddenTrailers: [StaticString] = [
        "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer", "upgrade", "expect",
        "authorization", "proxy-authorization", "cookie", "content-type", "content-encoding", "content-range", "range",
        "cache-control", "max-forwards",
    ]
}

// MARK: byte helpers

private let cr: UInt8 = 13, lf: UInt8 = 10, space: UInt8 = 32, tab: UInt8 = 9, colon: UInt8 = 58, semicolon: UInt8 = 59

@inline(__always) func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

@inline(__always) private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: return c - 0x30
    case 0x41...0x46: return c - 0x41 + 10
    case 0x61...0x66: return c - 0x61 + 10
    default: return nil
    }
}

/// tchar (RFC 9110 5.6.2): DIGIT, ALPHA and !#$%&'*+-.^_`|~, as two 64-bit sets (constants: a table
/// in a global would be reached through a lazy initializer's check on every byte).
@inline(__always) func isTokenByte(_ c: UInt8) -> Bool {
    let below64: UInt64 = 0x03FF_6CFA_0000_0000, from64: UInt64 = 0x57FF_FFFF_C7FF_FFFE
    return c < 64 ? (below64 >> c) & 1 != 0 : c < 128 ? (from64 >> (c - 64)) & 1 != 0 : false
}

/// The first `byte` at or after `from`: memchr, which reads a vector at a time.
@inline(__always) private func firstIndex(of byte: UInt8, in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
    guard from < bytes.count, let base = bytes.baseAddress,
          let found = memchr(base + from, Int32(byte), bytes.count - from) else { return nil }
    return base.distance(to: UnsafeRawPointer(found))
}

func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: StaticString) -> Bool {
    guard range.count == text.utf8CodeUnitCount else { return false }
    let p = text.utf8Start
    for (k, i) in range.enumerated() where bytes[i] != p[k] { return false }
    return true
}

/// ASCII case-insensitive equality of `bytes` with `lower`, a lower-case name (header names, tokens).
/// The one comparison of the server: the forms below and `RequestHeaders.equalsLowercased` call it.
@inline(__always) func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lower: UnsafeRawBufferPointer) -> Bool {
    guard bytes.count == lower.count else { return false }
    for i in 0..<bytes.count {
        let c = bytes[i], l = lower[i]
        // Equal, or a letter in the other case (only letters fold: `|` 0x20 alone would also match '@' to '`').
        if c != l && (c | 0x20 != l || l &- 0x61 >= 26) { return false }
    }
    return true
}

@inline(__always) func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
    equalsLowercased(bytes, UnsafeRawBufferPointer(start: lower.utf8Start, count: lower.utf8CodeUnitCount))
}

@inline(__always) func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lower: StaticString) -> Bool {
    equalsLowercased(UnsafeRawBufferPointer(rebasing: bytes[range]), lower)
}

/// The elements of a comma-separated list, without surrounding whitespace; empty elements skipped.
func forEachListElement(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ body: (Range<Int>) -> Void) {
    var start = range.lowerBound
    while start < range.upperBound {
        var end = start
        while end < range.upperBound && bytes[end] != 0x2C { end += 1 }
        var a = start, b = end
        while a < b && (bytes[a] == space || bytes[a] == tab) { a += 1 }
        while b > a && (bytes[b - 1] == space || bytes[b - 1] == tab) { b -= 1 }
        if a < b { body(a..<b) }
        start = end + 1
    }
}

/// uri-host [ ":" port ]: a reg-name (unreserved, pct-encoded, sub-delims) or an IP literal in brackets.
/// Empty is allowed (RFC 9112 3.2: a target without authority).
private func isHost(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
    var i = range.lowerBound
    if i < range.upperBound && bytes[i] == 0x5B {
        while i < range.upperBound && bytes[i] != 0x5D {
            let c = bytes[i]
            guard c == 0x5B || c == 0x3A || c == 0x2E || hexValue(c) != nil || c == 0x76 || c == 0x56 else { return false }
            i += 1
        }
        guard i < range.upperBound else { return false }
        i += 1
    } else {
        while i < range.upperBound && bytes[i] != 0x3A {
            guard isRegNameByte(bytes[i]) else { return false }
            i += 1
        }
    }
    if i < range.upperBound {
        guard bytes[i] == 0x3A else { return false }
        i += 1
        while i < range.upperBound {
            guard isDigit(bytes[i]) else { return false }
            i += 1
        }
    }
    return true
}

private func isRegNameByte(_ c: UInt8) -> Bool {
    switch c {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
         UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
         UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="): return true
    default: return false
    }
}

/// scheme "://" ... (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
private func isAbsoluteURI(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
    var i = range.lowerBound
    guard i < range.upperBound, (bytes[i] | 0x20) >= 0x61 && (bytes[i] | 0x20) <= 0x7A else { return false }
    while i < range.upperBound && bytes[i] != 0x3A {
        let c = bytes[i]
        guard (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A || isDigit(c) || c == 0x2B || c == 0x2D || c == 0x2E else { return false }
        i += 1
    }
    return i + 2 < range.upperBound && bytes[i + 1] == 0x2F && bytes[i + 2] == 0x2F
}

/// authority-form: host ":" port.
private func isAuthority(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
    guard let colon = (range.lowerBound..<range.upperBound).last(where: { bytes[$0] == 0x3A }), colon + 1 < range.upperBound,
          colon > range.lowerBound else { return false }
    return isHost(bytes, range)
}

extension HTTP1Parser {
    /// Shifts the `consumed` count and a body range by bytes already taken in front of them.
    fileprivate static func shift(_ result: (event: Event, consumed: Int), by offset: Int) -> (event: Event, consumed: Int) {
        if case .body(let range) = result.event {
            return (.body((range.lowerBound + offset)..<(range.upperBound + offset)), result.consumed + offset)
        }
        return (result.event, result.consumed + offset)
    }
}
