import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs an ASGI 3 app for one worker: one asyncio event loop (uvloop when installed) on its own Python
/// thread. The I/O thread never takes the GIL: it queues events (a new request, body bytes arrived,
/// the socket drained, the client left) and wakes the loop through a pipe the loop watches; the loop
/// thread takes them in batches and resolves the futures that `receive` and `send` returned.
public final class ASGIHost: AppHost, @unchecked Sendable {
    enum Event {
        case request(ASGIRequest)
        case bodyReadable(ASGIRequest)
        case drained(ASGIRequest)
        case aborted(ASGIRequest)
        case webSocket(ASGIWebSocket)
        case webSocketMessage(ASGIWebSocket, WebSocketMessage)
        case webSocketClosed(ASGIWebSocket, code: Int, reason: String)
        case webSocketDrained(ASGIWebSocket)
        case shutdown(timeout: Int)
    }

    let runtime: PythonRuntime
    let config: ServerConfig
    let logger: Logger
    let accessLog: AccessLogWriter?
    /// uvicorn.access, where Gunicorn's UvicornWorker has an ASGI app's access lines logged.
    let accessGate: AccessLoggerGate?
    private let queueLock = Monitor()
    private var events: [Event] = []              // guarded by `queueLock`
    private let wakeRead: CInt
    private let wakeWrite: CInt
    /// Whether a wake-up of the loop is on its way (WakeUpLatch): all the events of one tick (say,
    /// every request read in one pass), and those queued before the loop takes them, share one.
    private var wake = WakeUpLatch()              // guarded by `queueLock`
    /// Responses made in this turn of the asyncio loop, taken to the I/O thread in one hop at its
    /// end (`flushOutbox`, scheduled with call_soon), rather than one hop (and wake-up) each.
    private var outbox = MoveOutArray<HTTPExchange.PendingWrite>()
    /// Whether `turnEnded` is scheduled (call_soon) for this turn: for its responses and access lines.
    private var turnEndScheduled = false
    /// When the loop last ran its heartbeat task (monotonic ns): a loop blocked by the app stops it,
    /// and `--timeout` then replaces the worker.
    private let lastTick = Atomic<Int64>(0)

    /// Start-up and stop of the loop thread, for the worker's main thread.
    private let lifecycle = Monitor()
    private var startup: Result<String, AppLoadError>?   // guarded by `lifecycle`
    private var loopStopped = false                      // guarded by `lifecycle`

    /// The Python objects of the loop thread, made by it and touched only by it, with the GIL.
    final class LoopObjects: @unchecked Sendable {
        let loop: PyRef
        let createFuture: PyRef
        let tasks: ASGITaskRuntime
        /// A future already done (result None): what `send` returns when nothing has to wait.
        let done: PyRef
        /// The lifespan state; each request's scope gets a shallow copy.
        let state: PyRef
        /// `flush()`: this turn's responses to the I/O thread (scheduled with call_soon).
        let flush: PyRef
        /// `log(level, text)` for the glue's messages.
        let log: PyRef
        let scope: ASGIScopeBuilder

        init(loop: consuming PyRef, done: consuming PyRef, host: ASGIHost, log: consuming PyRef) throws(PythonError) {
            createFuture = try Python.attribute(loop.pointer, "create_future")
            tasks = try ASGITaskRuntime(loop: loop.pointer, identityType: host.runtime.glue.function(host.runtime.glue.asgi, "RequestTask"))
            state = try PyRef.checked(PyDict_New())
            flush = ASGIHost.flushNative.bind(to: host)
            scope = try ASGIScopeBuilder(rootPath: host.config.rootPath, headerMap: host.config.headerMap, requestIDHeader: host.config.requestIDHeader,
                                         pathsend: host.config.sendfile)
            self.loop = loop
            self.done = done
            self.log = log
        }
    }

    private var objects: LoopObjects!
    /// The loop's kind (asyncio, uvloop), for the start-up log line.
    private var loopName = ""
    /// The keys and constant values of ASGI messages (made with the GIL, when the host is).
    let messages: ASGIMessages
    /// The future already done: what `send` returns when nothing has to wait (a new reference). Read
    /// through a plain pointer (`objects.done` owns it): through `objects`, a var, each call retained
    /// and released it, twice a request.
    func completedFuture() -> PyRef { PyRef(retaining: donePointer!) }
    private var donePointer: PyObjectPointer?
    /// Where the glue's messages go (lifespan shutdown problems).
    private lazy var glueLog = LogSink { [logger] level, text in
        switch level {
        case ...1: logger.info("\(text)")
        case 2: logger.warning("\(text)")
        default: logger.error("\(text)")
        }
    }

    static let wakeUpNative = NativeFunction<ASGIHost>("wakeup", "wakeup(): the loop's reader on the ASGI wake-up pipe") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIHost.self) { host, _ throws(PythonError) in
            host.wakeUp()
            return .noneObject
        }
    }
    static let flushNative = NativeFunction<ASGIHost>("flush", "flush(): this turn's responses to the I/O thread, its access lines out") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIHost.self) { host, _ throws(PythonError) in
            host.turnEnded()
            return .noneObject
        }
    }
    static let startedNative = NativeFunction<ASGIHost>("started", "started(outcome, text): the lifespan startup's outcome") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIHost.self) { host, arguments throws(PythonError) in
            try arguments.expect(2...2, "started(outcome, text)")
            host.lifespanStarted(outcome: try Python.string(arguments[0]), text: Python.displayString(arguments[1]))
            return .noneObject
        }
    }
    static let tickNative = NativeFunction<ASGIHost>("tick", "tick(): the event loop is alive") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIHost.self) { host, _ throws(PythonError) in
            host.tick()
            return .noneObject
        }
    }

    public init(runtime: PythonRuntime, config: ServerConfig, logger: Logger, accessLog: AccessLogWriter?) {
        self.runtime = runtime
        self.config = config
        self.logger = logger
        self.accessLog = accessLog
        accessGate = accessLog == nil ? nil : AccessLoggerGate(loggerName: "uvicorn.access", glue: runtime.glue, errorLog: logger)
        do {
            messages = try ASGIMessages()
        } catch {
            fatalError("cannot make the ASGI message constants: \(PythonError.fetchText() ?? "?")")
        }
        var fds: [CInt] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe failed")
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    public var interfaceName: String { "asgi" }

    // MARK: worker life

    /// Starts the loop thread and runs the lifespan startup; returns once the app is ready to serve.
    public func start() throws(AppLoadError) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            Unmanaged<ASGIHost>.fromOpaque(context!).takeRetainedValue().runLoop()
            return nil
        }, context)
        precondition(status == 0, "cannot start the event loop thread: \(String(cString: strerror(status)))")
        pthread_detach(thread)
        let outcome = lifecycle.withLock { () -> Result<String, AppLoadError> in
            while startup == nil { lifecycle.wait() }
            return startup!
        }
        switch outcome {
        case .success(let loopName): logger.info("ASGI event loop: \(loopName)")
        case .failure(let error): throw error
        }
    }

    /// After the server drained: the lifespan shutdown (up to `timeout` seconds), then the loop stops.
    public func stop(timeout: Int) {
        post(.shutdown(timeout: max(1, timeout)))
        let deadline = Monotonic.now().adding(seconds: Double(max(1, timeout) + 1))
        lifecycle.withLock {
            while !loopStopped && Monotonic.now() < deadline { lifecycle.wait(deadline: deadline) }
        }
        runtime.runExitFunctions()
    }

    /// The loop's last tick: a coroutine that blocks the loop stops it (one that only awaits does not).
    public func stuckSince() -> Int64? {
        let tick = lastTick.load(ordering: .relaxed)
        return tick == 0 ? nil : tick
    }

    public var outlivesStuckRequests: Bool { true }

    private func runLoop() {
        // This thread holds the GIL from here on, except while the loop waits in its selector.
        var python = PythonThreadState()
        python.enter()
        defer { python.leave() }
        do {
            try makeLoop()
            // One main task: the lifespan startup (its outcome comes back through `lifespanStarted`),
            // serving until the shutdown event, the lifespan shutdown. anyio takes it for the root task
            // of its worker threads.
            let glue = runtime.glue, mode = try Python.str(config.lifespan.rawValue), started = Self.startedNative.bind(to: self)
            _ = try Python.call(glue.function(glue.asgi, "asgi_serve"),
                                arguments: [objects.loop.pointer, runtime.app.pointer, mode.pointer, objects.state.pointer, started.pointer, objects.log.pointer])
            reportStartup(.failure(.startupFailed("the ASGI event loop ended before the lifespan startup did")))   // no-op after `started`
        } catch {
            let text = PythonError.fetchText() ?? "?"
            if !reportStartup(.failure(.importFailed(objects == nil ? "cannot start the ASGI event loop:\n\(text)" : "ASGI lifespan startup failed:\n\(text)"))) {
                logger.error("the ASGI event loop failed: \(text)")
            }
        }
        lifecycle.withLock {
            loopStopped = true
            lifecycle.broadcast()
        }
    }

    /// Makes the loop (with the GIL, on the loop thread).
    private func makeLoop() throws(PythonError) {
        let glue = runtime.glue
        let kind = try Python.str(config.loop.rawValue), fd = try Python.int(Int(wakeRead))
        let wakeUp = Self.wakeUpNative.bind(to: self), tick = Self.tickNative.bind(to: self)
        let made = try Python.call(glue.function(glue.asgi, "asgi_new_loop"), arguments: [kind.pointer, fd.pointer, wakeUp.pointer, tick.pointer])
        guard PyTuple_Size(made.pointer) == 3, let loop = PyTuple_GetItem(made.pointer, 0), let name = PyTuple_GetItem(made.pointer, 1),
              let done = PyTuple_GetItem(made.pointer, 2) else { throw PythonError.typeError("asgi_new_loop returned no (loop, name, done)") }
        loopName = try Python.string(name)
        objects = try LoopObjects(loop: PyRef(retaining: loop), done: PyRef(retaining: done), host: self, log: LogSink.leveled.bind(to: glueLog))
        donePointer = objects.done.pointer
    }

    /// The lifespan startup's outcome (ok, off, unsupported or failed), from the main task: lets `start`
    /// return, or throw.
    private func lifespanStarted(outcome: String, text: String) {
        switch outcome {
        case "failed":
            reportStartup(.failure(.startupFailed("ASGI lifespan startup failed: \(text)")))
            return
        case "unsupported":
            logger.info("ASGI 'lifespan' protocol appears unsupported (the app raised at lifespan.startup):\n\(text)")
        case "ok":
            logger.info("ASGI lifespan startup complete")
        default:
            break
        }
        reportStartup(.success(loopName))
    }

    /// Hands the start-up's result to `start` (the first one only); false when it had one.
    @discardableResult
    private func reportStartup(_ result: Result<String, AppLoadError>) -> Bool {
        lifecycle.withLock {
            guard startup == nil else { return false }
            startup = result
            lifecycle.broadcast()
            return true
        }
    }

    // MARK: the I/O thread's side

    public func handle(_ exchange: HTTPExchange) {
        if WebSocketHandshake.isUpgradeRequest(exchange.request) {
            let socket = ASGIWebSocket(host: self, exchange: exchange)
            exchange.observer = socket
            post(.webSocket(socket), from: exchange.eventLoop)
            return
        }
        let request = ASGIRequest(host: self, exchange: exchange)
        exchange.observer = request
        post(.request(consume request), from: exchange.eventLoop)   // the event takes the local's reference
    }

    /// Queues an event for the loop thread, waking it unless a wake-up is on its way. From the I/O
    /// thread (`ioLoop`), the wake-up waits for the end of the current tick, so that the events of one
    /// tick share it.
    func post(_ event: consuming Event, from ioLoop: (any EventLoop)? = nil) {
        // Moved into the queue (a closure cannot consume what it captures, but it can take it out of
        // an optional): a copy there was a retain, and the caller's release of its own.
        var taken = Optional(event)
        let onIOThread = ioLoop?.inEventLoop ?? false
        let action = queueLock.withLock { () -> WakeUpLatch.Action in
            events.append(taken.take()!)
            return wake.queued(onIOThread: onIOThread)
        }
        switch action {
        case .none: break
        case .writeNow: writeWakeByte()
        case .writeAfterTick: ioLoop?.execute { self.wakeAfterTick() }   // onIOThread: ioLoop is there
        }
    }

    private func wakeAfterTick() {
        queueLock.withLock { wake.tickEnded() }
        writeWakeByte()
    }

    private func writeWakeByte() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    // MARK: the loop thread's side (with the GIL)

    /// The loop's reader callback on the wake-up pipe: takes every queued event.
    func wakeUp() {
        // The pipe holds one byte a wake-up (WakeUpLatch), so one read nearly always empties it.
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeRead, &sink, sink.count) == sink.count {}
        let batch = queueLock.withLock { () -> [Event] in
            wake.taking()
            defer { events.removeAll(keepingCapacity: true) }
            return events
        }
        for event in batch {
            switch event {
            case .request(let request): start(request)
            case .bodyReadable(let request): request.bodyReadable()
            case .drained(let request): request.drained()
            case .aborted(let request): request.aborted()
            case .webSocket(let socket): start(socket)
            case .webSocketMessage(let socket, let message): socket.received(message)
            case .webSocketClosed(let socket, let code, let reason): socket.closed(code: code, reason: reason)
            case .webSocketDrained(let socket): socket.drained()
            case .shutdown(let timeout):
                do {
                    let seconds = try Python.int(timeout)
                    _ = try Python.call(runtime.glue.function(runtime.glue.asgi, "asgi_shutdown"), objects.loop.pointer, seconds.pointer)
                } catch {
                    logger.error("ASGI shutdown: \(PythonError.fetchText() ?? "?")")
                }
            }
        }
    }

    /// Queues a response write for the end of this turn of the loop; true when the sender should
    /// wait for the socket to drain. `pieces`, when there are any, go before `buffer` (uncopied chunks).
    func queueWrite(_ exchange: HTTPExchange, _ buffer: ByteBuffer, after pieces: [ByteBuffer] = [], end: Bool, close: Bool) throws(ExchangeError) -> Bool {
        let (write, mustWait) = try exchange.prepare(buffer, after: pieces.isEmpty ? nil : pieces, end: end, close: close)
        guard scheduleTurnEnd() else {
            var single = MoveOutArray<HTTPExchange.PendingWrite>()
            single.append(write)
            HTTPExchange.submit(&single)
            return mustWait
        }
        outbox.append(write)
        return mustWait
    }

    /// Adds a request's line to the access log's batch, which goes out at the end of this turn.
    func writeAccessLine(_ record: AccessLogRecord, gate: AccessLoggerGate?) {
        guard let accessLog else { return }
        accessLog.write(record, gate: gate)
        if !scheduleTurnEnd() { accessLog.flush() }
    }

    /// Schedules `turnEnded` once a turn; false when the loop would not take it (it is closing).
    private func scheduleTurnEnd() -> Bool {
        if turnEndScheduled { return true }
        guard (try? Python.call(objects.tasks.callSoon.pointer, objects.flush.pointer)) != nil else {
            PyErr_Clear()
            return false
        }
        turnEndScheduled = true
        return true
    }

    /// The end of a turn of the loop: its responses go to the I/O thread in one hop, its access lines
    /// in one write.
    private func turnEnded() {
        turnEndScheduled = false
        flushOutbox()
        accessLog?.flush()
    }

    /// Takes the queued writes to the I/O thread (call before anything else goes to it directly).
    func flushOutbox() {
        HTTPExchange.submit(&outbox)
    }

    func tick() {
        lastTick.store(Monotonic.now().nanoseconds, ordering: .relaxed)
    }

    private func start(_ request: ASGIRequest) {
        BytesBuffer.releaseWritten()
        let task = startTask(exchange: request.exchange, scope: { (info) throws(PythonError) -> PyRef in try objects.scope.build(info, state: objects.state.pointer) },
                             callables: request.makeCallables, finished: request.done)
        // A coroutine that ended in its first step has called `done` already: keeping its task now
        // would be a cycle (task -> done -> request -> task) that nothing breaks.
        if !request.isFinished { request.task = task }
    }

    private func start(_ socket: ASGIWebSocket) {
        _ = startTask(exchange: socket.exchange, scope: { (info) throws(PythonError) -> PyRef in try objects.scope.buildWebSocket(info, state: objects.state.pointer) },
                      callables: socket.makeCallables, finished: socket.done)
    }

    /// Calls `app(scope, receive, send)` and runs the first step of the coroutine at once (ASGITask),
    /// unless the client has gone already. `finished` learns how the app's call ended. Returns the
    /// task while it still runs.
    private func startTask(exchange: HTTPExchange, scope makeScope: (RequestInfo) throws(PythonError) -> PyRef,
                           callables makeCallables: () -> ASGICallables, finished: @escaping (PyObjectPointer?) -> Void) -> ASGITask? {
        if exchange.isAborted { return nil }
        let scope: PyRef
        do {
            scope = try makeScope(exchange.request)
        } catch {
            logger.error("cannot build the ASGI scope: \(PythonError.fetchText() ?? "?")")
            exchange.abortConnection()
            return nil
        }
        let task: ASGITask
        do {
            let callables = makeCallables()
            let awaitable = try Python.call(runtime.app.pointer, scope.pointer, callables.receive.pointer, callables.send.pointer)
            _ = consume scope
            task = try ASGITask(runtime: objects.tasks, coroutine: try Self.awaitableIterator(awaitable), finished: finished)
        } catch {
            let error = PythonError.fetch()
            finished(error.pointer)
            return nil
        }
        task.start()
        return task
    }

    /// What `await awaitable` iterates: a coroutine itself, or what its `__await__` returns; a
    /// TypeError for an object that cannot be awaited.
    private static func awaitableIterator(_ awaitable: consuming PyRef) throws(PythonError) -> PyRef {
        if appserver_is_coroutine(awaitable.pointer) != 0 { return awaitable }
        guard let method = try? Python.attribute(awaitable.pointer, "__await__") else {
            PyErr_Clear()
            throw PythonError.typeError("the ASGI app returned \(Python.repr(awaitable.pointer)), which cannot be awaited")
        }
        return try Python.call(method.pointer)
    }

    /// A new pending future of the loop.
    func newFuture() throws(PythonError) -> PyRef {
        try Python.call(objects.createFuture.pointer)
    }

    /// A future already done with `value`.
    func doneFuture(with value: borrowing PyRef) throws(PythonError) -> PyRef {
        let future = try newFuture()
        resolve(future.pointer, with: value.pointer)
        return future
    }

    /// `future.set_result(value)`; a future cancelled meanwhile is left alone.
    func resolve(_ future: PyObjectPointer, with value: PyObjectPointer) {
        if (try? Python.callMethod(future, objects.tasks.names.setResult.pointer, value)) == nil { PyErr_Clear() }
    }

    /// `future.set_exception(...)` with the current exception (which this takes): the awaiting
    /// coroutine gets it raised.
    func fail(_ future: PyObjectPointer) {
        guard let exception = PythonError.fetch() else { return }
        if (try? Python.callMethod(future, objects.tasks.names.setException.pointer, exception.pointer)) == nil { PyErr_Clear() }
    }
}

/// What a worker needs from the host of the app, whichever the gateway interface.
public protocol AppHost: HTTPApplication {
    var interfaceName: String { get }
    /// Starts the app's threads (and for ASGI the lifespan startup); returns when it can serve.
    func start() throws(AppLoadError)
    /// After the server drained: lets the app clean up (lifespan shutdown, atexit).
    func stop(timeout: Int)
    /// For the heartbeat: since when the worker has made no progress (monotonic ns), nil while it does.
    func stuckSince() -> Int64?
    /// Whether a request stuck in the app leaves the worker able to serve others (ASGI, `--threads` > 1):
    /// then the I/O thread answers such a request 504 after `timeout` instead of the worker being replaced.
    var outlivesStuckRequests: Bool { get }
}

extension PythonRuntime {
    /// The host for this app: WSGI or ASGI as configured, or as the callable looks (`auto`).
    /// Call on the thread that holds the GIL after start-up.
    public func makeHost(config: ServerConfig, logger: Logger, accessLog: AccessLogWriter?) -> any AppHost {
        var asgi = config.interface == .asgi
        if config.interface == .auto {
            if let result = try? Python.call(glue.function(glue.runtime, "is_asgi"), app.pointer) {
                asgi = result.pointer == appserver_true()
            } else {
                PyErr_Clear()
            }
        }
        if accessLog != nil { warnAboutAccessLoggerFilters(logger, asgi: asgi) }
        if asgi {
            let unrun = ["pre_request", "post_request"].filter(ServerHooks.has)
            if !unrun.isEmpty {
                logger.warning("the config file's \(unrun.joined(separator: " and ")) hook\(unrun.count > 1 ? "s do" : " does") not run for an ASGI app (nor under Gunicorn's UvicornWorker); use an ASGI middleware")
            }
            return ASGIHost(runtime: self, config: config, logger: logger, accessLog: accessLog)
        }
        wrapWithRequestHooks()
        return WSGIHost(runtime: self, config: config, logger: logger, accessLog: accessLog)
    }

    /// Apps filter gunicorn.access or uvicorn.access to keep lines out of the access log. The one of the
    /// app's interface applies (AccessLoggerGate); a filter on the other does not, as under Gunicorn, and
    /// a worker says so once.
    private func warnAboutAccessLoggerFilters(_ logger: Logger, asgi: Bool) {
        let (other, applied) = asgi ? ("gunicorn.access", "uvicorn.access") : ("uvicorn.access", "gunicorn.access")
        guard let asked = try? Python.tuple(count: 1, { _ throws(PythonError) in try Python.str(other) }),
              let found = try? Python.call(glue.function(glue.hooks, "access_logger_filters"), asked.pointer) else { return PyErr_Clear() }
        let names = (0..<max(PyList_Size(found.pointer), 0)).compactMap { index in
            PyList_GetItem(found.pointer, index).flatMap { try? Python.string($0) }
        }
        guard !names.isEmpty else { return }
        logger.warning("the app puts filters on \(names.joined(separator: " and ")), which do not apply to a\(asgi ? "n ASGI" : " WSGI") app's access lines: put them on \(applied), as under Gunicorn\(asgi ? "'s UvicornWorker" : "")")
    }
}
