/// The settings types of the server's edge: what a listener speaks, and whom it believes.

/// The protocol a listener speaks: HTTP/1.x, or the uwsgi protocol of nginx's `uwsgi_pass`.
public enum ListenerProtocol: String, CaseIterable, Sendable { case http, uwsgi }

/// Whether a listener expects a PROXY protocol header (HAProxy's, nginx's `proxy_protocol on`) first
/// on each connection, and which versions it takes. A listener that expects one refuses a connection
/// without a valid header: it never guesses (Gunicorn's names: `off`, `v1`, `v2`, `auto` for either).
public enum ProxyProtocolMode: String, CaseIterable, Sendable {
    case off, v1, v2, auto

    /// Gunicorn's spellings: `true`/`1` mean `auto`, `false`/`0`/`none` mean `off`.
    public init?(text: String) {
        switch text.lowercased() {
        case "off", "false", "0", "none", "no": self = .off
        case "auto", "true", "1", "yes", "on": self = .auto
        case "v1": self = .v1
        case "v2": self = .v2
        default: return nil
        }
    }
}

/// What becomes of request headers whose names hold `_` (Gunicorn's `header_map`): in the CGI/WSGI
/// mapping `X_Forwarded_For` and `X-Forwarded-For` would both be `HTTP_X_FORWARDED_FOR`.
public enum HeaderMapMode: String, CaseIterable, Sendable {
    /// Dropped before the app sees them (the default).
    case drop
    /// The request is answered 400.
    case refuse
    /// Passed on, and joined with a header of the colliding name (the old, unsafe behaviour).
    case dangerous
}

/// What one listener serves, when its bind address or systemd name says so explicitly:
/// `uwsgi://127.0.0.1:3031`, `http+proxy://[::]:8443`, `FileDescriptorName=uwsgi`.
/// Listeners that say nothing follow the server-wide `protocol` and `proxy_protocol`.
public struct ListenerScheme: Hashable, Sendable, CustomStringConvertible {
    public var protocolName: ListenerProtocol
    public var proxyProtocol: Bool

    public init(_ protocolName: ListenerProtocol, proxyProtocol: Bool = false) {
        self.protocolName = protocolName
        self.proxyProtocol = proxyProtocol
    }

    /// `http`, `uwsgi`, `http+proxy`, `uwsgi+proxy`.
    public init?(text: String) {
        let parts = text.lowercased().split(separator: "+", omittingEmptySubsequences: false)
        guard let first = parts.first, let name = ListenerProtocol(rawValue: String(first)), parts.count <= 2 else { return nil }
        if parts.count == 2 && parts[1] != "proxy" { return nil }
        self.init(name, proxyProtocol: parts.count == 2)
    }

    /// A systemd socket's `FileDescriptorName=`: a scheme (`uwsgi`), or a name ending in `.` and one
    /// (`shop.uwsgi`); nil for any other name.
    public init?(socketName: String) {
        if let scheme = ListenerScheme(text: socketName) {
            self = scheme
        } else if let dot = socketName.lastIndex(of: "."), let scheme = ListenerScheme(text: String(socketName[socketName.index(after: dot)...])) {
            self = scheme
        } else {
            return nil
        }
    }

    public var description: String { protocolName.rawValue + (proxyProtocol ? "+proxy" : "") }
}

/// A `bind` entry: an address, with the listener's scheme when one is written before it.
public struct BindSpec: Hashable, Sendable, CustomStringConvertible {
    public var address: BindAddress
    public var scheme: ListenerScheme?

    public init(_ address: BindAddress, scheme: ListenerScheme? = nil) {
        self.address = address
        self.scheme = scheme
    }

    /// Gunicorn's forms (`HOST:PORT`, `unix:PATH`, `fd://N`, also `tcp://HOST:PORT` and `unix://PATH`),
    /// each optionally after `http://`, `uwsgi://`, `http+proxy://` or `uwsgi+proxy://`.
    public init(parsing text: String) throws(ConfigError) {
        var spec = text.trimmingWhitespace()
        var scheme: ListenerScheme?
        if let range = spec.range(of: "://") {
            let prefix = String(spec[..<range.lowerBound])
            let rest = String(spec[range.upperBound...])
            if prefix.lowercased() == "tcp" {
                spec = rest
            } else if prefix.lowercased() == "unix" {
                spec = "unix:" + rest
            } else if prefix.lowercased() == "fd" {
                // BindAddress reads it whole.
            } else if let known = ListenerScheme(text: prefix) {
                scheme = known
                spec = rest.hasPrefix("unix://") ? "unix:" + rest.dropFirst(7) : rest
            } else {
                throw ConfigError.invalidValue(key: "bind", value: text,
                                               reason: "unknown scheme '\(prefix)': expected http, uwsgi, http+proxy or uwsgi+proxy")
            }
        }
        do {
            self.init(try BindAddress(parsing: spec), scheme: scheme)
        } catch {
            // Name the whole entry, scheme included.
            if case .invalidValue(_, _, let reason) = error { throw ConfigError.invalidValue(key: "bind", value: text, reason: reason) }
            throw error
        }
    }

    public var description: String {
        guard let scheme else { return address.description }
        return "\(scheme)://\(address)"
    }
}

/// Peers allowed to do something (send forwarded headers, a PROXY header, uwsgi packets): IP
/// addresses and CIDR networks, or `*` for any. Unix-socket peers are always allowed, as in Gunicorn:
/// only local processes that may open the socket file reach them.
public struct AddressAllowList: Equatable, Sendable, CustomStringConvertible {
    struct Network: Equatable, Sendable {
        /// 4 bytes for IPv4, 16 for IPv6.
        var address: [UInt8]
        var prefixLength: Int
    }

    public private(set) var allowsAny = false
    var networks: [Network] = []
    private var text: String

    /// `127.0.0.1,::1`, `10.0.0.0/8, fd00::/8`, `*`; a TOML array of such entries works too.
    public init(parsing entries: [String], key: String) throws(ConfigError) {
        text = entries.joined(separator: ",")
        for entry in entries.flatMap({ $0.split(separator: ",") }).map({ $0.trimmingWhitespace() }) where !entry.isEmpty {
            if entry == "*" { allowsAny = true; continue }
            let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let address = Self.parseIP(String(parts[0])) else {
                throw ConfigError.invalidValue(key: key, value: entry, reason: "expected IP addresses or networks (10.0.0.0/8), comma-separated, or *")
            }
            var prefix = address.count * 8
            if parts.count == 2 {
                guard let bits = Int(parts[1]), bits >= 0, bits <= address.count * 8 else {
                    throw ConfigError.invalidValue(key: key, value: entry, reason: "the prefix length must be from 0 to \(address.count * 8)")
                }
                prefix = bits
            }
            networks.append(Network(address: address, prefixLength: prefix))
        }
    }

    public static let loopback = try! AddressAllowList(parsing: ["127.0.0.1,::1"], key: "")

    public var description: String { text }

    /// Whether an IP address (4 or 16 bytes, network order) is allowed. An IPv4-mapped IPv6 address
    /// (a dual-stack `[::]` listener's IPv4 peer) counts as its IPv4 address.
    public func allows(addressBytes: [UInt8]) -> Bool {
        addressBytes.withUnsafeBytes { allows(addressBytes: $0) }
    }

    /// The same for the bytes where they lie (a socket address's, read once a connection): no array made.
    public func allows(addressBytes: UnsafeRawBufferPointer) -> Bool {
        if allowsAny { return true }
        var bytes = addressBytes
        if bytes.count == 16 && bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            bytes = UnsafeRawBufferPointer(rebasing: bytes[12...])
        }
        for network in networks where network.address.count == bytes.count {
            var remaining = network.prefixLength
            var index = 0
            var matches = true
            while remaining > 0 {
                let mask: UInt8 = remaining >= 8 ? 0xff : ~(0xff >> UInt8(remaining))
                if (network.address[index] & mask) != (bytes[index] & mask) { matches = false; break }
                remaining -= 8
                index += 1
            }
            if matches { return true }
        }
        return false
    }

    /// Whether a textual IP address is allowed (false for anything that is not an IP address).
    public func allows(_ text: Substring) -> Bool {
        var text = text
        return text.withUTF8 { allows(UnsafeRawBufferPointer($0)) }
    }

    /// The same for the address's text as bytes (an X-Forwarded-For hop, read in place).
    public func allows(_ text: UnsafeRawBufferPointer) -> Bool {
        if allowsAny { return true }
        guard let address = IPAddressBytes(parsing: text) else { return false }
        return allows(address)
    }

    /// Whether a parsed address is allowed.
    public func allows(_ address: IPAddressBytes) -> Bool {
        allowsAny || address.withUnsafeBytes { allows(addressBytes: $0) }
    }

    /// The bytes of an IPv4 or IPv6 address in text form (no zone; `[...]` around it is taken off), or nil.
    public static func parseIP(_ text: String) -> [UInt8]? {
        var text = text
        return text.withUTF8 { parseIP(UnsafeRawBufferPointer($0)) }
    }

    /// The same from the text's bytes.
    public static func parseIP(_ text: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let address = IPAddressBytes(parsing: text) else { return nil }
        return address.withUnsafeBytes { Array($0) }
    }
}

/// An IP address's bytes (4 or 16, network order) held inline: an X-Forwarded-For hop is read for every
/// request behind a proxy, and an array of its bytes was a malloc and a free each time.
public struct IPAddressBytes: Sendable {
    private var storage: (UInt64, UInt64) = (0, 0)
    /// 4 for IPv4, 16 for IPv6.
    public private(set) var count: Int

    /// The address in `text` (no zone; `[...]` around it is taken off), or nil. No Foundation on the
    /// way: this module imports it, and String's `contains(":")` then resolved to NSString's, which cost
    /// ~4,000 instructions an address.
    public init?(parsing text: UnsafeRawBufferPointer) {
        var start = 0, end = text.count
        if end >= 2 && text[0] == UInt8(ascii: "[") && text[end - 1] == UInt8(ascii: "]") { start = 1; end -= 1 }
        let address = UnsafeRawBufferPointer(rebasing: text[start..<end])
        guard !address.isEmpty, address.count < 64 else { return nil }
        if !address.contains(UInt8(ascii: ":")) {
            guard let quad = Self.dottedQuad(address) else { return nil }
            count = 4
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: quad.bigEndian, as: UInt32.self) }
            return
        }
        // inet_pton reads a NUL-terminated string: the text is copied into one (the longest form of an
        // address, IPv4-mapped IPv6, is 45 bytes), and a NUL inside the text is no address.
        guard !address.contains(0) else { return nil }
        var cString: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        var parsed = in6_addr()
        let ok = withUnsafeMutableBytes(of: &cString) { buffer in
            buffer.copyMemory(from: address)
            return inet_pton(AF_INET6, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), &parsed) == 1
        }
        guard ok else { return nil }
        count = 16
        withUnsafeMutableBytes(of: &storage) { target in Swift.withUnsafeBytes(of: &parsed) { target.copyMemory(from: $0) } }
    }

    /// IPv4's dotted quad as inet_pton(AF_INET) reads it: four decimal numbers of 0 to 255 with no
    /// leading zero, between three dots, nothing else. Read here: inet_pton and the copy its C string
    /// needed were ~250 instructions an address.
    static func dottedQuad(_ text: UnsafeRawBufferPointer) -> UInt32? {
        var value: UInt32 = 0, part: UInt32 = 0, digits = 0, parts = 0
        for c in text {
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                if digits > 0 && part == 0 { return nil }   // a leading zero
                part = part * 10 + UInt32(c &- UInt8(ascii: "0"))
                guard part <= 255 else { return nil }
                digits += 1
            } else if c == UInt8(ascii: ".") && digits > 0 && parts < 3 {
                value = value << 8 | part
                part = 0
                digits = 0
                parts += 1
            } else {
                return nil
            }
        }
        guard parts == 3, digits > 0 else { return nil }
        return value << 8 | part
    }

    /// The address's bytes.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        Swift.withUnsafeBytes(of: storage) { body(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }
}

/// `secure_scheme_headers`: request headers by which a trusted proxy says the client used https,
/// each with the exact value that means so (Gunicorn's default map).
public struct SecureSchemeHeaders: Equatable, Sendable {
    /// Lower-cased header names and the values meaning https (compared case-sensitively, as Gunicorn).
    public private(set) var entries: [(name: String, secureValue: String)]

    public static let gunicornDefault = SecureSchemeHeaders(entries: [
        ("x-forwarded-protocol", "ssl"), ("x-forwarded-proto", "https"), ("x-forwarded-ssl", "on"),
    ])

    public init(entries: [(name: String, secureValue: String)]) {
        self.entries = entries.map { ($0.name.lowercased(), $0.secureValue) }
    }

    public static func == (a: SecureSchemeHeaders, b: SecureSchemeHeaders) -> Bool {
        a.entries.map(\.name) == b.entries.map(\.name) && a.entries.map(\.secureValue) == b.entries.map(\.secureValue)
    }

    /// `NAME=VALUE,NAME=VALUE` (the command line's form); empty for none.
    init(parsing text: String, key: String) throws(ConfigError) {
        var entries: [(String, String)] = []
        for pair in text.split(separator: ",").map({ $0.trimmingWhitespace() }) where !pair.isEmpty {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw ConfigError.invalidValue(key: key, value: pair, reason: "expected HEADER=VALUE pairs, comma-separated")
            }
            entries.append((String(pair[..<eq]).trimmingWhitespace(), String(pair[pair.index(after: eq)...]).trimmingWhitespace()))
        }
        self.init(entries: entries)
    }

    mutating func set(name: String, secureValue: String) {
        entries.removeAll { $0.name == name.lowercased() }
        entries.append((name.lowercased(), secureValue))
    }
}

#if canImport(Glibc)
import Glibc
#endif
