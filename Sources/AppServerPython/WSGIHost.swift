import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import Logging
import NIOCore
import Synchronization

/// Runs a WSGI app for one worker: `threads` Python threads take requests from the I/O thread in
/// arrival order. A thread holds the GIL only while it runs Python; it waits for work, for body
/// bytes and for the socket to drain with the GIL released.
public final class WSGIHost: HTTPApplication, @unchecked Sendable {
    let runtime: PythonRuntime
    let logger: Logger
    let accessLog: AccessLogWriter?
    let environConstants: EnvironConstants
    /// Seconds an app thread waits for request body bytes before giving up (the worker timeout).
    let bodyTimeout: Int
    private let monitor = Monitor()
    private var queue = CircularBuffer<HTTPExchange>(initialCapacity: 64)   // guarded by `monitor`
    private var idleThreads = 0                                             // guarded by `monitor`
    private var threads: [WSGIThread] = []

    public init(runtime: PythonRuntime, config: ServerConfig, logger: Logger, accessLog: AccessLogWriter?) {
        self.runtime = runtime
        self.logger = logger
        self.accessLog = accessLog
        self.bodyTimeout = config.timeout
        // Needs the GIL: built while the starting thread still holds it.
        self.environConstants = EnvironConstants(namespace: runtime.namespace, multithread: config.threads > 1,
                                                 multiprocess: config.workers > 1)
        for index in 0..<config.threads {
            threads.append(WSGIThread(host: self, index: index))
        }
    }

    /// Starts the app threads. Call after the starting thread released the GIL.
    public func start() {
        for thread in threads { thread.start() }
    }

    public func handle(_ exchange: HTTPExchange) {
        monitor.withLock {
            queue.append(exchange)
            if idleThreads > 0 { monitor.signal() }
        }
    }

    /// The next request; waits for one when `wait` (call without the GIL).
    func next(wait: Bool) -> HTTPExchange? {
        monitor.withLock {
            if !wait { return queue.popFirst() }
            while queue.isEmpty {
                idleThreads += 1
                monitor.wait()
                idleThreads -= 1
            }
            return queue.popFirst()
        }
    }

    /// The start of the oldest request that has made no progress since, for the heartbeat: a request
    /// stuck in the app makes the worker look silent, and `--timeout` replaces it.
    public func oldestBusySince() -> Int64? {
        var oldest: Int64?
        for thread in threads {
            let value = thread.busySince.load(ordering: .relaxed)
            if value != 0 && value < (oldest ?? .max) { oldest = value }
        }
        return oldest
    }
}

/// Writes access log lines in the configured format.
public final class AccessLogWriter: Sendable {
    let formatter: AccessLogFormatter
    let file: LogFile

    public init(format: String, file: LogFile) {
        self.formatter = AccessLogFormatter(format: format)
        self.file = file
    }
}
