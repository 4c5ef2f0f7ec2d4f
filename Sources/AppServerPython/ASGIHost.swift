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
    private let queueLock = Monitor()
    private var events: [Event] = []              // guarded by `queueLock`
    private let wakeRead: CInt
    private let wakeWrite: CInt
    /// A wake-up of the loop is already scheduled at the end of the I/O thread's current tick: all
    /// the events of one tick (say, every request read in one pass) cost one wake-up.
    private var wakeScheduled = false             // guarded by `queueLock`
    /// Responses made in this turn of the asyncio loop, taken to the I/O thread in one hop at its
    /// end (`flushOutbox`, scheduled with call_soon), rather than one hop (and wake-up) each.
    private var outbox: [HTTPExchange.PendingWrite] = []
    private var outboxLoop: (any EventLoop)?
    private var flushFunction: PyObjectPointer!
    /// When the loop last ran its heartbeat task (monotonic ns): a loop blocked by the app stops it,
    /// and `--timeout` then replaces the worker.
    private let lastTick = Atomic<Int64>(0)

    /// Start-up and stop of the loop thread, for the worker's main thread.
    private let lifecycle = Monitor()
    private var startup: Result<String, AppLoadError>?   // guarded by `lifecycle`
    private var loopStopped = false                      // guarded by `lifecycle`

    // Touched on the loop thread, with the GIL.
    private var loop: PyObjectPointer!
    private var createFuture: PyObjectPointer!
    private var tasks: ASGITaskRuntime!
    /// A future already done (result None): what `send` returns when nothing has to wait.
    var doneFuture: PyObjectPointer!
    /// The lifespan state; each request's scope gets a shallow copy.
    var state: PyObjectPointer!
    private(set) var scope: ASGIScopeBuilder!
    let messages = ASGIMessages()

    /// The one host of this worker process, for the native functions the loop calls.
    nonisolated(unsafe) static var current: ASGIHost?

    public init(runtime: PythonRuntime, config: ServerConfig, logger: Logger, accessLog: AccessLogWriter?) {
        self.runtime = runtime
        self.config = config
        self.logger = logger
        self.accessLog = accessLog
        var fds: [CInt] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe failed")
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        ASGIHost.current = self
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
        _ = PyGILState_Ensure()
        let result = prepareLoop()
        lifecycle.withLock {
            startup = result
            lifecycle.broadcast()
        }
        guard case .success = result else {
            _ = PyEval_SaveThread()
            return
        }
        if let value = callMethod(loop, "run_forever") { Py_DecRef(value) } else {
            logger.error("the ASGI event loop failed: \(PythonRuntime.takeErrorText() ?? "?")")
        }
        lifecycle.withLock {
            loopStopped = true
            lifecycle.broadcast()
        }
        _ = PyEval_SaveThread()
    }

    /// Makes the loop and runs the lifespan startup (with the GIL, on the loop thread).
    private func prepareLoop() -> Result<String, AppLoadError> {
        let namespace = runtime.namespace
        func call(_ name: String, _ args: [PyObjectPointer]) -> PyObjectPointer? {
            let function = PyDict_GetItemString(namespace, name)!
            return args.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: PyObjectPointer?.self) { PyObject_Vectorcall(function, $0.baseAddress, args.count, nil) }
            }
        }
        let kind = PyUnicode_FromString(config.loop.rawValue)!
        let fd = PyLong_FromLong(Int(wakeRead))!
        defer { Py_DecRef(kind); Py_DecRef(fd) }
        guard let made = call("asgi_new_loop", [kind, fd]) else {
            return .failure(.importFailed("cannot start the ASGI event loop:\n\(PythonRuntime.takeErrorText() ?? "?")"))
        }
        defer { Py_DecRef(made) }
        loop = PyTuple_GetItem(made, 0)
        Py_IncRef(loop)
        let loopName = String(cString: PyUnicode_AsUTF8(PyTuple_GetItem(made, 1)))
        doneFuture = PyTuple_GetItem(made, 2)
        Py_IncRef(doneFuture)
        flushFunction = PyDict_GetItemString(namespace, "_asgi_flush")
        createFuture = PyObject_GetAttrString(loop, "create_future")
        guard let tasks = ASGITaskRuntime(loop: loop, identityType: PyDict_GetItemString(namespace, "RequestTask")) else {
            return .failure(.importFailed("cannot start the ASGI event loop:\n\(PythonRuntime.takeErrorText() ?? "?")"))
        }
        self.tasks = tasks
        state = PyDict_New()
        scope = ASGIScopeBuilder(rootPath: config.rootPath, headerMap: config.headerMap, requestIDHeader: config.requestIDHeader)

        let mode = PyUnicode_FromString(config.lifespan.rawValue)!
        defer { Py_DecRef(mode) }
        guard let outcome = call("asgi_startup", [loop, runtime.app, mode, state]) else {
            return .failure(.importFailed("ASGI lifespan startup failed:\n\(PythonRuntime.takeErrorText() ?? "?")"))
        }
        defer { Py_DecRef(outcome) }
        let status = String(cString: PyUnicode_AsUTF8(PyTuple_GetItem(outcome, 0)))
        let text = String(cString: PyUnicode_AsUTF8(PyTuple_GetItem(outcome, 1)))
        switch status {
        case "failed":
            return .failure(.startupFailed("ASGI lifespan startup failed: \(text)"))
        case "unsupported":
            logger.info("ASGI 'lifespan' protocol appears unsupported (the app raised at lifespan.startup):\n\(text)")
        case "ok":
            logger.info("ASGI lifespan startup complete")
        default:
            break
        }
        return .success(loopName)
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
        post(.request(request), from: exchange.eventLoop)
    }

    /// Queues an event for the loop thread. From the I/O thread (`ioLoop`), the wake-up waits for
    /// the end of the current tick, so that the events of one tick share it.
    func post(_ event: Event, from ioLoop: (any EventLoop)? = nil) {
        let wake = queueLock.withLock { () -> Bool in
            events.append(event)
            if wakeScheduled { return false }
            if let ioLoop, ioLoop.inEventLoop {
                wakeScheduled = true
                ioLoop.execute { self.wakeNow() }
                return false
            }
            return events.count == 1
        }
        if wake { writeWakeByte() }
    }

    private func wakeNow() {
        queueLock.withLock { wakeScheduled = false }
        writeWakeByte()
    }

    private func writeWakeByte() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    // MARK: the loop thread's side (with the GIL)

    /// The loop's reader callback on the wake-up pipe: takes every queued event.
    func wakeUp() {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeRead, &sink, sink.count) > 0 {}
        let batch = queueLock.withLock { () -> [Event] in
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
                let function = PyDict_GetItemString(runtime.namespace, "asgi_shutdown")!
                let seconds = PyLong_FromLong(timeout)!
                var args: (PyObjectPointer?, PyObjectPointer?) = (loop, seconds)
                let result = withUnsafePointer(to: &args) {
                    $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 2) { PyObject_Vectorcall(function, $0, 2, nil) }
                }
                Py_DecRef(seconds)
                if let result { Py_DecRef(result) } else { logger.error("ASGI shutdown: \(PythonRuntime.takeErrorText() ?? "?")") }
            }
        }
    }

    /// Queues a response write for the end of this turn of the loop; true when the sender should
    /// wait for the socket to drain.
    func queueWrite(_ exchange: HTTPExchange, _ buffer: ByteBuffer, end: Bool, close: Bool) throws(ExchangeError) -> Bool {
        let (write, mustWait) = try exchange.prepare(buffer, end: end, close: close)
        if outbox.isEmpty {
            outboxLoop = exchange.eventLoop
            if let result = PyObject_CallOneArg(tasks.callSoon, flushFunction) { Py_DecRef(result) } else {
                PyErr_Clear()
                HTTPExchange.submit([write], on: exchange.eventLoop)
                return mustWait
            }
        }
        outbox.append(write)
        return mustWait
    }

    /// Takes the queued writes to the I/O thread (call before anything else goes to it directly).
    func flushOutbox() {
        guard !outbox.isEmpty, let outboxLoop else { return }
        HTTPExchange.submit(outbox, on: outboxLoop)
        outbox.removeAll(keepingCapacity: true)
    }

    func tick() {
        lastTick.store(Monotonic.now().nanoseconds, ordering: .relaxed)
    }

    private func start(_ request: ASGIRequest) {
        let task = startTask(exchange: request.exchange, scope: { scope.build($0, state: state) }, callables: request.makeCallables,
                             finished: request.done)
        // A coroutine that ended in its first step has called `done` already: keeping its task now
        // would be a cycle (task -> done -> request -> task) that nothing breaks.
        if !request.isFinished { request.task = task }
    }

    private func start(_ socket: ASGIWebSocket) {
        _ = startTask(exchange: socket.exchange, scope: { scope.buildWebSocket($0, state: state) }, callables: socket.makeCallables,
                      finished: socket.done)
    }

    /// Calls `app(scope, receive, send)` and runs the first step of the coroutine at once (ASGITask),
    /// unless the client has gone already. `finished` learns how the app's call ended. Returns the
    /// task while it still runs.
    private func startTask(exchange: HTTPExchange, scope makeScope: (RequestInfo) -> PyObjectPointer?,
                           callables makeCallables: () -> ASGICallables.Set, finished: @escaping (PyObjectPointer?) -> Void) -> ASGITask? {
        if exchange.isAborted { return nil }
        guard let scope = makeScope(exchange.request) else {
            logger.error("cannot build the ASGI scope: \(PythonRuntime.takeErrorText() ?? "?")")
            exchange.abortConnection()
            return nil
        }
        let callables = makeCallables()
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) = (scope, callables.receive, callables.send)
        let awaitable = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 3) { PyObject_Vectorcall(runtime.app, $0, 3, nil) }
        }
        Py_DecRef(scope)
        Py_DecRef(callables.receive)
        Py_DecRef(callables.send)
        guard let coroutine = awaitable.flatMap(Self.awaitableIterator), let task = ASGITask(runtime: tasks, coroutine: coroutine, finished: finished) else {
            let error = PythonRuntime.fetchException()
            finished(error)
            if let error { Py_DecRef(error) }
            return nil
        }
        task.start()
        return task
    }

    /// What `await awaitable` iterates (stolen; a new reference): a coroutine itself, or what its
    /// `__await__` returns. Nil with TypeError set for an object that cannot be awaited.
    private static func awaitableIterator(_ awaitable: PyObjectPointer) -> PyObjectPointer? {
        if appserver_is_coroutine(awaitable) != 0 { return awaitable }
        defer { Py_DecRef(awaitable) }
        if let method = PyObject_GetAttrString(awaitable, "__await__") {
            defer { Py_DecRef(method) }
            return PyObject_CallNoArgs(method)
        }
        PyErr_Clear()
        PyErr_SetString(appserver_exc_type_error(), "the ASGI app returned \(PythonRuntime.repr(awaitable)), which cannot be awaited")
        return nil
    }

    /// A new pending future of the loop.
    func newFuture() -> PyObjectPointer? {
        PyObject_CallNoArgs(createFuture)
    }

    /// A future already done with `value` (stolen).
    func doneFuture(with value: PyObjectPointer) -> PyObjectPointer? {
        guard let future = newFuture() else { Py_DecRef(value); return nil }
        resolve(future, with: value)
        return future
    }

    /// `future.set_result(value)` (value stolen); a future cancelled meanwhile is left alone.
    func resolve(_ future: PyObjectPointer, with value: PyObjectPointer) {
        defer { Py_DecRef(value) }
        guard let setResult = PyObject_GetAttrString(future, "set_result") else { PyErr_Clear(); return }
        defer { Py_DecRef(setResult) }
        if let result = PyObject_CallOneArg(setResult, value) { Py_DecRef(result) } else { PyErr_Clear() }
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
        if config.interface == .auto, let check = PyDict_GetItemString(namespace, "is_asgi") {
            if let result = PyObject_CallOneArg(check, app) {
                asgi = result == appserver_true()
                Py_DecRef(result)
            } else {
                PyErr_Clear()
            }
        }
        if asgi { return ASGIHost(runtime: self, config: config, logger: logger, accessLog: accessLog) }
        wrapWithRequestHooks()
        return WSGIHost(runtime: self, config: config, logger: logger, accessLog: accessLog)
    }
}
