#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// What the app sees of a request head, fixed when the head has been read. A class: it is handed
/// around several times per request, and one reference is cheaper than copying its fields.
public final class RequestInfo: @unchecked Sendable {
    /// The head's own bytes: the app gets them exactly (`head.headers`, `head.withTarget`).
    public let head: RequestHead
    public var method: String { head.method }
    /// The target as text, for logs (`head.withTarget` for its exact bytes).
    public var uri: String { head.uri }
    public var version: HTTPVersion { head.version }
    /// A copy (a retain of the head's bytes and fields); a request's hot path reads `head.headers` in place.
    public var headers: RequestHeaders { head.headers }
    /// The client allows another request on this connection after this one.
    public let keepAlive: Bool
    public let isHead: Bool
    public let hasBody: Bool
    public let contentLength: Int64?
    /// The client's and the server's address: the socket's, or those a PROXY protocol header gave.
    public let addresses: ConnectionAddresses
    public var remoteAddress: SocketAddress? { addresses.remote }
    public var localAddress: SocketAddress? { addresses.local }
    /// What a trusted proxy said about the request (scheme, client), or what a uwsgi packet carried;
    /// nil for a request that came straight from its client.
    public let origin: RequestOrigin?
    /// The request came as a uwsgi packet: its response is never chunked and closes the connection.
    public let viaUWSGI: Bool
    /// Its peer is in forwarded_allow_ips: the WSGI environ takes its SCRIPT_NAME header (Gunicorn's
    /// forwarder_headers) as where the app is mounted.
    public let fromTrustedForwarder: Bool
    /// When the head was complete, for the request time (set once, before sharing). Its wall-clock
    /// time, for the access log, is worked out when a line is written (AccessLogRecord): a second
    /// clock read every request, for a log most servers do not keep.
    public internal(set) var started: Monotonic
    /// The request id (RequestID): the one the request carried, or the serial of one made here (0: none).
    private let carriedRequestID: String?
    public let madeRequestID: UInt64
    public var requestIDMade: Bool { madeRequestID != 0 }
    /// The request id as text (made ids are formatted when asked for: most requests never are).
    public var requestID: String? { carriedRequestID ?? (madeRequestID != 0 ? RequestID.made(madeRequestID) : nil) }

    public convenience init(head: RequestHead, keepAlive: Bool, hasBody: Bool, contentLength: Int64?,
                            remoteAddress: SocketAddress?, localAddress: SocketAddress?, origin: RequestOrigin? = nil, viaUWSGI: Bool = false,
                            fromTrustedForwarder: Bool = false, requestIDHeader: [UInt8]? = nil) {
        self.init(head: head, keepAlive: keepAlive, hasBody: hasBody, contentLength: contentLength,
                  addresses: ConnectionAddresses(remote: remoteAddress, local: localAddress), origin: origin, viaUWSGI: viaUWSGI,
                  fromTrustedForwarder: fromTrustedForwarder, requestIDHeader: requestIDHeader)
    }

    public init(head: RequestHead, keepAlive: Bool, hasBody: Bool, contentLength: Int64?,
                addresses: ConnectionAddresses, origin: RequestOrigin? = nil, viaUWSGI: Bool = false,
                fromTrustedForwarder: Bool = false, requestIDHeader: [UInt8]? = nil) {
        // The calls first, the stores after: a reference stored before a call was kept alive across it
        // (a retain and a release more each).
        self.started = .now()
        self.isHead = head.methodIs("HEAD")
        if let requestIDHeader {
            carriedRequestID = RequestID.carried(in: head.headers, lowercasedName: requestIDHeader)
            madeRequestID = carriedRequestID == nil ? RequestID.nextSerial() : 0
        } else {
            carriedRequestID = nil
            madeRequestID = 0
        }
        self.origin = origin
        self.viaUWSGI = viaUWSGI
        self.fromTrustedForwarder = fromTrustedForwarder
        self.keepAlive = keepAlive
        self.hasBody = hasBody
        self.contentLength = contentLength
        self.addresses = addresses
        // Last: the head moves in (stored first, the reads above took a copy of it).
        self.head = head
    }
}

/// The two ends of a connection, read once for it and shared by its requests (one reference a request:
/// two copies of a SocketAddress, an enum holding a class, cost ~200 instructions a request).
public final class ConnectionAddresses: Sendable {
    public let remote: SocketAddress?
    public let local: SocketAddress?

    public init(remote: SocketAddress?, local: SocketAddress?) {
        self.remote = remote
        self.local = local
    }
}

extension RequestInfo {
    /// What an error-log entry about this request carries: its id (REQUEST_ID in the journal).
    public var logMetadata: Logger.Metadata? {
        requestID.map { ["request_id": .string($0)] }
    }

    /// The scheme the client used: https when a trusted proxy or the uwsgi packet says so.
    public var isSecure: Bool { origin?.isSecure ?? false }
}

/// What the request's own bytes cannot tell and a front end told: whether the client used https, its
/// address, and for a uwsgi packet the CGI variables nginx sent (REMOTE_ADDR, SERVER_NAME, HTTPS, ...).
public final class RequestOrigin: Sendable {
    public let isSecure: Bool
    /// The client's address from X-Forwarded-For or REMOTE_ADDR (a port of 0 when none was given).
    public let client: (host: String, port: Int)?
    /// The server's name and port as the front end saw them (uwsgi's SERVER_NAME, SERVER_PORT).
    public let server: (host: String, port: Int)?
    /// A uwsgi packet's variables other than CONTENT_TYPE, CONTENT_LENGTH and `HTTP_*` (which are the
    /// request's headers), byte for byte, in their order: they go into the WSGI environ as they are, as
    /// uWSGI does. Read in place, as a head's fields are: the packet's bytes and each one's offsets.
    public let gatewayVariables: RequestHeaders?
    /// REMOTE_ADDR and REMOTE_PORT are both among `gatewayVariables` (which the environ takes last):
    /// what it would set them to from `client` or the connection is replaced, so it is not made.
    public let gatewayHasRemote: Bool
    /// SERVER_NAME and SERVER_PORT are both among `gatewayVariables`, as REMOTE_* above.
    public let gatewayHasServer: Bool

    public init(isSecure: Bool, client: (host: String, port: Int)?, server: (host: String, port: Int)? = nil,
                gatewayVariables: RequestHeaders? = nil, gatewayHasRemote: Bool = false, gatewayHasServer: Bool = false) {
        self.isSecure = isSecure
        self.client = client
        self.server = server
        self.gatewayVariables = gatewayVariables
        self.gatewayHasRemote = gatewayVariables != nil && gatewayHasRemote
        self.gatewayHasServer = gatewayVariables != nil && gatewayHasServer
    }
}

public enum ExchangeError: Error, Sendable {
    /// The client closed the connection; nothing more can be sent.
    case disconnected
}

/// Told (on the I/O thread) when an exchange's queued response drained below the low-water mark, and
/// when its connection went away. For apps that do not block a thread per request (ASGI).
public protocol ExchangeObserver: AnyObject, Sendable {
    func exchangeDrained()
    func exchangeAborted()
}

/// Hosts one request for an app: handed to an app thread by the I/O thread, it carries the request
/// head and body stream, and takes the response back to the I/O thread. Every method here may be
/// called from any thread; the socket is only ever touched on the connection's event loop.
public final class HTTPExchange: @unchecked Sendable {
    public let request: RequestInfo
    public let body: RequestBodyStream
    public let allocator: ByteBufferAllocator
    public let limits: HTTPLimits
    public let eventLoop: any EventLoop
    let connection: NIOLoopBound<HTTPConnectionHandler>
    /// The server's drain flag, and the outbox by which a response made on another thread reaches the I/O thread.
    private let server: ServerShared

    /// Guards `pendingBytes` and the setting of `aborted`; shared with other exchanges (see
    /// `Monitor.striped`), so that a request costs no mutex and condition set-up of its own.
    private let output: Monitor
    private var pendingBytes = 0      // guarded by `output`
    /// Set once, with `output` held (waiters check it under the lock); read without the lock by the
    /// checks made for every request (`isAborted`, a response's end).
    private let aborted = Atomic<Bool>(false)
    /// Set on the I/O thread before the app sees the exchange; called and let go there only, once the
    /// response's end is written, the connection upgraded or gone (`letObserverGo`, `abort`). Not weak,
    /// though the observer (the app's side of the request) holds the exchange: a weak reference gives
    /// the observer a side table, an allocation a request and every retain of it on the slow path.
    public var observer: (any ExchangeObserver)?

    init(request: RequestInfo, body: RequestBodyStream, limits: HTTPLimits, eventLoop: any EventLoop,
         connection: NIOLoopBound<HTTPConnectionHandler>, allocator: ByteBufferAllocator, server: ServerShared) {
        // First: made after the stores below, its call kept every argument alive past its store (a
        // retain and a release more for each of six references a request).
        // Striped by the request's object, not the connection's: `connection.value` checks the thread
        // and retains the handler, for an address that spreads no better.
        self.output = Monitor.striped(for: ObjectIdentifier(request))
        self.request = request
        self.body = body
        self.limits = limits
        self.eventLoop = eventLoop
        self.connection = connection
        self.allocator = allocator
        self.server = server
    }

    /// A buffer for the response's head: an earlier response's, given back once written
    /// (ResponseBufferPool), or an empty one.
    public func responseBuffer() -> ByteBuffer {
        server.responseBuffers.take() ?? allocator.buffer(capacity: 0)
    }

    /// The server is stopping or recycling this worker: the response should close the connection.
    public var serverIsDraining: Bool { server.isDraining }

    public var isAborted: Bool { aborted.load(ordering: .acquiring) }

    /// Answered 504 by the server because it made no progress for `timeout` seconds: the app's side
    /// should give up on it (ASGI cancels its task). Set on the I/O thread before the abort.
    public private(set) var timedOut: Bool {
        get { output.withLock { timedOutFlag } }
        set { output.withLock { timedOutFlag = newValue } }
    }
    private var timedOutFlag = false      // guarded by `output`

    func markTimedOut() { timedOut = true }

    /// Response bytes queued and not yet written to the socket (the client is slow to read).
    var hasQueuedOutput: Bool { output.withLock { pendingBytes > 0 } }

    /// Queues bytes of the response for the socket; never blocks. `end` completes the response;
    /// `close` closes the connection after it. Returns true when the caller should now
    /// `waitUntilDrained()` (more than `responseHighWater` bytes are queued), without holding the GIL.
    /// `pieces`, when there are any, go before `buffer` in the same write (gathered by writev): a
    /// large body chunk that was not copied, between its framing (ForeignBuffer).
    public func send(_ buffer: ByteBuffer, after pieces: [ByteBuffer]? = nil, end: Bool, close: Bool) throws(ExchangeError) -> Bool {
        let size = Self.byteCount(buffer, after: pieces)
        let mustWait = try account(size, end: end)
        if eventLoop.inEventLoop {
            // The app runs on the I/O thread (sync mode). A streamed chunk is written now, so the socket
            // drains while the body is made. The end of a response is written after this event-loop
            // tick, with the tick's other ends in one task (not from inside the app's call, where the
            // connection's next request could start), fewer, larger wake-ups under load.
            if end {
                connection.value.writeAfterTick(PendingWrite(exchange: self, pieces: pieces, buffer: buffer, size: size, end: end, close: close))
            } else {
                connection.value.writeResponse(.buffer(buffer), after: pieces, size: size, end: end, close: close, for: self)
            }
        } else {
            server.outbox.post(PendingWrite(exchange: self, pieces: pieces, buffer: buffer, size: size, end: end, close: close))
        }
        return mustWait
    }

    /// Puts the exchange off until this event-loop tick has done its reads: the application's
    /// `handleAfterReads` then gets it, with the tick's other requests. Call on the event loop.
    public func handleAfterReads() {
        connection.value.handleAfterReads(self)
    }

    /// Accounts for the bytes as `send` does, but leaves the write to `submit`, which takes many
    /// responses (of any exchanges of one event loop) to the I/O thread in one hop.
    public func prepare(_ buffer: ByteBuffer, after pieces: [ByteBuffer]? = nil, end: Bool, close: Bool) throws(ExchangeError)
        -> (write: PendingWrite, mustWait: Bool) {
        let size = Self.byteCount(buffer, after: pieces)
        let mustWait = try account(size, end: end)
        return (PendingWrite(exchange: self, pieces: pieces, buffer: buffer, size: size, end: end, close: close), mustWait)
    }

    private static func byteCount(_ buffer: ByteBuffer, after pieces: [ByteBuffer]?) -> Int {
        pieces.map { $0.reduce(buffer.readableBytes) { $0 + $1.readableBytes } } ?? buffer.readableBytes
    }

    public struct PendingWrite: OutboxWrite {
        let exchange: HTTPExchange
        let pieces: [ByteBuffer]?
        let buffer: ByteBuffer
        let size: Int
        let end: Bool
        let close: Bool

        /// Hands it to its connection; on the event loop.
        consuming func write() {
            exchange.connection.value.writeResponse(.buffer(buffer), after: pieces, size: size, end: end, close: close, for: exchange)
        }
    }

    /// Writes prepared responses, in order, on the I/O thread (of all their exchanges: one worker's),
    /// and leaves `writes` empty (holding reusable storage, not the writes' copies).
    public static func submit(_ writes: inout MoveOutArray<PendingWrite>) {
        writes.first?.exchange.server.outbox.post(taking: &writes)
    }

    /// Queues `length` bytes of an open file from `offset`, sent with sendfile(2) after `header`; `fd`
    /// becomes the I/O thread's to close.
    public func sendFile(descriptor fd: CInt, offset: Int64, length: Int64, header: ByteBuffer,
                         end: Bool, close: Bool) throws(ExchangeError) -> Bool {
        let size = Int(length) + header.readableBytes
        let mustWait: Bool
        do { mustWait = try account(size, end: end) } catch {
            Glibc.close(fd)
            throw error
        }
        let connection = self.connection
        eventLoop.execute {
            connection.value.writeResponse(.file(fd: fd, offset: offset, length: length, header: header),
                                           size: size, end: end, close: close, for: self)
        }
        return mustWait
    }

    /// Waits until the queued response bytes drained below `responseLowWater`.
    public func waitUntilDrained() throws(ExchangeError) {
        try output.withLock { () throws(ExchangeError) -> Void in
            while pendingBytes > limits.responseLowWater && !isAborted {
                output.wait()
            }
            if isAborted { throw .disconnected }
        }
    }

    /// Ends the exchange with no (further) response: the connection is closed. For a failure
    /// after the head went out, or a request the app never answered.
    public func abortConnection() {
        let connection = self.connection
        eventLoop.execute { connection.value.closeAfterFailure(self) }
    }

    private func account(_ size: Int, end: Bool) throws(ExchangeError) -> Bool {
        if end {
            // The end of a response is not waited on (nor given back): only the abort matters.
            if isAborted { throw .disconnected }
            return false
        }
        return try output.withLock { () throws(ExchangeError) -> Bool in
            if isAborted { throw .disconnected }
            pendingBytes += size
            return pendingBytes > limits.responseHighWater
        }
    }

    // MARK: I/O thread side

    func didWrite(_ size: Int) {
        let drained = output.withLock { () -> Bool in
            let before = pendingBytes
            pendingBytes -= size
            guard before > limits.responseLowWater && pendingBytes <= limits.responseLowWater else { return false }
            output.broadcast()
            return true
        }
        if drained { observer?.exchangeDrained() }
    }

    func abort() {
        let first = output.withLock { () -> Bool in
            output.broadcast()
            return !aborted.exchange(true, ordering: .acquiringAndReleasing)
        }
        body.fail(.disconnected)
        if first { observer?.exchangeAborted() }
        observer = nil
    }

    /// The response ended or the connection was upgraded: nothing is left to tell the observer (a
    /// `send` never waits on a response's end, and `receive` answers `http.disconnect` after it).
    func letObserverGo() {
        observer = nil
    }
}

/// What is written for a response: bytes, or a region of a file for sendfile.
enum ResponseOutput {
    case buffer(ByteBuffer)
    case file(fd: CInt, offset: Int64, length: Int64, header: ByteBuffer)
}

/// What the exchanges of one server share of it, behind one reference an exchange: whether it is
/// draining, the outbox that takes responses made on app threads to its I/O thread, and the written
/// responses' buffers kept for the next heads.
final class ServerShared: Sendable {
    private let draining = Atomic<Bool>(false)
    let outbox: ResponseOutbox<HTTPExchange.PendingWrite>
    let responseBuffers = ResponseBufferPool()

    init(eventLoop: any EventLoop) {
        outbox = ResponseOutbox(eventLoop: eventLoop)
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }
    func setDraining() { draining.store(true, ordering: .relaxed) }
}
