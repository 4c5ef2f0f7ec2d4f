import AppServerConfig
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
@testable import AppServerHTTP

/// Connections of uwsgi and PROXY listeners, and trusted proxies' headers, through the real pipeline.
@Suite struct EdgeConnectionTests {
    @Test func uwsgiRequestIsServedWithoutChunksAndCloses() throws {
        let app = EchoPathApplication()
        app.answerImmediately = false
        let channel = try makeChannel(app, listener: ListenerOptions(descriptor: -1, protocolName: .uwsgi))
        try channel.writeInbound(ByteBuffer(bytes: uwsgiPacket([
            ("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/up"), ("CONTENT_LENGTH", "5"), ("HTTPS", "on"),
            ("REMOTE_ADDR", "198.51.100.4"), ("REMOTE_PORT", "1234"), ("HTTP_CONNECTION", "keep-alive"),
        ], body: "hello")))
        let exchange = try #require(app.pending.withLock { $0.first })
        #expect(exchange.request.viaUWSGI && exchange.request.isSecure && !exchange.request.keepAlive)
        #expect(exchange.request.origin?.client?.host == "198.51.100.4")
        #expect(exchange.request.contentLength == 5)
        var writer = ResponseWriter(request: exchange.request, allocator: exchange.allocator, drain: false)
        var status = "200 OK"
        try status.withUTF8 { try writer.begin(status: UnsafeRawBufferPointer($0)) }
        var out = writer.finishHead(knownLength: nil)
        #expect(writer.framing == .closeDelimited)
        var body = "streamed"
        body.withUTF8 { _ = writer.appendBody(UnsafeRawBufferPointer($0), to: &out) }
        writer.finishBody(into: &out)
        _ = try exchange.send(out, end: true, close: writer.closeConnection)
        let text = try output(channel)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.hasSuffix("\r\n\r\nstreamed"))
        #expect(!text.lowercased().contains("transfer-encoding") && !text.lowercased().contains("connection:"))
        #expect(!channel.isActive)
    }

    @Test func httpOnAUWSGIListenerIsAnsweredAndClosed() throws {
        let channel = try makeChannel(EchoPathApplication(), listener: ListenerOptions(descriptor: -1, protocolName: .uwsgi))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        let text = try output(channel)
        #expect(text.hasPrefix("HTTP/1.1 400 ") && text.contains("uwsgi_pass"))
        #expect(!channel.isActive)
    }

    @Test func uwsgiFromAPeerNotAllowedIsClosed() throws {
        let channel = try makeChannel(EchoPathApplication(), listener: ListenerOptions(descriptor: -1, protocolName: .uwsgi), peer: "192.0.2.1")
        try channel.writeInbound(ByteBuffer(bytes: uwsgiPacket([("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")])))
        #expect(try output(channel).isEmpty)
        #expect(!channel.isActive)
    }

    @Test func proxyHeaderGivesTheClientsAddress() throws {
        let app = EchoPathApplication()
        app.answerImmediately = false
        let channel = try makeChannel(app, listener: ListenerOptions(descriptor: -1, proxyProtocol: .auto))
        // The header and the request may arrive in pieces.
        try channel.writeInbound(ByteBuffer(string: "PROXY TCP4 203.0.113.7 127.0.0.1 5632"))
        try channel.writeInbound(ByteBuffer(string: "4 8000\r\nGET /a HTTP/1.1\r\nHost: x\r\n"))
        try channel.writeInbound(ByteBuffer(string: "X-Forwarded-For: 10.1.1.1\r\n\r\n"))
        let exchange = try #require(app.pending.withLock { $0.first })
        #expect(exchange.request.remoteAddress?.ipAddress == "203.0.113.7" && exchange.request.remoteAddress?.port == 56324)
        #expect(exchange.request.localAddress?.port == 8000)
        // The client (not the proxy) is who sent X-Forwarded-For: not trusted.
        #expect(exchange.request.origin == nil)
    }

    @Test func connectionWithoutAProxyHeaderIsRefused() throws {
        let channel = try makeChannel(EchoPathApplication(), listener: ListenerOptions(descriptor: -1, proxyProtocol: .v1))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try output(channel).isEmpty)
        #expect(!channel.isActive)
    }

    @Test func proxyHeaderFromAPeerNotAllowedIsRefused() throws {
        let channel = try makeChannel(EchoPathApplication(), listener: ListenerOptions(descriptor: -1, proxyProtocol: .auto), peer: "192.0.2.1")
        try channel.writeInbound(ByteBuffer(string: "PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try output(channel).isEmpty)
        #expect(!channel.isActive)
    }

    @Test func trustedProxyHeadersSetSchemeAndClient() throws {
        let app = EchoPathApplication()
        app.answerImmediately = false
        let channel = try makeChannel(app)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"))
        let exchange = try #require(app.pending.withLock { $0.first })
        #expect(exchange.request.isSecure)
        #expect(exchange.request.origin?.client?.host == "203.0.113.9")
    }

    @Test func untrustedPeersHeadersAreIgnored() throws {
        let app = EchoPathApplication()
        app.answerImmediately = false
        let channel = try makeChannel(app, peer: "192.0.2.50")
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"))
        let exchange = try #require(app.pending.withLock { $0.first })
        #expect(!exchange.request.isSecure && exchange.request.origin == nil)
    }

    @Test func contradictingSchemeHeadersAre400() throws {
        let channel = try makeChannel(EchoPathApplication())
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n"))
        #expect(try output(channel).hasPrefix("HTTP/1.1 400 "))
    }

    @Test func headerMapRefuseAnswers400() throws {
        var edge = EdgePolicy()
        edge.headerMap = .refuse
        let channel = try makeChannel(EchoPathApplication(), edge: edge)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n"))
        #expect(try output(channel).hasPrefix("HTTP/1.1 400 "))
    }
}

extension EdgeConnectionTests {
    @Test func proxyHeaderAndRequestInOneRead() throws {
        let app = EchoPathApplication()
        let channel = try makeChannel(app, listener: ListenerOptions(descriptor: -1, proxyProtocol: .v1))
        try channel.writeInbound(ByteBuffer(string: "PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
        let text = try output(channel)
        #expect(text.hasPrefix("HTTP/1.1 200 OK") && text.hasSuffix("/a"))
    }
}
