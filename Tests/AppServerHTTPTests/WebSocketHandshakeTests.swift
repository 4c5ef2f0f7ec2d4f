import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

@Suite struct WebSocketHandshakeTests {
    @Test func sha1MatchesKnownDigests() {
        func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        // Two blocks of padding.
        #expect(hex(SHA1.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))) == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
    }

    @Test func base64RoundTrips() {
        #expect(Base64.encode(Array("user:pass".utf8)) == "dXNlcjpwYXNz")
        #expect(Base64.encode([0xff]) == "/w==")
        #expect(Base64.decode("dXNlcjpwYXNz") == "user:pass")
    }

    @Test func acceptKeyOfTheRFCExample() throws {
        let requestHead = try RequestHead(parsing: "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            + "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n")
        let request = RequestInfo(head: requestHead,
                                  keepAlive: true, hasBody: false, contentLength: nil, remoteAddress: nil, localAddress: nil)
        #expect(WebSocketHandshake.isUpgradeRequest(request))
        #expect(WebSocketHandshake.subprotocols(request) == ["chat", "superchat"])
        var head = WebSocketHandshake.acceptResponse(for: request, subprotocol: "chat", headers: [], allocator: ByteBufferAllocator())
        let text = head.readString(length: head.readableBytes)!
        #expect(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(text.contains("Sec-WebSocket-Protocol: chat\r\n") && text.hasSuffix("\r\n\r\n"))
    }
}
