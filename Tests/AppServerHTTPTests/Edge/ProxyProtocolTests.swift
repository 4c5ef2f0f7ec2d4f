import AppServerConfig
import NIOCore
import Testing
@testable import AppServerHTTP

@Suite struct ProxyHeaderParserTests {
    func parse(_ bytes: [UInt8], _ mode: ProxyProtocolMode = .auto) -> ProxyHeaderParser.Outcome {
        bytes.withUnsafeBytes { ProxyHeaderParser.parse($0, mode: mode) }
    }

    func v2(command: UInt8 = 1, family: UInt8, addresses: [UInt8], tlvs: [UInt8] = []) -> [UInt8] {
        let body = addresses + tlvs
        return ProxyHeaderParser.v2Signature + [0x20 | command, family, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    @Test func version1() {
        let line = Array("PROXY TCP4 203.0.113.7 127.0.0.1 56324 8000\r\nGET / HTTP/1.1\r\n".utf8)
        #expect(parse(line) == .header(ProxyHeader(source: ("203.0.113.7", 56324), destination: ("127.0.0.1", 8000)), length: 45))
        #expect(parse(Array("PROXY TCP6 2001:db8::1 ::1 1 443\r\n".utf8))
                == .header(ProxyHeader(source: ("2001:db8::1", 1), destination: ("::1", 443)), length: 34))
        #expect(parse(Array("PROXY UNKNOWN\r\n".utf8)) == .header(ProxyHeader(), length: 15))
        #expect(parse(Array("PROXY TCP4 1.2.3.4 5.6.7.8 1".utf8)) == .needMore)
        #expect(parse(Array("PRO".utf8)) == .needMore)
    }

    @Test(arguments: [
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",     // port out of range
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",        // leading zero
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",             // family mismatch
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",           // a field missing
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",        // two spaces
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",           // no CR
        "GET / HTTP/1.1\r\n",                          // no header at all
    ])
    func version1Refusals(line: String) {
        guard case .invalid = parse(Array(line.utf8)) else {
            Issue.record("accepted \(line.debugDescription)")
            return
        }
    }

    @Test func version1LineTooLong() {
        let line = Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8)
        #expect(parse(line) == .invalid("a version 1 header longer than 107 bytes"))
    }

    @Test func version2() {
        let tcp4 = v2(family: 0x11, addresses: [203, 0, 113, 7, 127, 0, 0, 1, 0xdc, 0x04, 0x1f, 0x40])
        #expect(parse(tcp4 + Array("GET".utf8)) == .header(ProxyHeader(source: ("203.0.113.7", 56324), destination: ("127.0.0.1", 8000)), length: 28))
        #expect(parse(Array(tcp4.prefix(20))) == .needMore)
        var six = [UInt8](repeating: 0, count: 36)
        six[0] = 0x20; six[1] = 0x01; six[2] = 0x0d; six[3] = 0xb8; six[15] = 1; six[31] = 1; six[33] = 80; six[35] = 80
        #expect(parse(v2(family: 0x21, addresses: six)) == .header(ProxyHeader(source: ("2001:db8::1", 80), destination: ("::1", 80)), length: 52))
        // LOCAL (a proxy's health check): the connection's own addresses stand.
        #expect(parse(v2(command: 0, family: 0x00, addresses: [])) == .header(ProxyHeader(), length: 16))
        // The SSL TLV with PP2_CLIENT_SSL, after a NOOP TLV.
        let tls = v2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], tlvs: [0x04, 0, 1, 0, 0x20, 0, 5, 0x01, 0, 0, 0, 0])
        guard case .header(let header, _) = parse(tls) else { Issue.record("refused"); return }
        #expect(header.clientUsedTLS)
    }

    @Test func version2Refusals() {
        var bad = v2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])
        bad[12] = 0x11   // version 1 in the version nibble
        #expect(parse(bad) == .invalid("a version 2 header of unknown version 1"))
        #expect(parse(v2(command: 2, family: 0x11, addresses: [])) == .invalid("a version 2 header with unknown command 2"))
        #expect(parse(v2(family: 0x12, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])) != .needMore)   // UDP
        #expect(parse(v2(family: 0x11, addresses: [1, 2, 3])) == .invalid("a version 2 header too short for its IPv4 addresses"))
        #expect(parse(v2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], tlvs: [0x20, 0, 9, 1])) == .invalid("a version 2 header with a truncated TLV"))
    }

    @Test func modesAcceptOnlyTheirVersion() {
        let v1 = Array("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".utf8)
        let two = v2(family: 0x11, addresses: [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])
        #expect(parse(v1, .v2) == .invalid("a version 1 header where version 2 is expected"))
        #expect(parse(two, .v1) == .invalid("a version 2 header where version 1 is expected"))
        guard case .header = parse(v1, .v1), case .header = parse(two, .v2) else { Issue.record("refused its own version"); return }
    }
}
