import NIOCore
import Testing
@testable import AppServerHTTP

/// What a connection's first read says about the wrong kind of client, from the six bytes kept of it.
@Suite struct FirstBytesTests {
    func noted(_ reads: [[UInt8]]) -> FirstBytes {
        var first = FirstBytes()
        for read in reads { first.note(ByteBuffer(bytes: read)) }
        return first
    }

    @Test func httpGetsNoHint() {
        #expect(noted([Array("GET / HTTP/1.1\r\n".utf8)]).mismatchHint == nil)
        #expect(noted([]).mismatchHint == nil)
        #expect(noted([[]]).mismatchHint == nil)
    }

    @Test func aUWSGIPacketIsNamed() {
        #expect(noted([[0, 0x40, 0x01, 0]]).mismatchHint?.contains("uwsgi packet") == true)
    }

    @Test func proxyHeadersAreNamedFromTheirFirstBytesOnly() {
        #expect(noted([Array("PROXY TCP4 1.2.3.4".utf8)]).mismatchHint?.contains("PROXY protocol") == true)
        #expect(noted([Array(ProxyHeaderParser.v2Signature)]).mismatchHint?.contains("PROXY protocol") == true)
        // Three bytes of a v1 header are enough to tell.
        #expect(noted([Array("PRO".utf8)]).mismatchHint?.contains("PROXY protocol") == true)
    }

    @Test func onlyTheFirstReadCounts() {
        // The first read was HTTP: a later uwsgi-looking read does not change what the connection was.
        #expect(noted([Array("GET".utf8), [0, 1, 2]]).mismatchHint == nil)
        #expect(noted([[0], Array("GET / ".utf8)]).mismatchHint?.contains("uwsgi packet") == true)
    }
}
