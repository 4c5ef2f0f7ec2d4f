import NIOCore

/// How a response body is delimited on the wire.
public enum ResponseFraming: Equatable, Sendable {
    /// HEAD, 1xx, 204 and 304: whatever the app yields is not sent.
    case noBody
    case contentLength(Int64)
    case chunked
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    case closeDelimited
}

public enum ResponseHeadError: Error, Equatable {
    case invalidStatus(String)
    case invalidHeader(String)
}

/// Turns one response (a status line, the app's headers, body chunks) into bytes for the socket:
/// adds `Server`, `Date` and `Connection`, picks the framing, chunk-encodes, cuts a body that
/// overruns its Content-Length. A plain state machine without I/O, used by one app thread at a time.
public struct ResponseWriter {
    public let request: RequestInfo
    public private(set) var statusCode = 0
    public private(set) var framing = ResponseFraming.noBody
    /// Bytes a body chunk's framing may add to the buffer it is framed into: a chunk size line, its
    /// CRLF and the last chunk when chunked, nothing otherwise (a capacity hint for that buffer).
    public var framingRoom: Int { framing == .chunked ? 16 : 0 }
    public private(set) var headSent = false
    /// Body bytes the app produced and that went on the wire (after framing rules).
    public private(set) var bodyBytesSent: Int64 = 0
    /// The connection must close after this response (request asked for it, framing needs it,
    /// the server is draining, or the body fell short of its Content-Length).
    public private(set) var closeConnection: Bool

    private var head: ByteBuffer
    private var declaredLength: Int64?
    private var hasServer = false
    private var hasDate = false
    private var appConnectionClose = false

    public init(request: RequestInfo, allocator: ByteBufferAllocator, drain: Bool) {
        // Capacity 0 does not allocate: `begin` does, once the head is known to be needed.
        self.init(request: request, recycling: allocator.buffer(capacity: 0), drain: drain)
    }

    /// `buffer` becomes the head's (cleared by `begin`): one of an earlier response's
    /// (HTTPExchange.responseBuffer), whose storage `begin` reuses when no one else holds it.
    public init(request: RequestInfo, recycling buffer: ByteBuffer, drain: Bool) {
        self.request = request
        self.closeConnection = !request.keepAlive || drain
        self.head = buffer
    }

    /// Starts the head with the app's status line text, e.g. `200 OK`.
    public mutating func begin(status: UnsafeRawBufferPointer) throws(ResponseHeadError) {
        head.clear(minimumCapacity: 256)
        declaredLength = nil
        hasServer = false; hasDate = false; appConnectionClose = false
        guard status.count >= 4, let code = Self.parseStatusCode(status), status[3] == UInt8(ascii: " ") else {
            throw .invalidStatus(String(decoding: status, as: UTF8.self))
        }
        guard !status.contains(where: { $0 == 13 || $0 == 10 }) else { throw .invalidStatus(String(decoding: status, as: UTF8.self)) }
        statusCode = code
        writeLine(request.version.minor == 0 && request.version.major == 1 ? "HTTP/1.0 " : "HTTP/1.1 ", status)
    }

    /// Writes `first`, `separator`, `second` and CRLF as one line, with one capacity check (a ByteBuffer
    /// write of each piece checked capacity and uniqueness for each: a third of the head's cost).
    @inline(__always)
    private mutating func writeLine(_ first: UnsafeRawBufferPointer, _ separator: StaticString, _ second: UnsafeRawBufferPointer) {
        let separatorLength = separator.utf8CodeUnitCount
        let total = first.count + separatorLength + second.count + 2
        head.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            let base = out.baseAddress!
            if let bytes = first.baseAddress { base.copyMemory(from: bytes, byteCount: first.count) }
            if separatorLength > 0 { (base + first.count).copyMemory(from: separator.utf8Start, byteCount: separatorLength) }
            if let bytes = second.baseAddress { (base + first.count + separatorLength).copyMemory(from: bytes, byteCount: second.count) }
            base.storeBytes(of: UInt8(ascii: "\r"), toByteOffset: total - 2, as: UInt8.self)
            base.storeBytes(of: UInt8(ascii: "\n"), toByteOffset: total - 1, as: UInt8.self)
            return total
        }
    }

    @inline(__always)
    private mutating func writeLine(_ prefix: StaticString, _ text: UnsafeRawBufferPointer) {
        writeLine(UnsafeRawBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount), "", text)
    }

    static func parseStatusCode(_ status: UnsafeRawBufferPointer) -> Int? {
        var code = 0
        for i in 0..<3 {
            let c = status[i]
            guard c >= 48 && c <= 57 else { return nil }
            code = code * 10 + Int(c - 48)
        }
        return code >= 100 ? code : nil
    }

    /// Adds one of the app's headers. Hop-by-hop headers that the server owns are checked, not copied blindly.
    public mutating func addHeader(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws(ResponseHeadError) {
        guard isToken(name), !containsLineBreakOrNUL(value) else {
            throw .invalidHeader(String(decoding: name, as: UTF8.self))
        }
        switch name.count {
        case 4 where equalsLowercased(name, "date"): hasDate = true
        case 6 where equalsLowercased(name, "server"): hasServer = true
        case 10 where tokenEqualsLowercased(name, "connection"):
            // The server decides about keep-alive; the app may only ask to close.
            if Self.containsToken(value, "close") { appConnectionClose = true }
            return
        case 10 where tokenEqualsLowercased(name, "keep-alive"):
            return
        case 14 where tokenEqualsLowercased(name, "content-length"):
            guard let length = Self.parseLength(value) else { throw .invalidHeader("Content-Length") }
            if let declared = declaredLength, declared != length { throw .invalidHeader("Content-Length") }
            if declaredLength != nil { return }
            declaredLength = length
        case 17 where tokenEqualsLowercased(name, "transfer-encoding"):
            // Only chunked is ever used on the way out, and the server applies it itself.
            return
        default: break
        }
        writeLine(name, ": ", value)
    }

    /// Ends the head and picks the framing. `knownLength` is the whole body's size when the server
    /// knows it already (a one-element body, a file), used when the app gave no Content-Length.
    /// The head's buffer is handed over, not shared: the body is then appended to it without the
    /// copy a shared ByteBuffer makes on its first write.
    public mutating func finishHead(knownLength: Int64?) -> ByteBuffer {
        defer { head = ByteBuffer() }
        let bodyless = request.isHead || statusCode < 200 || statusCode == 204 || statusCode == 304
        if appConnectionClose { closeConnection = true }
        if bodyless {
            framing = .noBody
            if let length = declaredLength ?? (request.isHead ? knownLength : nil), statusCode != 204, statusCode >= 200 {
                if declaredLength == nil { writeContentLength(length) }
            }
        } else if let length = declaredLength {
            framing = .contentLength(length)
        } else if let length = knownLength {
            framing = .contentLength(length)
            writeContentLength(length)
        } else if request.version.major == 1 && request.version.minor >= 1 && !request.viaUWSGI {
            // (nginx's uwsgi module has no chunked decoder: a uwsgi response ends with its connection.)
            framing = .chunked
            head.writeStaticString("Transfer-Encoding: chunked\r\n")
        } else {
            framing = .closeDelimited
            closeConnection = true
        }
        let ending: StaticString
        if request.viaUWSGI {
            // One request a connection, always: nothing to negotiate with the front end.
            closeConnection = true
            ending = "\r\n"
        } else if closeConnection {
            ending = "Connection: close\r\n\r\n"
        } else if request.version.minor == 0 {
            ending = "Connection: keep-alive\r\n\r\n"
        } else {
            ending = "\r\n"
        }
        writeTail(ending: ending)
        headSent = true
        return head
    }

    /// The head's last lines in one write (one capacity check): `Server` and `Date` unless the app
    /// sent them, then `ending`, the Connection line if any and the blank line.
    private mutating func writeTail(ending: StaticString) {
        let server: StaticString = "Server: appserver\r\n"
        let serverLength = hasServer ? 0 : server.utf8CodeUnitCount
        let date = hasDate ? nil : HTTPDate.current()
        let dateLength = date.map { 6 + $0.count + 2 } ?? 0   // "Date: ", the value, CRLF
        let endingLength = ending.utf8CodeUnitCount
        let total = serverLength + dateLength + endingLength
        head.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            var at = out.baseAddress!
            if serverLength > 0 {
                at.copyMemory(from: server.utf8Start, byteCount: serverLength)
                at += serverLength
            }
            if let date {
                at.copyMemory(from: ("Date: " as StaticString).utf8Start, byteCount: 6)
                date.withUnsafeBytes { if let bytes = $0.baseAddress { (at + 6).copyMemory(from: bytes, byteCount: $0.count) } }
                at.storeBytes(of: UInt8(ascii: "\r"), toByteOffset: dateLength - 2, as: UInt8.self)
                at.storeBytes(of: UInt8(ascii: "\n"), toByteOffset: dateLength - 1, as: UInt8.self)
                at += dateLength
            }
            at.copyMemory(from: ending.utf8Start, byteCount: endingLength)
            return total
        }
    }

    private mutating func writeContentLength(_ length: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: any Int64 in decimal
        withUnsafeMutableBytes(of: &digits) { raw in
            writeLine("Content-Length: ", UnsafeRawBufferPointer(rebasing: raw[..<writeDecimal(Int(length), into: raw)]))
        }
    }

    /// The connection closes after this response whatever the request asked (a server error).
    public mutating func requireClose() { closeConnection = true }

    /// Frames one body chunk into `out`. Returns the number of body bytes accepted.
    @discardableResult
    public mutating func appendBody(_ bytes: UnsafeRawBufferPointer, to out: inout ByteBuffer) -> Int {
        let (count, crlfAfter) = frameBody(count: bytes.count, into: &out)
        guard count > 0 else { return 0 }
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
        if crlfAfter { out.writeStaticString("\r\n") }
        return count
    }

    /// Frames one body chunk that goes out as a buffer of its own (`body`, not copied): what comes
    /// before it is written into `out`, which then joins `pieces` (unless empty: every piece is a
    /// write through the channel) with the accepted part of `body`; `out` is left holding what
    /// follows it (a chunk's CRLF), for the next bytes of the response.
    public mutating func appendBody(uncopied body: ByteBuffer, after out: inout ByteBuffer, into pieces: inout [ByteBuffer]) {
        let (count, crlfAfter) = frameBody(count: body.readableBytes, into: &out)
        guard count > 0 else { return }
        if out.readableBytes > 0 {
            pieces.append(out)
            out = ByteBufferAllocator().buffer(capacity: crlfAfter ? 64 : 0)
        }
        pieces.append(count == body.readableBytes ? body : body.getSlice(at: body.readerIndex, length: count)!)
        if crlfAfter { out.writeStaticString("\r\n") }
    }

    /// The framing before a body chunk of `count` bytes, written into `out`: how many of them go on
    /// the wire (a Content-Length cuts the rest), and whether a CRLF must follow them (chunked).
    @inline(__always)
    private mutating func frameBody(count: Int, into out: inout ByteBuffer) -> (count: Int, crlfAfter: Bool) {
        guard count > 0 else { return (0, false) }
        switch framing {
        case .noBody:
            return (0, false)
        case .contentLength(let length):
            let n = min(Int(max(0, length - bodyBytesSent)), count)
            bodyBytesSent += Int64(n)
            return (n, false)
        case .chunked:
            out.writeString(String(count, radix: 16))
            out.writeStaticString("\r\n")
            bodyBytesSent += Int64(count)
            return (count, true)
        case .closeDelimited:
            bodyBytesSent += Int64(count)
            return (count, false)
        }
    }

    /// Ends the head of a response whose whole body is `available` bytes of a file, sent with
    /// sendfile(2), and says how many of them go. The framing is always a Content-Length (the app's, or
    /// the file's size), so nothing follows the file: an app's length below the file's cuts it short,
    /// and one above it closes the connection after the file (as a short body does).
    public mutating func finishFileResponse(available: Int64) -> (head: ByteBuffer, length: Int64) {
        let head = finishHead(knownLength: available)
        let length = reserveFileBody(available)
        var end = ByteBuffer()
        finishBody(into: &end)
        assert(end.readableBytes == 0, "a file body framed by anything but a Content-Length")
        return (head, length)
    }

    /// How many bytes of a file body to send (the rest of its Content-Length), for sendfile.
    private mutating func reserveFileBody(_ available: Int64) -> Int64 {
        switch framing {
        case .noBody: return 0
        case .contentLength(let length):
            let n = min(available, max(0, length - bodyBytesSent))
            bodyBytesSent += n
            return n
        case .chunked, .closeDelimited:
            bodyBytesSent += available
            return available
        }
    }

    /// What ends the body on the wire; sets `closeConnection` when the body fell short of its length.
    public mutating func finishBody(into out: inout ByteBuffer) {
        switch framing {
        case .chunked: out.writeStaticString("0\r\n\r\n")
        case .contentLength(let length) where bodyBytesSent < length: closeConnection = true
        case .closeDelimited: closeConnection = true
        default: break
        }
    }

    /// A response the server makes itself when the app failed before its head went out (500, 413):
    /// a short text body, and the connection closes after it.
    public mutating func serverError(status: String) -> ByteBuffer {
        let body = status + "\n"
        var statusText = status
        statusText.withUTF8 { try? begin(status: UnsafeRawBufferPointer($0)) }
        var name = "Content-Type", value = "text/plain; charset=utf-8"
        name.withUTF8 { n in value.withUTF8 { v in try? addHeader(name: UnsafeRawBufferPointer(n), value: UnsafeRawBufferPointer(v)) } }
        requireClose()
        var buffer = finishHead(knownLength: Int64(body.utf8.count))
        var bodyText = body
        bodyText.withUTF8 { _ = appendBody(UnsafeRawBufferPointer($0), to: &buffer) }
        finishBody(into: &buffer)
        return buffer
    }

    // MARK: byte helpers

    static func containsToken(_ bytes: UnsafeRawBufferPointer, _ token: StaticString) -> Bool {
        String(decoding: bytes, as: UTF8.self).lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: " \t") == "\(token)" }
    }

    static func parseLength(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var value: Int64 = 0
        var digits = 0
        for c in bytes {
            if c == 32 || c == 9 { if digits > 0 { break } else { continue } }
            guard c >= 48 && c <= 57, digits < 18 else { return nil }
            value = value * 10 + Int64(c - 48)
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return s
    }
}
