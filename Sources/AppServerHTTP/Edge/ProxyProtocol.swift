import AppServerConfig
import Logging
import NIOCore

/// The header of the PROXY protocol (HAProxy's spec, versions 1 and 2) that a TCP proxy sends before
/// the client's bytes, read by a pure parser: it is given what arrived so far and says whether it needs
/// more, found a header (and how many bytes it took), or refuses the connection. Never a guess: bytes
/// that are not a valid header of an accepted version are refused.
struct ProxyHeader: Equatable {
    /// The client's and the proxy's addresses; nil for `PROXY UNKNOWN` and the `LOCAL` command (a
    /// proxy's own health check), where the connection's own addresses stand.
    var source: (host: String, port: Int)?
    var destination: (host: String, port: Int)?
    /// Version 2's SSL TLV said the client connected over TLS.
    var clientUsedTLS = false

    static func == (a: ProxyHeader, b: ProxyHeader) -> Bool {
        a.source?.host == b.source?.host && a.source?.port == b.source?.port && a.destination?.host == b.destination?.host
            && a.destination?.port == b.destination?.port && a.clientUsedTLS == b.clientUsedTLS
    }
}

enum ProxyHeaderParser {
    enum Outcome: Equatable {
        case needMore
        case header(ProxyHeader, length: Int)
        case invalid(String)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix = Array("PROXY ".utf8)
    /// Version 1's longest line, CRLF included (the spec's 107 bytes).
    static let v1MaxLength = 107

    static func parse(_ bytes: UnsafeRawBufferPointer, mode: ProxyProtocolMode) -> Outcome {
        let acceptsV1 = mode == .v1 || mode == .auto
        let acceptsV2 = mode == .v2 || mode == .auto
        if acceptsV2, startsLike(bytes, v2Signature) {
            return bytes.count < v2Signature.count ? .needMore : parseV2(bytes)
        }
        if acceptsV1, startsLike(bytes, v1Prefix) {
            return bytes.count < v1Prefix.count ? .needMore : parseV1(bytes)
        }
        if bytes.isEmpty { return .needMore }
        switch mode {
        case .v1: return .invalid(startsLike(bytes, v2Signature) ? "a version 2 header where version 1 is expected" : "no PROXY protocol header")
        case .v2: return .invalid(startsLike(bytes, v1Prefix) ? "a version 1 header where version 2 is expected" : "no PROXY protocol header")
        default: return .invalid("no PROXY protocol header")
        }
    }

    /// Whether `bytes` (possibly shorter) agree with the start of `prefix`.
    private static func startsLike(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        for i in 0..<min(bytes.count, prefix.count) where bytes[i] != prefix[i] { return false }
        return true
    }

    private static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard let lf = bytes.prefix(v1MaxLength).firstIndex(of: 10) else {
            return bytes.count >= v1MaxLength ? .invalid("a version 1 header longer than 107 bytes") : .needMore
        }
        let cr = lf - 1
        guard bytes[cr] == 13, !bytes[..<cr].contains(13) else { return .invalid("a version 1 header not ended by CRLF") }
        let line = String(decoding: bytes[v1Prefix.count..<cr], as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        if fields.first == "UNKNOWN" {
            return .header(ProxyHeader(), length: cr + 2)
        }
        guard fields.count == 5, fields[0] == "TCP4" || fields[0] == "TCP6" else {
            return .invalid("a malformed version 1 header")
        }
        let family = fields[0] == "TCP4" ? 4 : 16
        guard let source = AddressAllowList.parseIP(String(fields[1])), source.count == family,
              let destination = AddressAllowList.parseIP(String(fields[2])), destination.count == family,
              !fields[1].contains("["), !fields[2].contains("["),
              let sourcePort = port(fields[3]), let destinationPort = port(fields[4]) else {
            return .invalid("a version 1 header with a bad address or port")
        }
        return .header(ProxyHeader(source: (String(fields[1]), sourcePort), destination: (String(fields[2]), destinationPort)),
                       length: cr + 2)
    }

    /// A decimal port, 0 to 65535, without a sign or leading zeros.
    private static func port(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
              text == "0" || !text.hasPrefix("0"), let value = Int(text), value <= 65535 else { return nil }
        return value
    }

    private static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("a version 2 header of unknown version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("a version 2 header with unknown command \(command)") }
        let family = bytes[13]
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count >= 16 + length else { return .needMore }
        let body = UnsafeRawBufferPointer(rebasing: bytes[16..<(16 + length)])
        // LOCAL: the proxy speaks for itself (a health check); the connection's own addresses stand.
        if command == 0 { return .header(ProxyHeader(), length: 16 + length) }
        var header = ProxyHeader()
        let addressLength: Int
        switch family {
        case 0x11:   // TCP over IPv4
            addressLength = 12
            guard length >= addressLength else { return .invalid("a version 2 header too short for its IPv4 addresses") }
            header.source = (ipText(body[0..<4]), Int(body[8]) << 8 | Int(body[9]))
            header.destination = (ipText(body[4..<8]), Int(body[10]) << 8 | Int(body[11]))
        case 0x21:   // TCP over IPv6
            addressLength = 36
            guard length >= addressLength else { return .invalid("a version 2 header too short for its IPv6 addresses") }
            header.source = (ipText(body[0..<16]), Int(body[32]) << 8 | Int(body[33]))
            header.destination = (ipText(body[16..<32]), Int(body[34]) << 8 | Int(body[35]))
        case 0x00, 0x31:   // unspecified, or unix stream sockets: no IP address to take
            addressLength = family == 0x31 ? 216 : 0
            guard length >= addressLength else { return .invalid("a version 2 header too short for its unix addresses") }
        default:
            return .invalid("a version 2 header for a transport other than TCP or unix streams (family 0x\(String(family, radix: 16)))")
        }
        // TLVs: only PP2_TYPE_SSL matters here (its first byte's PP2_CLIENT_SSL bit: the client used TLS).
        var index = addressLength
        while index < length {
            guard index + 3 <= length else { return .invalid("a version 2 header with a truncated TLV") }
            let type = body[index]
            let valueLength = Int(body[index + 1]) << 8 | Int(body[index + 2])
            guard index + 3 + valueLength <= length else { return .invalid("a version 2 header with a truncated TLV") }
            if type == 0x20, valueLength >= 1, body[index + 3] & 0x01 != 0 { header.clientUsedTLS = true }
            index += 3 + valueLength
        }
        return .header(header, length: 16 + length)
    }

    private static func ipText(_ bytes: Slice<UnsafeRawBufferPointer>) -> String {
        var text = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = UnsafeRawBufferPointer(rebasing: bytes).withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &text, socklen_t(text.count))
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// First in the pipeline of a listener that expects a PROXY header: holds the connection's bytes
/// until the header is whole, puts its addresses on the connection, passes what follows on and
/// leaves the pipeline. A peer the header may not come from, or bytes that are no valid header, end
/// the connection with a log line.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let mode: ProxyProtocolMode
    private let origin: ConnectionOrigin
    private let server: HTTPServer
    private var buffered: ByteBuffer?
    private var done = false

    init(mode: ProxyProtocolMode, origin: ConnectionOrigin, server: HTTPServer) {
        self.mode = mode
        self.origin = origin
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        if buffered == nil && !server.edge.proxyAllow.allows(origin.socketPeer) {
            refuse(context, "a PROXY header from a peer that proxy_allow_ips does not name")
            return
        }
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        let outcome = buffered!.withUnsafeReadableBytes { ProxyHeaderParser.parse($0, mode: mode) }
        switch outcome {
        case .needMore:
            if buffered!.readableBytes > 16 + 65535 { refuse(context, "a header that never ends") }
        case .invalid(let reason):
            refuse(context, reason)
        case .header(let header, let length):
            done = true
            if let source = header.source, let address = try? SocketAddress(ipAddress: source.host, port: source.port) {
                origin.remote = address
            }
            if let destination = header.destination, let address = try? SocketAddress(ipAddress: destination.host, port: destination.port) {
                origin.local = address
            }
            origin.clientUsedTLS = header.clientUsedTLS
            var rest = buffered!
            buffered = nil
            rest.moveReaderIndex(forwardBy: length)
            // What followed the header goes on first; then this handler leaves (later reads skip it).
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        context.leavePipeline(removalToken: removalToken)
    }

    private func refuse(_ context: ChannelHandlerContext, _ reason: String) {
        done = true
        buffered = nil
        server.warnRarely("proxy-protocol", "refused a connection on a PROXY protocol listener: \(reason) (peer \(origin.socketPeer.logText); "
                          + "PROXY \(mode.rawValue) is expected first on every connection: check the front end's proxy_protocol setting)")
        context.close(promise: nil)
    }
}

#if canImport(Glibc)
import Glibc
#endif
