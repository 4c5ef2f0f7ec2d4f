import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// A connection the server tracks: for its timeouts (a once-a-second sweep) and for draining.
protocol ServerConnection: AnyObject {
    /// Its idle, header or closing timeout, dated and checked by the sweep.
    var deadline: SweptDeadline { get set }
    func deadlinePassed()
    func drain()
    /// Called by the once-a-second sweep: answer 504 if the request in progress made no progress
    /// for `seconds` (only when the app host outlives stuck requests).
    func checkStuck(seconds: Int64, now: Monotonic)
}

extension ServerConnection {
    func checkStuck(seconds: Int64, now: Monotonic) {}
}

/// The HTTP side of one worker: serves the listening sockets it inherited from the arbiter on one
/// event loop, hands requests to the app, and drains on request.
public final class HTTPServer: @unchecked Sendable {
    public let application: any HTTPApplication
    let limits: HTTPLimits
    /// Whom the edge believes (PROXY headers, uwsgi packets, X-Forwarded-*), and header-name rules.
    let edge: EdgePolicy
    let logger: Logger
    public let eventLoop: any EventLoop
    /// What its exchanges share: the drain flag, and the outbox of responses made on app threads.
    let shared: ServerShared
    // Touched on `eventLoop` only.
    private var listeners: [any Channel] = []
    private var connections: [ObjectIdentifier: any ServerConnection] = [:]
    private var draining = false
    private var sweep: RepeatedTask?
    private var drained: EventLoopPromise<Void>?
    private var served = 0
    /// Ends of responses made on this thread (sync mode), written after the event-loop tick.
    private var endsAfterTick = MoveOutArray<HTTPExchange.PendingWrite>()
    /// The last tick's ends while they are written: the two arrays swap, so neither is allocated again.
    private var endsBeingWritten = MoveOutArray<HTTPExchange.PendingWrite>()
    /// Requests the application put off until the tick's reads are done (sync mode), and the ones
    /// being handed to it.
    private var requestsAfterReads = MoveOutArray<HTTPExchange>()
    private var requestsBeingHandled = MoveOutArray<HTTPExchange>()
    /// The task that ends the tick (`endTick`) is queued.
    private var tickEndQueued = false
    private var started = 0
    /// Requests this worker takes before it retires (0: no limit); the last one closes its connection.
    private let requestLimit: Int
    /// Seconds after which a request that makes no progress is answered 504 (0: never; see AppHost).
    let stuckRequestTimeout: Int64
    private let onLimitReached: @Sendable () -> Void
    /// Called on the event loop after each response: the count so far (for max-requests), the
    /// status, and the nanoseconds since the request head arrived (for statsd).
    private let onRequestFinished: @Sendable (_ served: Int, _ status: Int, _ nanoseconds: Int64) -> Void
    /// The counters the arbiter publishes on its metrics endpoint (nil when it has none).
    public let metrics: WorkerMetrics?
    /// Called once the listeners accept, and once they are closed on a drain (true, then false).
    private let onAccepting: @Sendable (Bool) -> Void

    public init(application: any HTTPApplication, limits: HTTPLimits, edge: EdgePolicy = EdgePolicy(), eventLoop: any EventLoop, logger: Logger,
                requestLimit: Int = 0, stuckRequestTimeout: Int = 0, onLimitReached: @escaping @Sendable () -> Void = {}, metrics: WorkerMetrics? = nil,
                onAccepting: @escaping @Sendable (Bool) -> Void = { _ in },
                onRequestFinished: @escaping @Sendable (_ served: Int, _ status: Int, _ nanoseconds: Int64) -> Void) {
        self.onAccepting = onAccepting
        self.metrics = metrics
        self.requestLimit = requestLimit
        self.stuckRequestTimeout = Int64(stuckRequestTimeout)
        self.onLimitReached = onLimitReached
        self.application = application
        self.limits = limits
        self.edge = edge
        self.eventLoop = eventLoop
        self.shared = ServerShared(eventLoop: eventLoop)
        self.logger = logger
        self.onRequestFinished = onRequestFinished
    }

    /// Writes `write` after this event-loop tick, with the other ends queued in it: one task a tick,
    /// not a task (a closure and the loop's lock) for each response. Called on `eventLoop`.
    func writeAfterTick(_ write: HTTPExchange.PendingWrite) {
        endsAfterTick.append(write)
        queueTickEnd()
    }

    /// Hands `exchange` to the application (`handleAfterReads`) once this tick's reads are done, with
    /// the other requests they brought, before the tick's ends are written. Called on `eventLoop`.
    func handleAfterReads(_ exchange: HTTPExchange) {
        requestsAfterReads.append(exchange)
        queueTickEnd()
    }

    private func queueTickEnd() {
        guard !tickEndQueued else { return }
        tickEndQueued = true
        eventLoop.execute { [self] in endTick() }
    }

    /// The end of a tick, in one task: the requests put off until its reads were done, one after the
    /// other, then the responses' ends (theirs among them).
    private func endTick() {
        if !requestsAfterReads.isEmpty {
            repeat {
                swap(&requestsAfterReads, &requestsBeingHandled)
                requestsBeingHandled.drain { application.handleAfterReads($0) }
            } while !requestsAfterReads.isEmpty
            application.afterReadsHandled()
        }
        // A response's end may start the next request, which then waits for a new tick.
        tickEndQueued = false
        swap(&endsAfterTick, &endsBeingWritten)
        endsBeingWritten.drain { $0.write() }
    }

    /// Bounds a TCP socket's not-yet-sent queue (`HTTPLimits.unsentBytes`); unix sockets have none.
    private func limitUnsentBytes(_ descriptor: CInt) {
        var domain: CInt = 0
        var size = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0, domain == AF_INET || domain == AF_INET6 else { return }
        var bytes = CInt(clamping: limits.unsentBytes)
        if setsockopt(descriptor, CInt(IPPROTO_TCP), TCP_NOTSENT_LOWAT, &bytes, socklen_t(MemoryLayout<CInt>.size)) != 0 {
            logger.warning("cannot bound the unsent bytes of a listening socket (TCP_NOTSENT_LOWAT): \(String(cString: strerror(errno)))")
        }
    }

    /// Starts accepting on listening sockets that are already bound (the fds stay open in the arbiter).
    public func serve(listeners: [ListenerOptions]) throws {
        for listener in listeners {
            // NIO takes ownership of what it is given: give it a duplicate.
            let own = dup(listener.descriptor)
            guard own >= 0 else { throw IOError(errnoCode: errno, reason: "dup") }
            // On the listening socket: the connections it accepts inherit it, with no call each.
            limitUnsentBytes(own)
            // No child channel options: each costs every connection a trip through NIO's option
            // machinery, and TCP_NODELAY a getsockname(2) and a setsockopt(2) besides. Linux copies
            // TCP_NODELAY from the listening socket, where ServerBootstrap sets it by default, and
            // remote half-closure is off by default.
            // The acceptor takes each connection before ServerBootstrap's own accept handler would.
            let channel = try ServerBootstrap(group: eventLoop)
                .serverChannelOption(.autoRead, value: true)
                .serverChannelOption(.maxMessagesPerRead, value: 16)
                .serverChannelInitializer { [self] server in
                    server.eventLoop.makeCompletedFuture {
                        try server.pipeline.syncOperations.addHandler(ConnectionAcceptor(logger: logger) { [self] connection in
                            try configure(connection, listener: listener)
                        })
                    }
                }
                .withBoundSocket(own)
                .wait()
            eventLoop.execute { self.listeners.append(channel) }
        }
        onAccepting(true)
    }

    /// A connection's pipeline: [PROXY header] -> the connection handler, which turns bytes into request
    /// parts with its listener's decoder (HTTP/1.1 or uwsgi, called directly: see RequestDecoder).
    private func configure(_ channel: any Channel, listener: ListenerOptions) throws {
        if let metrics {
            metrics.connectionOpened()
            channel.closeFuture.whenComplete { _ in metrics.connectionClosed() }
        }
        let origin = ConnectionOrigin(channel: channel)
        let handler = HTTPConnectionHandler(server: self, limits: limits, logger: logger, origin: origin, uwsgi: listener.protocolName == .uwsgi)
        let sync = channel.pipeline.syncOperations
        if listener.proxyProtocol != .off {
            try sync.addHandler(ProxyProtocolHandler(mode: listener.proxyProtocol, origin: origin, server: self))
        }
        try sync.addHandler(handler)
    }

    /// Sets up a channel made elsewhere (an EmbeddedChannel in tests) as a connection of this server.
    func configureForTesting(_ channel: any Channel, listener: ListenerOptions = ListenerOptions(descriptor: -1)) throws {
        try configure(channel, listener: listener)
    }

    // MARK: logging what the edge refuses

    /// When each kind of warning was last logged: a flood of bad connections costs one line a minute.
    private var lastWarnings: [String: NIODeadline] = [:]
    private var suppressedWarnings: [String: Int] = [:]

    /// A warning about a refused connection, at most once a minute of each kind (the rest at debug).
    func warnRarely(_ kind: String, _ message: @autoclosure () -> String) {
        let now = NIODeadline.now()
        if let last = lastWarnings[kind], now - last < .seconds(60) {
            suppressedWarnings[kind, default: 0] += 1
            logger.debug("\(message())")
            return
        }
        let suppressed = suppressedWarnings.removeValue(forKey: kind) ?? 0
        lastWarnings[kind] = now
        let more = suppressed > 0 ? " (and \(suppressed) more like it in the last minute)" : ""
        logger.warning("\(message())\(more)")
    }

    /// A request refused by the HTTP layer (the app never saw it), for the metrics endpoint.
    func countRefusal(_ status: Int) {
        metrics?.refused(status: status)
    }

    func register(_ handler: any ServerConnection) {
        if sweep == nil {
            sweep = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
                sweepDeadlines()
            }
        }
        connections[ObjectIdentifier(handler)] = handler
        if draining { handler.drain() }
    }

    func unregister(_ handler: any ServerConnection) {
        connections[ObjectIdentifier(handler)] = nil
        if draining && connections.isEmpty { drained?.succeed() }
    }

    /// Counts a request that starts; false once the request limit is reached, so that its response
    /// closes the connection instead of inviting another request the worker will not take.
    func requestStarted() -> Bool {
        started += 1
        if requestLimit > 0 && started >= requestLimit {
            shared.setDraining()
            return false
        }
        return true
    }

    /// Idle and header timeouts: one pass a second over the connections.
    private func sweepDeadlines() {
        let now = eventLoop.now
        let monotonic = Monotonic.now()
        for handler in connections.values {
            if handler.deadline.sweep(now: now) { handler.deadlinePassed() }
            if stuckRequestTimeout > 0 { handler.checkStuck(seconds: stuckRequestTimeout, now: monotonic) }
        }
    }

    func requestFinished(_ request: RequestInfo, status: Int, requestBodyBytes: Int64, responseBytes: Int64) {
        served += 1
        let nanoseconds = Monotonic.now().nanoseconds - request.started.nanoseconds
        metrics?.requestFinished(method: request.method, status: status, nanoseconds: nanoseconds,
                                 requestBodyBytes: requestBodyBytes, responseBytes: responseBytes)
        onRequestFinished(served, status, nanoseconds)
        if requestLimit > 0 && served == requestLimit { onLimitReached() }
    }


    /// Stops accepting, closes idle connections, lets active ones finish their response and close.
    /// The future completes when no connection is left.
    public func drain() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            if let drained = self.drained { return drained.futureResult }
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.drained = promise
            self.draining = true
            self.shared.setDraining()
            let closed = self.listeners.map { $0.close() }
            self.listeners.removeAll()
            let onAccepting = self.onAccepting
            EventLoopFuture.andAllComplete(closed, on: self.eventLoop).whenComplete { _ in onAccepting(false) }
            // Idle connections stay until their next request (answered with `Connection: close`) or
            // their keep-alive timeout: closing them now would race with a request already on its way.
            for handler in self.connections.values { handler.drain() }
            if self.connections.isEmpty { promise.succeed() }
            return promise.futureResult
        }
    }
}
