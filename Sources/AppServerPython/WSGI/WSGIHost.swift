import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import Logging
import NIOCore
import Synchronization

/// What an app thread takes from the queue: a new request, or the rest of a response that was
/// started on the I/O thread and had to wait for the socket.
enum WorkItem {
    case request(HTTPExchange)
    case continuation(ResponseContinuation)
}

/// A response body iteration handed from the I/O thread to an app thread when the socket could not
/// take more: the iterator goes on where it stopped.
final class ResponseContinuation {
    let request: ActiveRequest
    /// The app's body iterable and its iterator, taken (with the GIL) by the app thread that goes on.
    var result: PyRef?
    var iterator: PyRef?

    init(request: ActiveRequest, result: consuming PyRef, iterator: consuming PyRef) {
        self.request = request
        self.result = .some(consume result)
        self.iterator = .some(consume iterator)
    }
}

/// Runs a WSGI app for one worker. A thread holds the GIL only while it runs Python; it waits for
/// work, for body bytes and for the socket to drain with the GIL released.
///
/// With `--threads 1` (a sync worker, one request at a time) a request whose body has fully arrived
/// runs right on the I/O thread: no hand-off between threads, which on one core costs more than the
/// app itself. Everything that could block the I/O thread goes to the one app thread instead: a body
/// still arriving, or a body iteration that has to wait for the socket to drain.
public final class WSGIHost: AppHost, @unchecked Sendable {
    let runtime: PythonRuntime
    let logger: Logger
    let accessLog: AccessLogWriter?
    /// gunicorn.access, where a Gunicorn worker logs a WSGI app's access lines.
    let accessGate: AccessLoggerGate?
    let environConstants: EnvironConstants
    /// Seconds an app thread waits for request body bytes before giving up (the worker timeout).
    let bodyTimeout: Int
    /// `sendfile`: wsgi.file_wrapper files go out with sendfile(2) (off: iterated like any body).
    let sendfile: Bool
    private let monitor = Monitor()
    private var queue: AppThreadQueue<WorkItem>                         // guarded by `monitor`
    private let maxRunning: Int
    private var threads: [WSGIThread] = []
    /// Runs requests on the I/O thread (sync mode only).
    private var inlineThread: WSGIThread?

    public init(runtime: PythonRuntime, config: ServerConfig, logger: Logger, accessLog: AccessLogWriter?) {
        self.runtime = runtime
        self.logger = logger
        self.accessLog = accessLog
        accessGate = accessLog == nil ? nil : AccessLoggerGate(loggerName: "gunicorn.access", glue: runtime.glue, errorLog: logger)
        self.bodyTimeout = config.timeout
        self.sendfile = config.sendfile
        self.maxRunning = config.threads
        self.queue = AppThreadQueue(maxRunning: config.threads, stallDelay: WSGIHost.stallDelay)
        // Needs the GIL: built while the starting thread still holds it.
        do {
            self.environConstants = try EnvironConstants(glue: runtime.glue, errors: runtime.wsgiErrors, multithread: config.threads > 1,
                                                         multiprocess: config.workers > 1, headerMap: config.headerMap,
                                                         requestIDHeader: config.requestIDHeader,
                                                         scriptName: getenv("SCRIPT_NAME").map { String(cString: $0) } ?? "")
        } catch {
            fatalError("cannot make the WSGI environ's constants: \(PythonError.fetchText() ?? "?")")
        }
        for index in 0..<config.threads {
            threads.append(WSGIThread(host: self, index: index))
        }
        if config.threads == 1 {
            inlineThread = WSGIThread(host: self, index: config.threads)
        }
    }

    public var interfaceName: String { "wsgi, threads: \(maxRunning)" }

    /// Starts the app threads. Call after the starting thread released the GIL.
    public func start() {
        for thread in threads { thread.start() }
    }

    /// After the server drained: the app's atexit functions.
    public func stop(timeout: Int) {
        runtime.runExitFunctions()
    }

    /// How long queued work may see no app thread take any, or the oldest request wait, before an idle
    /// thread takes it: what a request behind one that waits loses (AppThreadQueue).
    static let stallDelay: Int64 = 1_000_000

    public func handle(_ exchange: HTTPExchange) {
        guard inlineThread != nil, exchange.body.isFinished else {
            enqueue(.request(exchange), on: exchange.eventLoop)
            return
        }
        // Sync mode runs the app on the I/O thread: not inside the read that brought the request, but
        // once the tick's reads are done, the tick's requests one after another. The kernel's socket
        // reads, then the app's Python, then the writes (HTTPServer's end of the tick), each with its
        // code and data warm in the caches, rather than a read between every two app calls. No
        // response leaves later for it: the ends were already written at the end of the tick. Flask
        // JSON and Django take 6-9% less CPU a request (bench/RESULTS.md, twelfth pass).
        exchange.handleAfterReads()
    }

    public func handleAfterReads(_ exchange: HTTPExchange) {
        // One before it may have handed its body's iteration to an app thread: then it queues.
        if let inlineThread, monitor.withLock({ queue.claimInline() }) {
            if inlineThread.serveInline(exchange) {
                // Its body's iteration went to an app thread, which needs the GIL now; the tick's other
                // requests queue behind it (claimInline), so the I/O thread has no more Python to run.
                inlineThread.leaveInline()
            } else {
                finished()
            }
        } else {
            enqueue(.request(exchange), on: exchange.eventLoop)
        }
    }

    /// The I/O thread gives the GIL back once per tick, not after each request it ran.
    public func afterReadsHandled() {
        inlineThread?.leaveInline()
        accessLog?.flush()   // the tick's lines, in one write
    }

    /// Queues work for the app threads; called on the I/O thread (`eventLoop`).
    func enqueue(_ item: WorkItem, on eventLoop: any EventLoop) {
        let wake = monitor.withLock { () -> AppThreadQueue<WorkItem>.Wake in
            let isContinuation = if case .continuation = item { true } else { false }
            let wake = queue.enqueue(item, holdsPlace: isContinuation, now: .now())
            if wake == .now { monitor.signal() }
            return wake
        }
        if wake == .afterTick {
            // After the tick's other reads: one thread wakes for all the requests they bring.
            eventLoop.execute { [self] in
                monitor.withLock { if queue.tickEnded() { monitor.signal() } }
            }
        }
    }

    /// The next work item for an app thread: waits for one (call without the GIL), as AppThreadQueue
    /// decides. The thread is then active until `nextForActive` returns nil. `joined`: it was called in
    /// while the active threads made progress (then `joinerFoundTheGILBusy` says whether it goes on).
    func next() -> (item: WorkItem, joined: Bool) {
        monitor.withLock {
            var waiter = AppThreadQueue<WorkItem>.Waiter()
            while true {
                switch queue.step(&waiter, now: .now()) {
                case .take(let item, let wakeAnother):
                    if wakeAnother { monitor.signal() }
                    return (item, false)
                case .join(let item, let wakeAnother):
                    if wakeAnother { monitor.signal() }
                    return (item, true)
                case .waitForSignal:
                    monitor.wait()
                case .waitUntil(let deadline):
                    monitor.wait(deadline: deadline)
                }
            }
        }
    }

    /// An app thread that joined (`next()`) waited `waited` nanoseconds to take the GIL back: true when
    /// that says the GIL is busy with requests on the CPU; the thread then runs that item alone and waits
    /// again, `endActive()` (AppThreadQueue.joinerWaitedForTheGIL).
    func joinerFoundTheGILBusy(waited: Int64) -> Bool {
        guard waited >= WSGIHost.stallDelay else { return false }
        monitor.withLock { queue.joinerWaitedForTheGIL(now: .now()) }
        return true
    }

    func endActive() {
        monitor.withLock { queue.endActive() }
    }

    /// More work for an active app thread, without waiting; nil: it is to wait with `next()`.
    func nextForActive() -> WorkItem? {
        monitor.withLock {
            guard let (item, wakeAnother) = queue.nextForActive() else { return nil }
            if wakeAnother { monitor.signal() }
            return item
        }
    }

    /// A request is done (its response ended, `close()` called).
    func finished() {
        monitor.withLock {
            if queue.finished() { monitor.signal() }
        }
    }

    public var outlivesStuckRequests: Bool { maxRunning > 1 }

    /// With one thread (a sync worker), the start of the request that has made no progress since: a
    /// request stuck in the app makes the worker look silent, and `--timeout` replaces it. With more,
    /// a stuck request is answered 504 by the I/O thread after `timeout` and only takes its thread; the
    /// worker is stuck when every thread is, and is replaced `timeout` + 2 s after the last of them
    /// was answered (so that the 504s, made by a once-a-second sweep, always go out first).
    public func stuckSince() -> Int64? {
        if maxRunning > 1 {
            var newest: Int64 = 0
            for thread in threads {
                let value = thread.busySince.load(ordering: .relaxed)
                if value == 0 { return nil }
                newest = max(newest, value)
            }
            return newest + Int64(bodyTimeout + 2) * 1_000_000_000
        }
        var oldest: Int64?
        for thread in threads + (inlineThread.map { [$0] } ?? []) {
            let value = thread.busySince.load(ordering: .relaxed)
            if value != 0 && value < (oldest ?? .max) { oldest = value }
        }
        return oldest
    }
}
