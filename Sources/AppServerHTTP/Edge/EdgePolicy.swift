import AppServerConfig
import NIOCore

/// One listening socket as a worker serves it: what it speaks and whether a PROXY header comes first.
public struct ListenerOptions: Sendable {
    public var descriptor: CInt
    public var protocolName: ListenerProtocol
    public var proxyProtocol: ProxyProtocolMode

    public init(descriptor: CInt, protocolName: ListenerProtocol = .http, proxyProtocol: ProxyProtocolMode = .off) {
        self.descriptor = descriptor
        self.protocolName = protocolName
        self.proxyProtocol = proxyProtocol
    }

    /// ` speaking uwsgi, PROXY protocol auto` for the log; empty for plain HTTP.
    public var describedIfNotPlainHTTP: String {
        if protocolName == .http && proxyProtocol == .off { return "" }
        return " speaking \(protocolName.rawValue)" + (proxyProtocol == .off ? "" : ", PROXY protocol \(proxyProtocol.rawValue) first")
    }
}

/// Whom the edge believes, and how it treats header names: the settings of README's "Behind a proxy".
public struct EdgePolicy: Sendable {
    public var uwsgiAllow: AddressAllowList
    public var proxyAllow: AddressAllowList
    public var forwardedAllow: AddressAllowList
    public var secureSchemeHeaders: SecureSchemeHeaders {
        didSet { schemeHeaderBytes = Self.bytes(of: secureSchemeHeaders) }
    }
    /// `secureSchemeHeaders` as the bytes each request's header names and values are compared with.
    private(set) var schemeHeaderBytes: [(name: [UInt8], secureValue: [UInt8], display: String)] {
        didSet { watchedFieldNames = Self.watched(schemeHeaderBytes, requestIDHeaderBytes) }
    }
    public var proxyHeaders: Bool
    public var headerMap: HeaderMapMode
    /// The request id's header name, lower case, as the bytes each request's header names are
    /// compared with; nil: no request ids.
    public var requestIDHeaderBytes: [UInt8]? {
        didSet { watchedFieldNames = Self.watched(schemeHeaderBytes, requestIDHeaderBytes) }
    }
    /// The names the server reads from a request's fields (the scheme headers, X-Forwarded-For, the
    /// request id's): the parser notes which fields may have them, and only those are read for them.
    public private(set) var watchedFieldNames = WatchedFieldNames.all

    public init(uwsgiAllow: AddressAllowList = .loopback, proxyAllow: AddressAllowList = .loopback,
                forwardedAllow: AddressAllowList = .loopback, secureSchemeHeaders: SecureSchemeHeaders = .gunicornDefault,
                proxyHeaders: Bool = true, headerMap: HeaderMapMode = .drop, requestIDHeader: String? = "x-request-id") {
        self.uwsgiAllow = uwsgiAllow
        self.proxyAllow = proxyAllow
        self.forwardedAllow = forwardedAllow
        self.secureSchemeHeaders = secureSchemeHeaders
        self.schemeHeaderBytes = Self.bytes(of: secureSchemeHeaders)
        self.proxyHeaders = proxyHeaders
        self.headerMap = headerMap
        self.requestIDHeaderBytes = requestIDHeader.map { Array($0.lowercased().utf8) }
        self.watchedFieldNames = Self.watched(schemeHeaderBytes, requestIDHeaderBytes)
    }

    private static func bytes(of headers: SecureSchemeHeaders) -> [(name: [UInt8], secureValue: [UInt8], display: String)] {
        headers.entries.map { (Array($0.name.utf8), Array($0.secureValue.utf8), $0.name) }
    }

    private static func watched(_ schemeHeaders: [(name: [UInt8], secureValue: [UInt8], display: String)],
                                _ requestIDHeader: [UInt8]?) -> WatchedFieldNames {
        WatchedFieldNames(schemeHeaders.map(\.name) + [forwardedForName] + (requestIDHeader.map { [$0] } ?? []))
    }

    public init(config: ServerConfig) {
        self.init(uwsgiAllow: config.uwsgiAllowIPs, proxyAllow: config.proxyAllowIPs, forwardedAllow: config.forwardedAllowIPs,
                  secureSchemeHeaders: config.secureSchemeHeaders, proxyHeaders: config.proxyHeaders, headerMap: config.headerMap,
                  requestIDHeader: config.requestIDHeader.isEmpty ? nil : config.requestIDHeader)
    }
}

extension AddressAllowList {
    /// Whether a peer is allowed: an IP address in the list, or any unix-socket peer (as in Gunicorn).
    /// The address's bytes are read where they lie (an array of them cost ~600 instructions a connection).
    func allows(_ address: SocketAddress?) -> Bool {
        switch address {
        case .some(.unixDomainSocket): return true
        case .some(.v4(let address)):
            return withUnsafeBytes(of: address.address.sin_addr) { allows(addressBytes: $0) }
        case .some(.v6(let address)):
            return withUnsafeBytes(of: address.address.sin6_addr) { allows(addressBytes: $0) }
        case .none: return false
        }
    }
}

extension Optional where Wrapped == SocketAddress {
    /// `127.0.0.1:8000`, `[::1]:8000` or `unix:/run/app.sock`, for the log.
    var logText: String {
        switch self {
        case .some(.unixDomainSocket(let address)):
            let path = SocketAddress.unixDomainSocket(address).pathname ?? ""
            return path.isEmpty ? "a unix socket" : "unix:" + path
        case .some(let address):
            let host = address.ipAddress ?? "?"
            return (host.contains(":") ? "[\(host)]" : host) + ":\(address.port ?? 0)"
        case .none:
            return "?"
        }
    }
}

/// Gunicorn's forwarder_headers: header names with '_' that a trusted forwarder may send, lower case.
public enum ForwarderHeader {
    /// Where the forwarder mounted the app (nginx's `proxy_set_header SCRIPT_NAME /app`).
    public static let scriptName = Array("script_name".utf8)
    public static let pathInfo = Array("path_info".utf8)

    /// By length first: the WSGI environ asks this of every header a trusted peer sends.
    public static func isOne(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case scriptName.count: RequestHeaders.equalsLowercased(name, scriptName)
        case pathInfo.count: RequestHeaders.equalsLowercased(name, pathInfo)
        default: false
        }
    }
}

/// What a trusted proxy's headers say about a request: the scheme (`secure_scheme_headers`) and the
/// client (`X-Forwarded-For`, its rightmost hop that is not itself a trusted proxy). Pure: read by the
/// connection for a request from a trusted peer, unit-tested alone.
enum ForwardedHeaders {
    enum Outcome: Equatable {
        /// Nothing that changes the request's origin.
        case none
        case origin(isSecure: Bool, client: String?)
        /// Scheme headers that contradict each other (Gunicorn's InvalidSchemeHeaders): a 400.
        case contradictory(String)
    }

    static func read(_ headers: RequestHeaders, policy: borrowing EdgePolicy) -> Outcome {
        var secure: Bool?
        var schemeHeader: String?
        var contradiction: String?
        // The X-Forwarded-For fields are one list of hops. Nearly always there is one field, read where it
        // is; two or more are joined with commas, in order, into `joinedForwardedFor`.
        var forwardedForFields = 0, firstForwardedFor = 0
        var joinedForwardedFor: [UInt8] = []
        headers.forEachWatched { index, name, value in
            let length = name.count
            if policy.proxyHeaders && length == 15 && RequestHeaders.equalsLowercased(name, forwardedForName) {
                forwardedForFields += 1
                if forwardedForFields == 1 {
                    firstForwardedFor = index
                } else {
                    if forwardedForFields == 2 { headers.withValue(ofField: firstForwardedFor) { joinedForwardedFor.append(contentsOf: $0) } }
                    joinedForwardedFor.append(UInt8(ascii: ","))
                    joinedForwardedFor.append(contentsOf: value)
                }
                return
            }
            for entry in policy.schemeHeaderBytes where entry.name.count == length && RequestHeaders.equalsLowercased(name, entry.name) {
                let says = value.elementsEqual(entry.secureValue)
                if let secure, secure != says {
                    contradiction = "\(schemeHeader ?? "") and \(entry.display) disagree about https"
                }
                secure = says
                schemeHeader = entry.display
            }
        }
        if let contradiction { return .contradictory(contradiction) }
        if forwardedForFields == 0 && secure == nil { return .none }   // most requests: no splitting
        let client: String?
        switch forwardedForFields {
        case 0: client = nil
        case 1: client = headers.withValue(ofField: firstForwardedFor) { clientHop($0, allow: policy.forwardedAllow) }
        default: client = joinedForwardedFor.withUnsafeBytes { clientHop($0, allow: policy.forwardedAllow) }
        }
        if secure == nil && client == nil { return .none }
        return .origin(isSecure: secure ?? false, client: client)
    }

    /// The client in a list of hops (comma-separated; empty elements are none, whitespace around one is
    /// not part of it): walking from the nearest, proxies we trust appended their peers, and the first hop
    /// we do not trust is the client; if every hop is trusted, the farthest one is. Only an IP address
    /// becomes the client (nothing else reaches REMOTE_ADDR or the log). Read in place, each hop parsed
    /// once: no String is made but the client's.
    private static func clientHop(_ list: UnsafeRawBufferPointer, allow: AddressAllowList) -> String? {
        func isBlank(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
        var chosen: UnsafeRawBufferPointer?
        var chosenIsAddress = false
        var end = list.count
        while end > 0 {
            var start = end
            while start > 0 && list[start - 1] != UInt8(ascii: ",") { start -= 1 }
            var first = start, last = end
            end = start - 1   // the comma before this element (none before the first)
            guard first < last else { continue }
            while first < last && isBlank(list[first]) { first += 1 }
            while last > first && isBlank(list[last - 1]) { last -= 1 }
            let hop = UnsafeRawBufferPointer(rebasing: list[first..<last])
            let address = IPAddressBytes(parsing: hop)
            chosen = hop
            chosenIsAddress = address != nil
            // `*` trusts every hop, an address or not: the farthest is the client (if it is an address).
            guard allow.allowsAny || address.map({ allow.allows($0) }) == true else { break }
        }
        guard let chosen, chosenIsAddress else { return nil }
        return String(decoding: chosen, as: UTF8.self)
    }
}

private let forwardedForName = Array("x-forwarded-for".utf8)

/// What one connection's front end said about it, shared by the handlers of its pipeline: the PROXY
/// header's addresses, a uwsgi packet's variables for the request being decoded. Touched on the
/// connection's event loop only.
final class ConnectionOrigin {
    /// The socket's peer: the one that is trusted or not.
    let socketPeer: SocketAddress?
    /// The client's and the server's address as the PROXY header gave them (else the socket's).
    var remote: SocketAddress?
    var local: SocketAddress?
    /// A PROXY v2 header said the client connected over TLS.
    var clientUsedTLS = false
    /// Set by the uwsgi decoder with each head it passes on; taken by the connection handler.
    var pendingRequestOrigin: RequestOrigin?

    init(channel: any Channel) {
        socketPeer = channel.remoteAddress
        remote = socketPeer
        local = channel.localAddress
    }
}
