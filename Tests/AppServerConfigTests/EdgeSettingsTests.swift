#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import AppServerConfig

@Suite struct EdgeSettingsTests {
    @Test func bindSpecsTakeAnOptionalScheme() throws {
        #expect(try BindSpec(parsing: "127.0.0.1:8000") == BindSpec(.tcp(host: "127.0.0.1", port: 8000)))
        #expect(try BindSpec(parsing: "tcp://127.0.0.1:8000") == BindSpec(.tcp(host: "127.0.0.1", port: 8000)))
        #expect(try BindSpec(parsing: "unix:///run/a.sock") == BindSpec(.unix(path: "/run/a.sock")))
        #expect(try BindSpec(parsing: "uwsgi://127.0.0.1:3031") == BindSpec(.tcp(host: "127.0.0.1", port: 3031), scheme: ListenerScheme(.uwsgi)))
        #expect(try BindSpec(parsing: "uwsgi://unix:/run/u.sock") == BindSpec(.unix(path: "/run/u.sock"), scheme: ListenerScheme(.uwsgi)))
        #expect(try BindSpec(parsing: "http+proxy://[::1]:8443")
                == BindSpec(.tcp(host: "::1", port: 8443), scheme: ListenerScheme(.http, proxyProtocol: true)))
        #expect(try BindSpec(parsing: "uwsgi+proxy://:9000").description == "uwsgi+proxy://127.0.0.1:9000")
        #expect { try BindSpec(parsing: "https://127.0.0.1:1") } throws: { "\($0)".contains("unknown scheme 'https'") }
        #expect { try BindSpec(parsing: "uwsgi://127.0.0.1:99999") } throws: { "\($0)".contains("uwsgi://127.0.0.1:99999") }
    }

    /// Gunicorn's `fd://N`: a socket the server was started with, also behind a scheme.
    @Test func bindSpecsNameAPassedDescriptor() throws {
        #expect(try BindSpec(parsing: "fd://3") == BindSpec(.descriptor(3)))
        #expect(try BindSpec(parsing: " FD://12 ").description == "fd://12")
        #expect(try BindSpec(parsing: "uwsgi://fd://4") == BindSpec(.descriptor(4), scheme: ListenerScheme(.uwsgi)))
        #expect(try BindSpec(parsing: "uwsgi://fd://4").description == "uwsgi://fd://4")
        for bad in ["fd://", "fd://-1", "fd://3.0", "fd://x", "fd://99999999999"] {
            #expect { try BindSpec(parsing: bad) } throws: { "\($0)".contains("fd:// takes a descriptor number, like fd://3") }
        }
    }

    @Test func systemdSocketNamesMaySayTheScheme() {
        #expect(ListenerScheme(socketName: "uwsgi") == ListenerScheme(.uwsgi))
        #expect(ListenerScheme(socketName: "shop.uwsgi+proxy") == ListenerScheme(.uwsgi, proxyProtocol: true))
        #expect(ListenerScheme(socketName: "http+proxy") == ListenerScheme(.http, proxyProtocol: true))
        #expect(ListenerScheme(socketName: "appserver") == nil)
        #expect(ListenerScheme(socketName: "appserver.socket") == nil)
        #expect(ListenerScheme(socketName: "uwsgi+tls") == nil)
    }

    @Test func allowListsMatchAddressesNetworksAndAny() throws {
        let list = try AddressAllowList(parsing: ["127.0.0.1, 10.0.0.0/8", "fd00::/8"], key: "forwarded_allow_ips")
        #expect(list.allows("127.0.0.1"))
        #expect(!list.allows("127.0.0.2"))
        #expect(list.allows("10.200.3.4"))
        #expect(!list.allows("11.0.0.1"))
        #expect(list.allows("fd12::1"))
        #expect(!list.allows("fe80::1"))
        #expect(!list.allows("not-an-ip"))
        // A dual-stack listener's IPv4 peer, as ::ffff:a.b.c.d.
        #expect(list.allows(addressBytes: AddressAllowList.parseIP("::ffff:10.1.2.3")!))
        #expect(try AddressAllowList(parsing: ["*"], key: "k").allows("198.51.100.7"))
        #expect(try AddressAllowList(parsing: ["192.168.1.0/23"], key: "k").allows("192.168.0.200"))
        #expect(try !AddressAllowList(parsing: ["192.168.1.0/24"], key: "k").allows("192.168.0.200"))
        #expect(try AddressAllowList(parsing: ["0.0.0.0/0"], key: "k").allows("8.8.8.8"))
        #expect(try !AddressAllowList(parsing: [""], key: "k").allows("127.0.0.1"))
        #expect { try AddressAllowList(parsing: ["10.0.0.0/33"], key: "proxy_allow_ips") } throws: { "\($0)".contains("from 0 to 32") }
        #expect { try AddressAllowList(parsing: ["localhost"], key: "forwarded_allow_ips") } throws: { "\($0)".contains("'localhost' for 'forwarded_allow_ips'") }
    }

    /// The dotted quad is read by hand: it takes and refuses what inet_pton(AF_INET) does, over texts made
    /// of digits and dots (leading zeros, numbers past 255, parts missing or too many) and a few others.
    @Test func ipv4TextIsReadAsInetPtonReadsIt() {
        var state: UInt64 = 0x5EED
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        let alphabet = Array("0123456789.".utf8) + Array("0123456789.".utf8) + Array(" x-+".utf8)   // no ':', which is IPv6's
        var accepted = 0
        for index in 0..<20000 {
            var text: [UInt8]
            if index % 2 == 0 {
                // Near-addresses: 3 to 5 numbers of 0 to 3 digits.
                text = []
                for part in 0..<Int(3 + next() % 3) {
                    if part > 0 { text.append(UInt8(ascii: ".")) }
                    if next() % 10 == 0 { text.append(UInt8(ascii: "0")) }   // a leading zero, or a part of "0"
                    text += Array(String(next() % 300).utf8).prefix(Int(next() % 4))
                }
            } else {
                text = (0..<Int(next() % 17)).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] }
            }
            var parsed = in_addr()
            let expected: [UInt8]? = (String(decoding: text, as: UTF8.self).withCString { inet_pton(AF_INET, $0, &parsed) } == 1)
                ? withUnsafeBytes(of: &parsed) { Array($0) } : nil
            let got = text.withUnsafeBytes { AddressAllowList.parseIP($0) }
            #expect(got == expected, "\(String(decoding: text, as: UTF8.self).debugDescription)")
            if expected != nil { accepted += 1 }
        }
        #expect(accepted > 300, "too few texts were addresses to tell anything")
    }

    @Test func addressTextIsParsedFromItsBytes() {
        #expect(AddressAllowList.parseIP("203.0.113.9") == [203, 0, 113, 9])
        #expect(AddressAllowList.parseIP("[::1]") == [UInt8](repeating: 0, count: 15) + [1])
        #expect(AddressAllowList.parseIP("::ffff:10.1.2.3") == [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 10, 1, 2, 3])
        #expect(AddressAllowList.parseIP("0000:0000:0000:0000:0000:ffff:255.255.255.255")?.count == 16, "45 bytes, the longest form")
        for bad in ["", "[]", "[", "1.2.3", "1.2.3.4.5", "1.2.3.4 ", " 1.2.3.4", "[1.2.3.4]x", "::1]", "fe80::1%eth0", "localhost",
                    "1.2.3.4\u{0}", "1.2.3.4\u{0}5", String(repeating: "1", count: 80)] {
            #expect(AddressAllowList.parseIP(bad) == nil, "\(bad.debugDescription)")
        }
        let list = AddressAllowList.loopback
        for (text, allowed) in [("127.0.0.1", true), ("::1", true), ("[::1]", true), ("127.0.0.1\u{0}", false), ("10.0.0.1", false)] {
            var bytes = Array(text.utf8)
            #expect(bytes.withUnsafeMutableBytes { list.allows(UnsafeRawBufferPointer($0)) } == allowed, "\(text.debugDescription)")
        }
    }

    @Test func edgeSettingsFromFileAndCommandLine() throws {
        var config = ServerConfig()
        #expect(config.forwardedAllowIPs.allows("::1") && !config.forwardedAllowIPs.allows("10.0.0.1"))
        #expect(config.secureSchemeHeaders == .gunicornDefault)
        try config.set("protocol", .string("uwsgi"), source: "test")
        #expect(config.protocolName == .uwsgi)
        try config.set("proxy-protocol", .string("true"), source: "test")
        #expect(config.proxyProtocol == .auto)
        try config.set("proxy_protocol", .boolean(false), source: "test")
        #expect(config.proxyProtocol == .off)
        try config.set("proxy_protocol", .string("v2"), source: "test")
        #expect(config.proxyProtocol == .v2)
        #expect { try config.set("proxy_protocol", .string("v3"), source: "test") } throws: { "\($0)".contains("off, v1, v2, auto") }
        try config.set("uwsgi_allow_from", .string("*"), source: "test")
        #expect(config.uwsgiAllowIPs.allowsAny)
        try config.set("header_map", .string("refuse"), source: "test")
        #expect(config.headerMap == .refuse)
        try config.set("proxy_headers", .string("false"), source: "test")
        #expect(config.proxyHeaders == false)
        for (text, mask) in [("0", 0), ("0o007", 7), ("007", 7), ("0x1F", 31), ("18", 18), ("0022", 18)] {
            try config.set("umask", .string(text), source: "test")
            #expect(config.umask == mode_t(mask))
        }
        #expect { try config.set("umask", .string("0o1000"), source: "test") } throws: { "\($0)".contains("mask") }
        try config.set("secure_scheme_headers", .string("X-SCHEME=https, Front-End-Https=on"), source: "test")
        #expect(config.secureSchemeHeaders.entries.map(\.name) == ["x-scheme", "front-end-https"])
    }

    @Test func aSecureSchemeHeadersTableReplacesTheDefault() throws {
        let file = "/tmp/appserver-edge-\(getpid()).toml"
        try """
            protocol = "uwsgi"
            forwarded_allow_ips = ["10.0.0.0/8", "127.0.0.1"]
            [secure_scheme_headers]
            X-Forwarded-Proto = "https"
            X-Scheme = "https"
            """.write(toFile: file, atomically: false, encoding: .utf8)
        defer { unlink(file) }
        var config = ServerConfig()
        try config.load(file: file)
        #expect(config.secureSchemeHeaders.entries.map(\.name) == ["x-forwarded-proto", "x-scheme"])
        #expect(config.forwardedAllowIPs.allows("10.9.9.9"))
    }
}

import Foundation
