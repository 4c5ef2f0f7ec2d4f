import AppServerConfig
import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

@Suite struct ForwardedHeadersTests {
    /// Parsed as a connection parses: the parser notes the fields that may have the policy's names.
    func read(_ pairs: [(String, String)], policy: EdgePolicy = EdgePolicy()) -> ForwardedHeaders.Outcome {
        let host = pairs.contains { $0.0.lowercased() == "host" } ? "" : "Host: x\r\n"
        var limits = HTTP1ParserLimits()
        limits.watchedNames = policy.watchedFieldNames
        let head = try! RequestHead(parsing: "GET / HTTP/1.1\r\n" + host + pairs.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n",
                                    limits: limits)
        return ForwardedHeaders.read(head.headers, policy: policy)
    }

    @Test func schemeFromGunicornsDefaultHeaders() {
        #expect(read([("Host", "x")]) == .none)
        #expect(read([("X-Forwarded-Proto", "https")]) == .origin(isSecure: true, client: nil))
        #expect(read([("x-forwarded-ssl", "on")]) == .origin(isSecure: true, client: nil))
        #expect(read([("X-Forwarded-Protocol", "ssl")]) == .origin(isSecure: true, client: nil))
        #expect(read([("X-Forwarded-Proto", "http")]) == .origin(isSecure: false, client: nil))
        // Values are compared exactly, as Gunicorn does.
        #expect(read([("X-Forwarded-Proto", "HTTPS")]) == .origin(isSecure: false, client: nil))
        guard case .contradictory = read([("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")]) else {
            Issue.record("contradicting headers were accepted"); return
        }
        #expect(read([("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")]) == .origin(isSecure: true, client: nil))
    }

    @Test func clientIsTheRightmostUntrustedHop() throws {
        #expect(read([("X-Forwarded-For", "203.0.113.9")]) == .origin(isSecure: false, client: "203.0.113.9"))
        // A client may send its own X-Forwarded-For: the proxy appends the real peer, which wins.
        #expect(read([("X-Forwarded-For", "1.1.1.1, 203.0.113.9")]) == .origin(isSecure: false, client: "203.0.113.9"))
        var policy = EdgePolicy()
        policy.forwardedAllow = try AddressAllowList(parsing: ["127.0.0.1,10.0.0.0/8"], key: "k")
        #expect(read([("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.0.0.5")], policy: policy) == .origin(isSecure: false, client: "203.0.113.9"))
        #expect(read([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.9, 10.0.0.5")], policy: policy)
                == .origin(isSecure: false, client: "203.0.113.9"))
        // Three fields, the first one empty: one list, in order.
        #expect(read([("X-Forwarded-For", ""), ("x-forwarded-for", "203.0.113.9"), ("X-Forwarded-For", "10.0.0.5, 10.0.0.6")], policy: policy)
                == .origin(isSecure: false, client: "203.0.113.9"))
        #expect(read([("X-Forwarded-For", "")]) == .none)
        // Every hop trusted: the farthest.
        #expect(read([("X-Forwarded-For", "10.0.0.1, 10.0.0.2")], policy: policy) == .origin(isSecure: false, client: "10.0.0.1"))
        // A hop that is no address is not trusted, and not the client; `*` trusts every hop, whatever it is.
        #expect(read([("X-Forwarded-For", "1.1.1.1, unknown, 10.0.0.5")], policy: policy) == .none)
        var any = EdgePolicy()
        any.forwardedAllow = try AddressAllowList(parsing: ["*"], key: "k")
        #expect(read([("X-Forwarded-For", "1.1.1.1, unknown, 10.0.0.5")], policy: any) == .origin(isSecure: false, client: "1.1.1.1"))
        #expect(read([("X-Forwarded-For", "unknown, 10.0.0.5")], policy: any) == .none)
        // Not an IP address: not taken.
        #expect(read([("X-Forwarded-For", "<script>")]) == .none)
        // Whitespace around a hop is not part of it; empty elements are no hops.
        #expect(read([("X-Forwarded-For", ",\t203.0.113.9 \t,,")]) == .origin(isSecure: false, client: "203.0.113.9"))
        #expect(read([("X-Forwarded-For", "203.0.113.9, \t ,127.0.0.1")]) == .none, "a blank hop is not trusted, nor an address")
        policy.proxyHeaders = false
        #expect(read([("X-Forwarded-For", "203.0.113.9")], policy: policy) == .none)
    }

    /// A peer's socket address is checked from its bytes: IPv4, IPv6, an IPv4-mapped IPv6 peer (a
    /// dual-stack listener's) as its IPv4 address, and any unix-socket peer.
    @Test func peersAreCheckedByTheirSocketAddress() throws {
        let list = try AddressAllowList(parsing: ["127.0.0.1,10.0.0.0/8,fd00::/8"], key: "k")
        #expect(list.allows(try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(!list.allows(try SocketAddress(ipAddress: "127.0.0.2", port: 1)))
        #expect(list.allows(try SocketAddress(ipAddress: "10.255.0.1", port: 1)))
        #expect(list.allows(try SocketAddress(ipAddress: "fd12::7", port: 1)))
        #expect(!list.allows(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(list.allows(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)))
        #expect(!list.allows(try SocketAddress(ipAddress: "::ffff:11.1.2.3", port: 1)))
        #expect(list.allows(try SocketAddress(unixDomainSocketPath: "/run/app.sock")))
        #expect(!list.allows(nil as SocketAddress?))
        #expect(try AddressAllowList(parsing: ["*"], key: "k").allows(try SocketAddress(ipAddress: "198.51.100.7", port: 1)))
    }

    @Test func customSchemeHeaders() {
        var policy = EdgePolicy()
        policy.secureSchemeHeaders = SecureSchemeHeaders(entries: [("X-Scheme", "https")])
        #expect(read([("X-Forwarded-Proto", "https")], policy: policy) == .none)
        #expect(read([("x-scheme", "https")], policy: policy) == .origin(isSecure: true, client: nil))
        // A long name: its length alone does not tell it from a longer one.
        let long = "X-" + String(repeating: "s", count: 70)
        policy.secureSchemeHeaders = SecureSchemeHeaders(entries: [(long, "on")])
        #expect(read([(long, "on")], policy: policy) == .origin(isSecure: true, client: nil))
        #expect(read([(long + "t", "on"), ("X-" + String(repeating: "s", count: 61), "on")], policy: policy) == .none)
        #expect(read([("X-Forwarded-For", "203.0.113.9")], policy: policy) == .origin(isSecure: false, client: "203.0.113.9"))
    }
}
