#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// One uwsgi packet's head, as nginx's `uwsgi_pass` sends it: modifier1 (u8, 0 for a WSGI request),
/// the vars block's size (u16, little-endian), modifier2 (u8), then the vars block of
/// `u16 length, key, u16 length, value` pairs. The body follows, sized by CONTENT_LENGTH.
struct UWSGIPacket {
    /// The vars block: a slice of the bytes read, not a copy.
    let block: ByteBuffer
    /// Where each variable's name and value are in `block`, in their order (a head's field has the
    /// same four offsets). One array a packet: an Array for each name and value was ~36 allocations.
    let variables: [HTTP1Field]
}

/// Reads uwsgi packet heads; pure, so that every refusal is unit-tested alone.
enum UWSGIPacketParser {
    enum Outcome {
        case needMore
        case packet(UWSGIPacket, length: Int)
        case invalid(Failure)
    }

    enum Failure: Error, Equatable, CustomStringConvertible {
        /// The first bytes read as text: somebody speaks HTTP to a uwsgi listener.
        case httpRequest
        case unsupportedModifier(UInt8)
        case varsTooLarge(Int, limit: Int)
        case tooManyVariables(limit: Int)
        case malformedVariables(String)

        var description: String {
            switch self {
            case .httpRequest: return "an HTTP request, not a uwsgi packet"
            case .unsupportedModifier(let m): return "modifier1 \(m) (only 0, a WSGI request, is served)"
            case .varsTooLarge(let size, let limit): return "a vars block of \(size) bytes (more than \(limit))"
            case .tooManyVariables(let limit): return "more than \(limit) variables"
            case .malformedVariables(let reason): return "a malformed vars block (\(reason))"
            }
        }
    }

    /// The largest vars block taken: nginx's biggest request heads (large_client_header_buffers 4 x
    /// 8k) with uwsgi_params fit; a bigger one is refused before it is buffered.
    static let maxVarsSize = 48 * 1024
    static let maxVariables = 1000

    /// The packet at the start of `buffer`'s readable bytes.
    static func parse(_ buffer: ByteBuffer) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            guard bytes.count >= 1 else { return .needMore }
            let modifier1 = bytes[0]
            if modifier1 != 0 {
                // `GET /`, `POST`, ...: an upper-case letter where modifier1 should be.
                if modifier1 >= UInt8(ascii: "A") && modifier1 <= UInt8(ascii: "Z") { return .invalid(.httpRequest) }
                return .invalid(.unsupportedModifier(modifier1))
            }
            guard bytes.count >= 4 else { return .needMore }
            let size = Int(bytes[1]) | Int(bytes[2]) << 8
            guard size <= maxVarsSize else { return .invalid(.varsTooLarge(size, limit: maxVarsSize)) }
            guard bytes.count >= 4 + size else { return .needMore }
            // Offsets are the block's own: it starts after the 4-byte header.
            let block = UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + size)])
            var variables: [HTTP1Field] = []
            // nginx's uwsgi_params and a browser's headers: a few dozen variables of some 20 bytes each.
            variables.reserveCapacity(min(size / 16, 256))
            var index = 0
            func field() -> Range<Int>? {
                guard index + 2 <= size else { return nil }
                let length = Int(block[index]) | Int(block[index + 1]) << 8
                index += 2
                guard index + length <= size else { return nil }
                defer { index += length }
                return index..<(index + length)
            }
            while index < size {
                guard variables.count < maxVariables else { return .invalid(.tooManyVariables(limit: maxVariables)) }
                guard let name = field() else { return .invalid(.malformedVariables("a key runs past the block")) }
                guard !name.isEmpty else { return .invalid(.malformedVariables("an empty key")) }
                guard let value = field() else {
                    let text = String(decoding: UnsafeRawBufferPointer(rebasing: block[name]), as: UTF8.self)
                    return .invalid(.malformedVariables("the value of \(text) runs past the block"))
                }
                variables.append(HTTP1Field(nameStart: Int32(name.lowerBound), nameEnd: Int32(name.upperBound),
                                            valueStart: Int32(value.lowerBound), valueEnd: Int32(value.upperBound)))
            }
            let packet = UWSGIPacket(block: buffer.getSlice(at: buffer.readerIndex + 4, length: size)!, variables: variables)
            return .packet(packet, length: 4 + size)
        }
    }
}

/// The request a uwsgi packet stands for: an HTTP request head for the connection handler (so that
/// limits, bodies and responses take the same path as HTTP's) and the origin the app sees (REMOTE_ADDR,
/// HTTPS, SERVER_NAME, ... and the CGI variables themselves for the WSGI environ). Header values reach
/// the app byte for byte: the head is written from the packet's own bytes.
enum UWSGIRequest {
    enum Failure: Error, Equatable, CustomStringConvertible {
        case missing(String)
        case invalid(String)
        var description: String {
            switch self {
            case .missing(let name): return "no \(name) variable"
            case .invalid(let what): return what
            }
        }
    }

    /// Hop-by-hop headers of the client's connection to the front end: nginx took care of them (it
    /// read a chunked body whole, answered 100-continue) and they must not steer this connection.
    private static let hopByHop: [StaticString] = ["connection", "keep-alive", "transfer-encoding", "te", "expect", "upgrade", "trailer"]
    private static let httpsOn: [StaticString] = ["on", "1", "true", "yes"]

    static func make(_ packet: UWSGIPacket) throws(Failure) -> (head: RequestHead, origin: RequestOrigin) {
        try packet.block.withUnsafeReadableBytes { bytes in
            Result { () throws(Failure) in try make(packet, bytes) }
        }.get()
    }

    /// Names are told apart by their bytes, and the head is written straight from the block: a String
    /// of each name and value (to switch on) and an Array of each were most of what a request cost here.
    private static func make(_ packet: UWSGIPacket, _ bytes: UnsafeRawBufferPointer) throws(Failure) -> (head: RequestHead, origin: RequestOrigin) {
        func text(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }
        var method: Range<Int>?, requestURI: Range<Int>?, pathInfo: Range<Int>?, query: Range<Int>?, serverProtocol: Range<Int>?
        var contentLength: Int64 = 0
        var headerBytes = 0
        var isSecure = false
        // nil until the packet gives them (a pair given whole is the environ's as it is).
        var remoteAddress: Range<Int>?, remotePort: Int?, serverName: Range<Int>?, serverPort: Int?
        // What is neither a header nor CONTENT_*: the CGI variables the WSGI environ takes as they are.
        var gateway: [HTTP1Field] = []
        gateway.reserveCapacity(packet.variables.count)
        for variable in packet.variables {
            let name = variable.name, value = variable.value
            switch name.count {
            case 6... where isHeader(bytes, name):
                // Written into the head below; the environ's HTTP_* come from the head's fields.
                headerBytes += name.count + value.count
                continue
            case 12 where equals(bytes, name, "CONTENT_TYPE"):
                headerBytes += name.count + value.count
                continue
            case 14 where equals(bytes, name, "CONTENT_LENGTH"):
                guard let length = value.isEmpty ? 0 : decimal(text(value), digits: 18) else {
                    throw .invalid("CONTENT_LENGTH '\(String(decoding: text(value), as: UTF8.self))' is not a length")
                }
                contentLength = length
                headerBytes += name.count + value.count
                continue
            case 14 where equals(bytes, name, "REQUEST_METHOD"): method = method ?? value
            case 11 where equals(bytes, name, "REQUEST_URI"): requestURI = requestURI ?? value
            case 9 where equals(bytes, name, "PATH_INFO"): pathInfo = pathInfo ?? value
            case 12 where equals(bytes, name, "QUERY_STRING"): query = query ?? value
            case 15 where equals(bytes, name, "SERVER_PROTOCOL"): serverProtocol = serverProtocol ?? value
            case 5 where equals(bytes, name, "HTTPS"):
                isSecure = isSecure || httpsOn.contains { equalsLowercased(bytes, value, $0) }
            case 14 where equals(bytes, name, "REQUEST_SCHEME"), 12 where equals(bytes, name, "UWSGI_SCHEME"),
                 15 where equals(bytes, name, "wsgi.url_scheme"):
                isSecure = isSecure || equalsLowercased(bytes, value, "https")
            case 11 where equals(bytes, name, "REMOTE_ADDR"): remoteAddress = value
            case 11 where equals(bytes, name, "REMOTE_PORT"): remotePort = port(text(value))
            case 11 where equals(bytes, name, "SERVER_NAME"): serverName = value
            case 11 where equals(bytes, name, "SERVER_PORT"): serverPort = port(text(value))
            default: break
            }
            gateway.append(variable)
        }
        guard let method, !method.isEmpty else { throw .missing("REQUEST_METHOD") }
        guard text(method).allSatisfy(isTokenByte) else { throw .invalid("REQUEST_METHOD is not a token") }
        let http10 = serverProtocol.map { equals(bytes, $0, "HTTP/1.0") } ?? false
        let targetRoom = requestURI.map { $0.count } ?? (3 * (pathInfo?.count ?? 1) + 1 + (query?.count ?? 0))
        var head = ByteBufferAllocator().buffer(capacity: method.count + targetRoom + 13 + headerBytes + 4 * packet.variables.count + 2)
        head.writeBytes(text(method))
        head.writeStaticString(" ")
        let targetStart = head.writerIndex
        if let requestURI, !requestURI.isEmpty {
            head.writeBytes(text(requestURI))
        } else {
            // Without REQUEST_URI: PATH_INFO is decoded already, so encode what must not stay raw.
            if let pathInfo, !pathInfo.isEmpty { writeEncodedPath(text(pathInfo), to: &head) } else { head.writeStaticString("/") }
            if let query, !query.isEmpty {
                head.writeStaticString("?")
                head.writeBytes(text(query))
            }
        }
        let targetEnd = head.writerIndex
        guard !head.withUnsafeReadableBytes({ $0[targetStart..<targetEnd].contains { $0 <= 0x20 || $0 == 0x7F } }) else {
            throw .invalid("the request URI holds a space or a control byte")
        }
        head.writeStaticString(http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
        let fields = writeFields(packet.variables, bytes, to: &head)
        head.writeStaticString("\r\n")
        var parsed = HTTP1Head(method: 0..<method.count, target: targetStart..<targetEnd, minorVersion: http10 ? 0 : 1, fields: fields,
                               length: head.readableBytes, keepAlive: false)
        parsed.contentLength = contentLength > 0 ? contentLength : nil
        let client = remoteAddress.flatMap { $0.isEmpty ? nil : (String(decoding: text($0), as: UTF8.self), remotePort ?? 0) }
        let server = serverName.flatMap { $0.isEmpty ? nil : (String(decoding: text($0), as: UTF8.self), serverPort ?? 0) }
        return (RequestHead(bytes: head, parsed: parsed),
                RequestOrigin(isSecure: isSecure, client: client, server: server, gatewayVariables: RequestHeaders(bytes: packet.block, fields: gateway),
                              gatewayHasRemote: remoteAddress != nil && remotePort != nil, gatewayHasServer: serverName != nil && serverPort != nil))
    }

    /// `HTTP_` and at least one byte more.
    private static func isHeader(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) -> Bool {
        name.count > 5 && equals(bytes, name.lowerBound..<(name.lowerBound + 5), "HTTP_")
    }

    /// The head's fields, in the packet's order: each `HTTP_*` variable (lower-cased, '_' to '-', as
    /// sent but for the client's hop-by-hop ones), CONTENT_TYPE and CONTENT_LENGTH when they say something.
    /// Each line is written by one copy into room checked once (a ByteBuffer write of each of its four
    /// pieces checked capacity and uniqueness for each: half of what a field cost here).
    private static func writeFields(_ variables: [HTTP1Field], _ bytes: UnsafeRawBufferPointer, to head: inout ByteBuffer) -> [HTTP1Field] {
        var fields: [HTTP1Field] = []
        fields.reserveCapacity(variables.count)
        let source = bytes.baseAddress!
        for variable in variables {
            let name = variable.name, value = variable.value
            // The name written as it is (CONTENT_*), or nil for an HTTP_* name written lower-cased.
            let fixedName: StaticString?
            if isHeader(bytes, name) {
                fixedName = nil
            } else if name.count == 12 && equals(bytes, name, "CONTENT_TYPE") && !value.isEmpty {
                fixedName = "content-type"
            } else if name.count == 14 && equals(bytes, name, "CONTENT_LENGTH"), let length = decimal(UnsafeRawBufferPointer(rebasing: bytes[value]), digits: 18), length > 0 {
                fixedName = "content-length"
            } else {
                continue
            }
            let nameCount = fixedName?.utf8CodeUnitCount ?? name.count - 5
            let lineStart = head.writerIndex
            let written = head.writeWithUnsafeMutableBytes(minimumWritableBytes: nameCount + 2 + value.count + 2) { out in
                let base = out.baseAddress!
                if let fixedName {
                    base.copyMemory(from: fixedName.utf8Start, byteCount: nameCount)
                } else {
                    for i in 0..<nameCount {
                        let c = source.load(fromByteOffset: name.lowerBound + 5 + i, as: UInt8.self)
                        base.storeBytes(of: c == UInt8(ascii: "_") ? UInt8(ascii: "-") : (c >= 65 && c <= 90 ? c + 32 : c), toByteOffset: i, as: UInt8.self)
                    }
                    let lowered = UnsafeRawBufferPointer(start: base, count: nameCount)
                    // Not committed: the writer index stays where it was.
                    if hopByHop.contains(where: { equals(lowered, 0..<nameCount, $0) }) { return 0 }
                }
                base.storeBytes(of: UInt8(ascii: ":"), toByteOffset: nameCount, as: UInt8.self)
                base.storeBytes(of: UInt8(ascii: " "), toByteOffset: nameCount + 1, as: UInt8.self)
                (base + nameCount + 2).copyMemory(from: source + value.lowerBound, byteCount: value.count)
                base.storeBytes(of: UInt8(ascii: "\r"), toByteOffset: nameCount + 2 + value.count, as: UInt8.self)
                base.storeBytes(of: UInt8(ascii: "\n"), toByteOffset: nameCount + 3 + value.count, as: UInt8.self)
                return nameCount + 4 + value.count
            }
            guard written > 0 else { continue }
            let valueStart = lineStart + nameCount + 2
            fields.append(HTTP1Field(nameStart: Int32(lineStart), nameEnd: Int32(lineStart + nameCount),
                                     valueStart: Int32(valueStart), valueEnd: Int32(valueStart + value.count)))
        }
        return fields
    }

    /// A decoded path made a request target again: bytes that are not visible ASCII, and `?`, `#`, `%`, as `%XX`.
    private static func writeEncodedPath(_ path: UnsafeRawBufferPointer, to head: inout ByteBuffer) {
        let hex: StaticString = "0123456789ABCDEF"
        for c in path {
            if c > 0x20 && c < 0x7F && c != UInt8(ascii: "?") && c != UInt8(ascii: "#") && c != UInt8(ascii: "%") {
                head.writeInteger(c)
            } else {
                head.writeInteger(UInt8(ascii: "%"))
                head.writeInteger(hex.utf8Start[Int(c >> 4)])
                head.writeInteger(hex.utf8Start[Int(c & 0xF)])
            }
        }
    }

    /// The value of 1 to `digits` decimal digits; nil for anything else.
    private static func decimal(_ bytes: UnsafeRawBufferPointer, digits: Int) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= digits, bytes.allSatisfy(isDigit) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int64($1 - 0x30) }
    }

    /// A port's digits; 0 for anything else, as for a missing one.
    private static func port(_ bytes: UnsafeRawBufferPointer) -> Int { Int(decimal(bytes, digits: 5) ?? 0) }
}

/// Turns the bytes of a uwsgi listener's connection into the request parts the connection handler
/// takes from the HTTP decoder (head, body, end), and leaves the packet's origin on the connection.
/// Refusals (a bad packet, an HTTP request, a peer not in uwsgi_allow_ips) are logged and end the
/// connection; one that reads as HTTP is answered with a 400 saying what to change. As the HTTP/1.1
/// decoder, it is the connection handler's, not a pipeline handler (a ByteToMessageHandler and a handler
/// to notice reads were ~4k instructions a connection).
final class UWSGIRequestDecoder: RequestDecoder {
    private enum State {
        case head
        case body(remaining: Int64)
        case refused
    }

    private var state = State.head
    /// Bytes received and not yet decoded.
    private var pending: ByteBuffer?
    private let origin: ConnectionOrigin
    private let server: HTTPServer
    private var checkedPeer = false
    private var detached = false

    init(origin: ConnectionOrigin, server: HTTPServer) {
        self.origin = origin
        self.server = server
    }

    /// None: the packet parser tells an HTTP request on this listener itself (and answers it).
    var mismatchHint: String? { nil }

    func received(_ bytes: consuming ByteBuffer, context: ChannelHandlerContext, connection: HTTPConnectionHandler) {
        var incoming = bytes
        if !checkedPeer {
            checkedPeer = true
            if !server.edge.uwsgiAllow.allows(origin.socketPeer) {
                refuse(context, "a uwsgi connection from \(origin.socketPeer.logText), which uwsgi_allow_ips does not name", answer: nil)
            }
        }
        if case .refused = state { return }
        if pending == nil || pending!.readableBytes == 0 {
            pending = incoming
        } else {
            pending!.writeBuffer(&incoming)
        }
        decode(context, connection)
    }

    private func decode(_ context: ChannelHandlerContext, _ connection: HTTPConnectionHandler) {
        while !detached, var buffer = pending, buffer.readableBytes > 0 {
            switch state {
            case .refused:
                pending = nil
            case .body(let remaining):
                let n = Int(min(remaining, Int64(buffer.readableBytes)))
                let slice = buffer.readSlice(length: n)!
                pending = buffer.readableBytes > 0 ? buffer : nil
                state = remaining == Int64(n) ? .head : .body(remaining: remaining - Int64(n))
                deliver(.body(slice), connection)
                if remaining == Int64(n) { deliver(.end, connection) }
            case .head:
                switch UWSGIPacketParser.parse(buffer) {
                case .needMore:
                    return
                case .invalid(.httpRequest):
                    // The listener's address is formatted here, for the warning, rather than for every connection.
                    refuse(context, "an HTTP request reached the uwsgi listener \(context.channel.localAddress.logText): point nginx's uwsgi_pass at it (not proxy_pass), or serve HTTP there (protocol = \"http\", or bind http://...)",
                           answer: "This address speaks the uwsgi protocol (nginx: uwsgi_pass), not HTTP.\n")
                case .invalid(let failure):
                    refuse(context, "a bad uwsgi packet: \(failure)", answer: nil)
                case .packet(let packet, let length):
                    buffer.moveReaderIndex(forwardBy: length)
                    pending = buffer.readableBytes > 0 ? buffer : nil
                    let request: (head: RequestHead, origin: RequestOrigin)
                    do {
                        request = try UWSGIRequest.make(packet)
                    } catch {
                        refuse(context, "a bad uwsgi packet: \(error)", answer: "Bad uwsgi packet: \(error).\n")
                        return
                    }
                    origin.pendingRequestOrigin = request.origin
                    let bodyLength = request.head.parsed.contentLength
                    if let bodyLength { state = .body(remaining: bodyLength) }
                    deliver(.head(request.head), connection)
                    if bodyLength == nil { deliver(.end, connection) }
                }
            }
        }
    }

    private func deliver(_ part: consuming RequestPart, _ connection: HTTPConnectionHandler) {
        guard !detached else { return }
        connection.receive(part)
    }

    func connectionClosed() {
        if case .head = state, let rest = pending, rest.readableBytes > 0 {
            server.logger.debug("a uwsgi connection closed in the middle of a packet's head (\(rest.readableBytes) bytes)")
        }
        pending = nil
    }

    /// uwsgi has no upgrades: nothing is handed on.
    func detach() -> ByteBuffer? {
        detached = true
        pending = nil
        return nil
    }

    private func refuse(_ context: ChannelHandlerContext, _ reason: String, answer: String?) {
        state = .refused
        pending = nil
        server.warnRarely("uwsgi", "\(reason) (peer \(origin.socketPeer.logText))")
        guard let answer else {
            context.close(promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 256)
        buffer.writeString("HTTP/1.1 400 Bad Request\r\nServer: appserver\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: \(answer.utf8.count)\r\n\r\n\(answer)")
        context.writeAndFlushThenClose(NIOAny(buffer))
    }
}
