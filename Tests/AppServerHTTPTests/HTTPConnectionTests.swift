import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing
@testable import AppServerHTTP

/// Answers each request with its path, on the same thread (the I/O side runs in an EmbeddedChannel).
final class EchoPathApplication: HTTPApplication, @unchecked Sendable {
    let pending = Mutex<[HTTPExchange]>([])
    var answerImmediately = true
    /// Puts each exchange off until the tick's reads are done (as sync mode does), noting the calls.
    var putOff = false
    let afterReadsCalls = Mutex<[String]>([])

    func handle(_ exchange: HTTPExchange) {
        if putOff { exchange.handleAfterReads(); return }
        if answerImmediately { answer(exchange) } else { pending.withLock { $0.append(exchange) } }
    }

    func handleAfterReads(_ exchange: HTTPExchange) {
        afterReadsCalls.withLock { $0.append("after \(exchange.request.uri)") }
        answer(exchange)
    }

    func afterReadsHandled() {
        afterReadsCalls.withLock { $0.append("handled") }
    }

    func answer(_ exchange: HTTPExchange) {
        var writer = ResponseWriter(request: exchange.request, allocator: exchange.allocator, drain: exchange.serverIsDraining)
        var status = "200 OK"
        try! status.withUTF8 { try writer.begin(status: UnsafeRawBufferPointer($0)) }
        var body = exchange.request.uri
        var out = writer.finishHead(knownLength: Int64(body.utf8.count))
        body.withUTF8 { _ = writer.appendBody(UnsafeRawBufferPointer($0), to: &out) }
        _ = try! exchange.send(out, end: true, close: writer.closeConnection)
    }
}

/// A connection of a test server in an EmbeddedChannel, connected first (its peer is known when its
/// pipeline is made, as after accept).
func makeChannel(_ app: EchoPathApplication, limits: HTTPLimits = HTTPLimits(), listener: ListenerOptions = ListenerOptions(descriptor: -1),
                 edge: EdgePolicy = EdgePolicy(), peer: String = "127.0.0.1") throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    try channel.connect(to: SocketAddress(ipAddress: peer, port: 4000)).wait()
    let server = HTTPServer(application: app, limits: limits, edge: edge, eventLoop: channel.embeddedEventLoop,
                            logger: Logger(label: "test"), onRequestFinished: { _, _, _ in })
    try server.configureForTesting(channel, listener: listener)
    return channel
}

/// Everything the connection wrote so far, as text.
func output(_ channel: EmbeddedChannel) throws -> String {
    channel.embeddedEventLoop.run()
    var text = ""
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
    return text
}

@Suite struct HTTPConnectionTests {
    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let app = EchoPathApplication()
        app.answerImmediately = false
        let channel = try makeChannel(app)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"))
        // Only the first request reaches the app until it is answered.
        #expect(app.pending.withLock { $0.count } == 1)
        for _ in 0..<3 {
            let next = app.pending.withLock { $0.removeFirst() }
            app.answer(next)
            channel.embeddedEventLoop.run()
        }
        let text = try output(channel)
        let bodies = text.components(separatedBy: "\r\n\r\n").dropFirst().map { $0.prefix(2) }
        #expect(bodies == ["/a", "/b", "/c"])
    }

    @Test(arguments: [
        ("GARBAGE\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        ("GET /" + String(repeating: "a", count: 5000) + " HTTP/1.1\r\n\r\n", "414"),
        ("GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 9000) + "\r\n\r\n", "431"),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", "413"),
        ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"),
        ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "400"),
    ])
    func badRequestsGetTheirStatusAndClose(request: String, status: String) throws {
        var limits = HTTPLimits()
        limits.requestBody = 1000
        let channel = try makeChannel(EchoPathApplication(), limits: limits)
        _ = try? channel.writeInbound(ByteBuffer(string: request))
        let text = try output(channel)
        #expect(text.hasPrefix("HTTP/1.1 \(status) "), "\(text.prefix(60))")
        #expect(text.contains("Connection: close"))
        #expect(!channel.isActive)
    }

    @Test func putOffExchangesRunAfterTheTicksReadsAndTheBatchEndsOnce() throws {
        let app = EchoPathApplication()
        app.putOff = true
        let loop = EmbeddedEventLoop()
        let server = HTTPServer(application: app, limits: HTTPLimits(), edge: EdgePolicy(), eventLoop: loop,
                                logger: Logger(label: "test"), onRequestFinished: { _, _, _ in })
        var channels: [EmbeddedChannel] = []
        for path in ["/a", "/b"] {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
            try server.configureForTesting(channel)
            try channel.writeInbound(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n"))
            channels.append(channel)
        }
        #expect(app.afterReadsCalls.withLock { $0 } == [])   // nothing ran inside the reads
        loop.run()
        // Both of the tick's requests, then one end of the batch (sync mode gives the GIL back there).
        #expect(app.afterReadsCalls.withLock { $0 } == ["after /a", "after /b", "handled"])
        #expect(try output(channels[0]).hasSuffix("/a"))
        #expect(try output(channels[1]).hasSuffix("/b"))
        // A tick with nothing put off ends no batch.
        app.putOff = false
        try channels[0].writeInbound(ByteBuffer(string: "GET /c HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try output(channels[0]).hasSuffix("/c"))
        #expect(app.afterReadsCalls.withLock { $0 }.count == 3)
    }

    @Test func keepAliveTimerClosesIdleConnection() throws {
        var limits = HTTPLimits()
        limits.keepAlive = 2
        let channel = try makeChannel(EchoPathApplication(), limits: limits)
        try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try output(channel).hasSuffix("/x"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    @Test func headerTimeoutAnswers408() throws {
        var limits = HTTPLimits()
        limits.headerTimeout = 5
        let channel = try makeChannel(EchoPathApplication(), limits: limits)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost:"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(try output(channel).hasPrefix("HTTP/1.1 408 "))
        #expect(!channel.isActive)
    }
}
