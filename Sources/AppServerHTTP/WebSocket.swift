import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// A whole websocket message (fragments already joined).
public enum WebSocketMessage: Sendable {
    case text(ByteBuffer)
    case binary(ByteBuffer)

    public var size: Int {
        switch self {
        case .text(let buffer), .binary(let buffer): return buffer.readableBytes
        }
    }
}

/// What the app side hears from a websocket, on the I/O thread.
public protocol WebSocketDelegate: AnyObject, Sendable {
    func webSocketReceived(_ message: WebSocketMessage)
    /// The peer closed (the code of its close frame, 1005 without one), the connection was lost
    /// (1006), or a message broke the limits (1009) or the protocol (1002).
    func webSocketClosed(code: Int, reason: String)
    func webSocketDrained()
}

/// The websocket opening handshake (RFC 6455 4.2).
public enum WebSocketHandshake {
    /// A GET asking to upgrade to websocket version 13, with a key.
    public static func isUpgradeRequest(_ request: RequestInfo) -> Bool {
        let headers = request.headers
        // The parser saw `Connection: upgrade` and an Upgrade field: without them (every plain
        // request) nothing below is read.
        return request.head.parsed.upgrade && request.head.methodIs("GET")
            && headers.tokens(name: "upgrade").contains { $0.lowercased() == "websocket" }
            && headers.tokens(name: "connection").contains { $0.lowercased() == "upgrade" }
            && headers.first(name: "sec-websocket-version") == "13"
            && headers.first(name: "sec-websocket-key") != nil
    }

    /// The subprotocols the client offers, in its order.
    public static func subprotocols(_ request: RequestInfo) -> [String] {
        request.headers.tokens(name: "sec-websocket-protocol")
    }

    /// The `101 Switching Protocols` head accepting the request.
    public static func acceptResponse(for request: RequestInfo, subprotocol: String?, headers: [(name: [UInt8], value: [UInt8])],
                                      allocator: ByteBufferAllocator) -> ByteBuffer {
        let key = request.headers.first(name: "sec-websocket-key") ?? ""
        let accept = Base64.encode(SHA1.hash(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
        var head = allocator.buffer(capacity: 256)
        head.writeString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n")
        if let subprotocol { head.writeString("Sec-WebSocket-Protocol: \(subprotocol)\r\n") }
        for (name, value) in headers where !name.isEmpty && !value.contains(13) && !value.contains(10) {
            let lower = String(decoding: name, as: UTF8.self).lowercased()
            if ["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "content-length", "transfer-encoding"].contains(lower) { continue }
            head.writeBytes(name)
            head.writeStaticString(": ")
            head.writeBytes(value)
            head.writeStaticString("\r\n")
        }
        head.writeStaticString("Server: appserver\r\n\r\n")
        return head
    }
}

/// A websocket after the handshake. The app side sends from any thread; the socket is only touched
/// on the connection's event loop. Incoming messages the app has not taken yet hold back reading
/// from the socket beyond `inboundHighWater` bytes.
public final class WebSocketConnection: @unchecked Sendable {
    let eventLoop: any EventLoop
    let maxMessageSize: Int
    weak var delegate: (any WebSocketDelegate)?
    /// Set on the event loop by the upgrade.
    var handler: WebSocketHandler?
    private let lock = Monitor()
    private var pendingOut = 0       // guarded by `lock`
    private var pendingIn = 0        // guarded by `lock`
    private var closed = false       // guarded by `lock`
    private static let outboundHighWater = 1 << 20
    private static let outboundLowWater = 256 << 10
    static let inboundHighWater = 1 << 20

    init(eventLoop: any EventLoop, maxMessageSize: Int, delegate: any WebSocketDelegate) {
        self.eventLoop = eventLoop
        self.maxMessageSize = maxMessageSize
        self.delegate = delegate
    }

    /// Queues a message; true when the caller should wait for `webSocketDrained` before the next.
    /// False, and nothing sent, once the websocket is closed.
    public func send(_ message: WebSocketMessage) -> Bool {
        let size = message.size
        let mustWait = lock.withLock { () -> Bool? in
            if closed { return nil }
            pendingOut += size
            return pendingOut > Self.outboundHighWater
        }
        guard let mustWait else { return false }
        eventLoop.execute { self.handler?.send(message, size: size) }
        return mustWait
    }

    /// Sends a close frame, then closes the connection once the peer answered (or after a while).
    public func close(code: Int, reason: String) {
        eventLoop.execute { self.handler?.startClosing(code: code, reason: reason) }
    }

    /// The app took an incoming message of `size` bytes.
    public func consumed(_ size: Int) {
        let resume = lock.withLock { () -> Bool in
            let before = pendingIn
            pendingIn -= size
            return before > Self.inboundHighWater && pendingIn <= Self.inboundHighWater
        }
        if resume { eventLoop.execute { self.handler?.resumeReading() } }
    }

    // MARK: event loop side

    /// A message of `size` bytes went to the app (reading pauses while too much waits; see `readingPaused`).
    func received(_ size: Int) {
        lock.withLock { pendingIn += size }
    }

    var readingPaused: Bool { lock.withLock { pendingIn > Self.inboundHighWater } }

    func didWrite(_ size: Int) {
        let drained = lock.withLock { () -> Bool in
            let before = pendingOut
            pendingOut -= size
            return before > Self.outboundLowWater && pendingOut <= Self.outboundLowWater
        }
        if drained { delegate?.webSocketDrained() }
    }

    func markClosed() {
        lock.withLock { closed = true }
    }
}

extension HTTPExchange {
    /// Accepts a websocket upgrade: writes `head` (the 101 response) and turns the connection into a
    /// websocket whose messages go to `delegate`.
    public func upgradeToWebSocket(head: ByteBuffer, maxMessageSize: Int, delegate: any WebSocketDelegate) -> WebSocketConnection {
        let webSocket = WebSocketConnection(eventLoop: eventLoop, maxMessageSize: maxMessageSize, delegate: delegate)
        let connection = self.connection
        eventLoop.execute {
            connection.value.upgradeToWebSocket(self, head: head, webSocket: webSocket)
        }
        return webSocket
    }
}

/// The websocket's end of the pipeline: whole messages in, frames out, ping answered, the closing
/// handshake, and the close codes for messages over the size limit or against the protocol.
final class WebSocketHandler: ChannelDuplexHandler, ServerConnection {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let connection: WebSocketConnection
    private unowned let server: HTTPServer
    private var context: ChannelHandlerContext!
    /// We sent a close frame: the next close frame from the peer ends the connection.
    private var closing = false
    private var reported = false
    private var readPending = false
    var deadline = SweptDeadline()

    init(connection: WebSocketConnection, server: HTTPServer) {
        self.connection = connection
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connection.handler = self
        server.register(self)
        server.metrics?.webSocketOpened()
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.metrics?.webSocketClosed()
        connection.markClosed()
        report(code: 1006, reason: "")
        connection.handler = nil
        server.unregister(self)
        context.fireChannelInactive()
    }

    /// The context holds this handler (see HTTPConnectionHandler's).
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            guard !closing else { return }
            let payload = frame.unmaskedData
            connection.received(payload.readableBytes)
            connection.delegate?.webSocketReceived(frame.opcode == .text ? .text(payload) : .binary(payload))
        case .ping:
            guard !closing else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self).map(Int.init) ?? 1005
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            connection.markClosed()
            report(code: code, reason: reason)
            if closing {
                context.close(promise: nil)
            } else {
                // Answer with the same code, then close (the server closes the TCP connection first).
                closing = true
                var echo = context.channel.allocator.buffer(capacity: 2)
                if code != 1005 { echo.writeInteger(UInt16(code)) }
                context.writeAndFlushThenClose(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: echo)))
            }
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A message over the size limit, or frames against the protocol.
        let code: Int
        switch error {
        case NIOWebSocketError.invalidFrameLength, NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge,
             NIOWebSocketFrameAggregator.Error.tooManyFragments:
            code = 1009
        default:
            code = 1002
        }
        connection.markClosed()
        report(code: code, reason: "")
        if !closing {
            closing = true
            var payload = context.channel.allocator.buffer(capacity: 2)
            payload.writeInteger(UInt16(code))
            context.writeAndFlushThenClose(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)))
        } else {
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        if connection.readingPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    func resumeReading() {
        guard readPending, !connection.readingPaused, let context else { return }
        readPending = false
        context.read()
    }

    func send(_ message: WebSocketMessage, size: Int) {
        guard !closing, let context else {
            connection.didWrite(size)
            return
        }
        let frame: WebSocketFrame
        switch message {
        case .text(let buffer): frame = WebSocketFrame(fin: true, opcode: .text, data: buffer)
        case .binary(let buffer): frame = WebSocketFrame(fin: true, opcode: .binary, data: buffer)
        }
        let connection = self.connection
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in connection.didWrite(size) }
    }

    /// The app (or a draining server) closes: a close frame, then the peer's answer or a timeout.
    func startClosing(code: Int, reason: String) {
        guard !closing, let context else { return }
        closing = true
        connection.markClosed()
        var payload = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        payload.writeInteger(UInt16(clamping: code))
        payload.writeString(String(reason.utf8.prefix(123)) ?? "")
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)), promise: nil)
        deadline.arm(seconds: 5)
    }

    private func report(code: Int, reason: String) {
        guard !reported else { return }
        reported = true
        connection.delegate?.webSocketClosed(code: code, reason: reason)
    }

    // MARK: ServerConnection

    /// The server stops: 1012 (service restart), as Uvicorn does.
    func drain() {
        startClosing(code: 1012, reason: "server restarting")
        report(code: 1012, reason: "server restarting")
    }

    func deadlinePassed() {
        context?.close(promise: nil)
    }
}
