#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// One uwsgi packet's head, as nginx's `uwsgi_pass` sends it: modifier1 (u8, 0 for a WSGI request),
/// the vars block's size (u16, little-endian), modifier2 (u8), then the vars block of
/// `u16 length, key, u16 length, value` pairs. The body follows, sized by CONTENT_LENGTH.
struct UWSGIPacket {
    var variables: [(name: [UInt8], value: [UInt8])]

    /// The first variable of that name (compared as bytes: no key is made for the lookup).
    func value(_ name: StaticString) -> [UInt8]? {
        variables.first { $0.name.elementsEqual(name) }?.value
    }
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

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
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
        var variables: [(name: [UInt8], value: [UInt8])] = []
        // nginx's uwsgi_params and a browser's headers: a few dozen variables of some 20 bytes each.
        variables.reserveCapacity(min(size / 16, 256))
        var index = 4
        let end = 4 + size
        func field() -> [UInt8]? {
            guard index + 2 <= end else { return nil }
            let length = Int(bytes[index]) | Int(bytes[index + 1]) << 8
            index += 2
            guard index + length <= end else { return nil }
            defer { index += length }
            // From a buffer of its own (an Array made from the slice itself goes element by element).
            return Array(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + length)]))
        }
        while index < end {
            guard variables.count < maxVariables else { return .invalid(.tooManyVariables(limit: maxVariables)) }
            guard let name = field() else { return .invalid(.malformedVariables("a key runs past the block")) }
            guard !name.isEmpty else { return .invalid(.malformedVariables("an empty key")) }
            guard let value = field() else { return .invalid(.malformedVariables("the value of \(String(decoding: name, as: UTF8.self)) runs past the block")) }
            variables.append((name, value))
        }
        return .packet(UWSGIPacket(variables: variables), length: end)
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

    static func make(_ packet: UWSGIPacket) throws(Failure) -> (head: RequestHead, origin: RequestOrigin) {
        guard let method = packet.value("REQUEST_METHOD"), !method.isEmpty else { throw .missing("REQUEST_METHOD") }
        guard method.allSatisfy(isTokenByte) else { throw .invalid("REQUEST_METHOD is not a token") }
        let target: [UInt8]
        if let requestURI = packet.value("REQUEST_URI"), !requestURI.isEmpty {
            target = requestURI
        } else {
            // Without REQUEST_URI: PATH_INFO is decoded already, so encode what must not stay raw.
            let path = packet.value("PATH_INFO").flatMap { $0.isEmpty ? nil : $0 } ?? [UInt8(ascii: "/")]
            let query = packet.value("QUERY_STRING") ?? []
            var encoded: [UInt8] = []
            for c in path {
                if c > 0x20 && c < 0x7F && c != UInt8(ascii: "?") && c != UInt8(ascii: "#") && c != UInt8(ascii: "%") {
                    encoded.append(c)
                } else {
                    encoded += Array(("%" + (c < 16 ? "0" : "") + String(c, radix: 16, uppercase: true)).utf8)
                }
            }
            target = query.isEmpty ? encoded : encoded + [UInt8(ascii: "?")] + query
        }
        guard !target.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { throw .invalid("the request URI holds a space or a control byte") }
        let minorVersion = packet.value("SERVER_PROTOCOL")?.elementsEqual("HTTP/1.0") == true ? 0 : 1

        var contentLength: Int64 = 0
        var fields: [(name: [UInt8], value: [UInt8])] = []
        var gateway: [(name: [UInt8], value: [UInt8])] = []
        fields.reserveCapacity(packet.variables.count)
        gateway.reserveCapacity(packet.variables.count)
        var isSecure = false
        var remoteAddress: [UInt8]?, remotePort = 0, serverName: [UInt8]?, serverPort = 0
        // Names are told apart by their bytes: a String made of each name and value (to switch on)
        // was most of what this function cost a request.
        for (name, value) in packet.variables {
            if name.count > 5 && name.hasPrefix("HTTP_") {
                var lowered = Array(name[5...])
                for i in lowered.indices {
                    let c = lowered[i]
                    lowered[i] = c == UInt8(ascii: "_") ? UInt8(ascii: "-") : (c >= 65 && c <= 90 ? c + 32 : c)
                }
                guard !hopByHop.contains(where: { lowered.elementsEqual($0) }) else { continue }
                // The head keeps each one as sent; the WSGI environ gets a repeated one joined (RFC 9110 5.3).
                fields.append((lowered, value))
                if let index = gateway.firstIndex(where: { $0.name == name }) {
                    gateway[index].value += [UInt8(ascii: ",")] + value
                } else {
                    gateway.append((name, value))
                }
                continue
            }
            switch name.count {
            case 12 where name.elementsEqual("CONTENT_TYPE"):
                if !value.isEmpty { fields.append((Array("content-type".utf8), value)) }
                continue
            case 14 where name.elementsEqual("CONTENT_LENGTH"):
                guard let length = value.isEmpty ? 0 : Self.decimal(value, digits: 18) else {
                    throw .invalid("CONTENT_LENGTH '\(String(decoding: value, as: UTF8.self))' is not a length")
                }
                contentLength = length
                if contentLength > 0 { fields.append((Array("content-length".utf8), value)) }
                continue
            case 5 where name.elementsEqual("HTTPS"):
                isSecure = isSecure || ["on", "1", "true", "yes"].contains { Self.equalsLowercased(value, $0) }
            case 14 where name.elementsEqual("REQUEST_SCHEME"), 12 where name.elementsEqual("UWSGI_SCHEME"),
                 15 where name.elementsEqual("wsgi.url_scheme"):
                isSecure = isSecure || Self.equalsLowercased(value, "https")
            case 11 where name.elementsEqual("REMOTE_ADDR"): remoteAddress = value
            case 11 where name.elementsEqual("REMOTE_PORT"): remotePort = Self.port(value)
            case 11 where name.elementsEqual("SERVER_NAME"): serverName = value
            case 11 where name.elementsEqual("SERVER_PORT"): serverPort = Self.port(value)
            default: break
            }
            gateway.append((name, value))
        }
        let client = remoteAddress.flatMap { $0.isEmpty ? nil : (String(decoding: $0, as: UTF8.self), remotePort) }
        let server = serverName.flatMap { $0.isEmpty ? nil : (String(decoding: $0, as: UTF8.self), serverPort) }
        let head = RequestHead(method: method, target: target, minorVersion: minorVersion, fields: fields,
                               contentLength: contentLength > 0 ? contentLength : nil)
        return (head, RequestOrigin(isSecure: isSecure, client: client, server: server, gatewayVariables: gateway))
    }

    private static func equalsLowercased(_ bytes: [UInt8], _ lower: StaticString) -> Bool {
        bytes.withUnsafeBytes { AppServerHTTP.equalsLowercased($0, lower) }
    }

    /// The value of 1 to `digits` decimal digits; nil for anything else.
    private static func decimal(_ bytes: [UInt8], digits: Int) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= digits, bytes.allSatisfy(isDigit) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int64($1 - 0x30) }
    }

    /// A port's digits; 0 for anything else, as for a missing one.
    private static func port(_ bytes: [UInt8]) -> Int { Int(decimal(bytes, digits: 5) ?? 0) }
}

private extension Array where Element == UInt8 {
    func elementsEqual(_ text: StaticString) -> Bool {
        count == text.utf8CodeUnitCount && hasPrefix(text)
    }

    func hasPrefix(_ text: StaticString) -> Bool {
        let length = text.utf8CodeUnitCount
        return count >= length && withUnsafeBytes { bytes in bytes.baseAddress.map { memcmp($0, text.utf8Start, length) == 0 } ?? true }
    }
}

/// Turns the bytes of a uwsgi listener's connection into the request parts the connection handler
/// takes from the HTTP decoder (head, body, end), and leaves the packet's origin on the connection.
/// Refusals (a bad packet, an HTTP request, a peer not in uwsgi_allow_ips) are logged and end the
/// connection; one that reads as HTTP is answered with a 400 saying what to change.
final class UWSGIRequestDecoder: ByteToMessageDecoder {
    typealias InboundOut = RequestPart

    private enum State {
        case head
        case body(remaining: Int64)
        case refused
    }

    private var state = State.head
    private let origin: ConnectionOrigin
    private let server: HTTPServer
    private var checkedPeer = false

    init(origin: ConnectionOrigin, server: HTTPServer) {
        self.origin = origin
        self.server = server
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if !checkedPeer {
            checkedPeer = true
            if !server.edge.uwsgiAllow.allows(origin.socketPeer) {
                refuse(context, "a uwsgi connection from \(origin.socketPeer.logText), which uwsgi_allow_ips does not name", answer: nil)
                return .needMoreData
            }
        }
        switch state {
        case .refused:
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return .needMoreData
        case .body(let remaining):
            let n = Int(min(remaining, Int64(buffer.readableBytes)))
            guard n > 0 else { return .needMoreData }
            let slice = buffer.readSlice(length: n)!
            context.fireChannelRead(wrapInboundOut(.body(slice)))
            if remaining - Int64(n) == 0 {
                state = .head
                context.fireChannelRead(wrapInboundOut(.end))
            } else {
                state = .body(remaining: remaining - Int64(n))
            }
            return .continue
        case .head:
            let outcome = buffer.withUnsafeReadableBytes { UWSGIPacketParser.parse($0) }
            switch outcome {
            case .needMore:
                return .needMoreData
            case .invalid(let failure):
                if failure == .httpRequest {
                    // The listener's address is formatted here, for the warning, rather than for every connection.
                    refuse(context, "an HTTP request reached the uwsgi listener \(context.channel.localAddress.logText): point nginx's uwsgi_pass at it (not proxy_pass), or serve HTTP there (protocol = \"http\", or bind http://...)",
                           answer: "This address speaks the uwsgi protocol (nginx: uwsgi_pass), not HTTP.\n")
                } else {
                    refuse(context, "a bad uwsgi packet: \(failure)", answer: nil)
                }
                return .needMoreData
            case .packet(let packet, let length):
                buffer.moveReaderIndex(forwardBy: length)
                let request: (head: RequestHead, origin: RequestOrigin)
                do {
                    request = try UWSGIRequest.make(packet)
                } catch {
                    refuse(context, "a bad uwsgi packet: \(error)", answer: "Bad uwsgi packet: \(error).\n")
                    return .needMoreData
                }
                origin.pendingRequestOrigin = request.origin
                context.fireChannelRead(wrapInboundOut(.head(request.head)))
                if let length = request.head.parsed.contentLength {
                    state = .body(remaining: length)
                } else {
                    context.fireChannelRead(wrapInboundOut(.end))
                }
                return .continue
            }
        }
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        if case .head = state, buffer.readableBytes > 0 {
            server.logger.debug("a uwsgi connection closed in the middle of a packet's head (\(buffer.readableBytes) bytes)")
        }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }

    private func refuse(_ context: ChannelHandlerContext, _ reason: String, answer: String?) {
        state = .refused
        server.warnRarely("uwsgi", "\(reason) (peer \(origin.socketPeer.logText))")
        guard let answer else {
            context.close(promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 256)
        buffer.writeString("HTTP/1.1 400 Bad Request\r\nServer: appserver\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: \(answer.utf8.count)\r\n\r\n\(answer)")
        context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in context.close(promise: nil) }
    }
}
