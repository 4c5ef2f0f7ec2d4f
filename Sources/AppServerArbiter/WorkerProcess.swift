import AppServerConfig
import AppServerHTTP
import AppServerPython
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The life of a worker process after fork: start Python and the app, serve the inherited sockets,
/// keep the heartbeat, and stop when the arbiter (or max-requests) says so.
enum WorkerProcess {
    /// Exit statuses the arbiter understands (Gunicorn's): the app failed to import, or the named
    /// callable is missing. Either one before boot makes the arbiter stop rather than respawn forever.
    static let bootErrorStatus: Int32 = 3
    static let appLoadErrorStatus: Int32 = 4
    /// The app's ASGI lifespan startup failed: retried with a growing delay.
    static let startupFailedStatus = AppLoadError.startupFailedStatus

    /// `countMetrics`: the arbiter serves a metrics endpoint, so requests are counted for it.
    static func run(config: ServerConfig, listeners: [Listener], slot: WorkerSlot, age: Int, logger: Logger,
                    errorLog: LogFile, accessLog: LogFile?, countMetrics: Bool) -> Never {
        let signals = SignalPipe(handling: [SIGTERM, SIGQUIT, SIGINT, SIGHUP, SIGABRT, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGWINCH])
        let arbiter = getppid()
        ProcessTitle.set("worker", name: config.procName)
        HeapTuning.keepFreedMemoryForReuse()
        // Hooks run here with the interpreter inherited from the arbiter, which holds their functions.
        let hooks = WorkerHooks(config: config, age: age, arbiter: arbiter)
        if let traceback = hooks.run("post_fork", [hooks.server, .thisWorker(age: age, booted: false)], holdingGIL: true, logged: false) {
            exit(bootErrorStatus, saying: "Exception in worker process: the post_fork hook failed:\n\(traceback)", in: slot)
        }
        switchUser(config, slot)

        let runtime: PythonRuntime
        do {
            runtime = try PythonRuntime(config: config, logger: logger)
        } catch {
            exit(error.exitStatus, saying: error.description, in: slot)
        }
        runtime.sendWSGIErrors { errorLog.write($0) }
        let accessWriter = accessLog.map { AccessLogWriter(format: config.accessLogformat, requestIDHeader: config.requestIDHeader, file: $0) }
        let host = runtime.makeHost(config: config, logger: logger, accessLog: accessWriter)
        if let traceback = hooks.run("post_worker_init", [.thisWorker(age: age, booted: true)], holdingGIL: true, logged: false) {
            exit(bootErrorStatus, saying: "Exception in worker process: the post_worker_init hook failed:\n\(traceback)", in: slot)
        }
        runtime.releaseMainThread()
        do {
            try host.start()
        } catch {
            exit(error.exitStatus, saying: error.description, in: slot)
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let eventLoop = group.next()
        let maxRequests = config.maxRequests > 0 ? config.maxRequests + Int.random(in: 0...config.maxRequestsJitter) : 0
        let recycling = OnceFlag()
        let statsd = config.statsdHost != nil
        let metrics = countMetrics ? slot.metrics : nil
        WorkerMetrics.current = metrics
        let server = HTTPServer(
            application: host, limits: HTTPLimits(config: config), edge: EdgePolicy(config: config), eventLoop: eventLoop, logger: logger,
            requestLimit: maxRequests,
            stuckRequestTimeout: config.timeout > 0 && host.outlivesStuckRequests ? config.timeout : 0,
            onLimitReached: {
                if recycling.setOnce() {
                    slot.metrics.retiringAfterMaxRequests()
                    logger.info("Autorestarting worker after current request (max requests \(maxRequests) reached).")
                    signals.raise(SIGTERM)
                }
            },
            metrics: metrics,
            onAccepting: { accepting in slot.accepting.store(accepting ? 1 : 0, ordering: .relaxed) },
            onRequestFinished: { served, status, nanoseconds in
                slot.requests.store(Int64(served), ordering: .relaxed)
                if statsd { slot.record(status: status, nanoseconds: nanoseconds) }
            })
        do {
            try server.serve(listeners: listeners.map { $0.options(config) })
        } catch {
            exit(1, saying: "worker cannot serve the listening sockets: \(error)", in: slot)
        }
        // The heartbeat: now, or the last progress of the oldest request still running.
        eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(500)) { _ in
            let now = MonotonicClock.nanoseconds()
            slot.heartbeat.store(min(now, host.stuckSince() ?? now), ordering: .relaxed)
            accessWriter?.flush()   // lines a thread still busy with more work has gathered
            if getppid() != arbiter {
                // Never outlive the arbiter: nobody would supervise or stop this worker.
                logger.warning("Parent changed, shutting down: \(getpid())")
                signals.raise(SIGTERM)
            }
        }
        slot.booted.store(1, ordering: .relaxed)

        while true {
            switch signals.next() {
            case SIGTERM, SIGHUP:
                stopGracefully(server: server, host: host, timeout: config.gracefulTimeout, logger: logger, hooks: hooks, slot: slot, accessLog: accessWriter)
            case SIGQUIT:
                // Gunicorn's worker_int: the worker was told to stop by INT or QUIT.
                hooks.run("worker_int", [.thisWorker(age: age, booted: true)])
                stopGracefully(server: server, host: host, timeout: config.gracefulTimeout, logger: logger, hooks: hooks, slot: slot, accessLog: accessWriter)
            case SIGINT:
                hooks.run("worker_int", [.thisWorker(age: age, booted: true)])
                hooks.run("worker_exit", [hooks.server, .thisWorker(age: age, booted: true)])
                accessWriter?.flush()
                _exit(0)
            case SIGABRT:
                hooks.run("worker_abort", [.thisWorker(age: age, booted: true)])
                accessWriter?.flushUnlessBusy()
                exit(1, saying: "worker timed out: a request made no progress for \(config.timeout) s; exiting", in: slot, level: .critical)
            case SIGUSR1:
                errorLog.reopen()
                accessLog?.reopen()
                if config.captureOutput { errorLog.captureStandardStreams() }   // stdout and stderr follow the new file
            default:
                continue
            }
        }
    }

    /// Becomes the configured `user` and `group` before any of the app's code runs (Gunicorn's
    /// `set_owner_process`): the group first, while still allowed to, and the supplementary groups
    /// of the arbiter's user are left behind. A worker that cannot switch exits: it must not serve as root.
    private static func switchUser(_ config: ServerConfig, _ slot: WorkerSlot) {
        guard let gid = config.group ?? config.user?.primaryGroup else { return }
        if geteuid() == 0 {
            if let user = config.user, config.initgroups {
                guard Glibc.initgroups(user.name, gid) == 0 else { fail("initgroups(\(user.name))", slot) }
            } else {
                var groups = [gid]
                guard setgroups(1, &groups) == 0 else { fail("setgroups(\(gid))", slot) }
            }
        }
        if getegid() != gid { guard setgid(gid) == 0 else { fail("setgid(\(gid))", slot) } }
        if let user = config.user, geteuid() != user.uid {
            guard setuid(user.uid) == 0 else { fail("setuid(\(user.name))", slot) }
        }
    }

    private static func fail(_ call: String, _ slot: WorkerSlot) -> Never {
        exit(bootErrorStatus, saying: "worker cannot switch to the configured user and group: \(call) failed: \(String(cString: strerror(errno)))", in: slot)
    }

    /// Leaves why this worker cannot go on for the arbiter to log (see `LastWords`), and exits.
    private static func exit(_ status: Int32, saying message: String, in slot: WorkerSlot, level: Logger.Level = .error) -> Never {
        slot.lastWords.say(level, message)
        _exit(status)
    }

    /// Stops accepting, lets requests in flight finish (up to `timeout` seconds), then exits.
    private static func stopGracefully(server: HTTPServer, host: any AppHost, timeout: Int, logger: Logger, hooks: WorkerHooks, slot: WorkerSlot,
                                       accessLog: AccessLogWriter?) -> Never {
        logger.info("Worker exiting (pid: \(getpid()))")
        let done = Monitor()
        let finished = OnceFlag()
        server.drain().whenComplete { _ in
            done.withLock {
                _ = finished.setOnce()
                done.broadcast()
            }
        }
        let deadline = Monotonic.now().adding(seconds: Double(timeout))
        done.withLock {
            while !finished.isSet && Monotonic.now() < deadline {
                done.wait(deadline: deadline)
            }
        }
        let timedOut = !finished.isSet
        if !timedOut { host.stop(timeout: timeout) }
        hooks.run("worker_exit", [hooks.server, .thisWorker(age: hooks.age, booted: true)])
        accessLog?.flush()
        if timedOut { exit(0, saying: "graceful timeout (\(timeout) s) reached with requests still running; exiting", in: slot, level: .warning) }
        _exit(0)
    }
}

/// The server hooks a worker runs (post_fork, post_worker_init, worker_int, worker_abort, worker_exit),
/// when the arbiter's Python config file defined them.
struct WorkerHooks {
    let defined: Set<String>
    let age: Int
    let arbiter: pid_t
    let workers: Int

    init(config: ServerConfig, age: Int, arbiter: pid_t) {
        defined = Set(config.hooks)
        self.age = age
        self.arbiter = arbiter
        workers = config.workers
        // This process's `worker` object, for the hooks that run here (the GIL is held after fork).
        if !defined.isEmpty { ServerHooks.introduceWorker(age: age) }
    }

    var server: ServerHooks.Argument { .server(pid: arbiter, workers: workers) }

    /// Runs the hook; returns its traceback if it raised. `holdingGIL`: the caller has the GIL already;
    /// `logged: false`: the caller logs the traceback.
    @discardableResult
    func run(_ name: String, _ arguments: [ServerHooks.Argument], holdingGIL: Bool = false, logged: Bool = true) -> String? {
        guard defined.contains(name) else { return nil }
        if holdingGIL { return ServerHooks.call(name, arguments, logged: logged) }
        return ServerHooks.withGIL { ServerHooks.call(name, arguments, logged: logged) }
    }
}

/// A flag set once, from any thread.
final class OnceFlag: @unchecked Sendable {
    private let lock = Monitor()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    /// True for the one caller that set it.
    func setOnce() -> Bool { lock.withLock { defer { value = true }; return !value } }
}

