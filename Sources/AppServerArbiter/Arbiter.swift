import AppServerConfig
import AppServerHTTP
import AppServerPython
import AppServerSystemd
import Foundation
import Logging

/// The master process: one thread, no event loop. It holds the listening sockets, forks the workers
/// and keeps their number right, replaces those that die or fall silent, and turns signals into
/// actions (Gunicorn's meanings). Its whole life is `run`: start, then loop over signals, reaping,
/// murdering and managing until it stops.
public final class Arbiter {
    /// How a stop was asked for.
    private enum Stop { case graceful, fast }

    private struct Worker {
        let pid: pid_t
        let slot: WorkerSlot
        let age: Int
        let generation: Int
        let spawned: Double
        var abortedAt: Double?
        var retiring = false
        var booted: Bool { slot.booted.load(ordering: .relaxed) == 1 }
        var accepting: Bool { slot.accepting.load(ordering: .relaxed) == 1 }
    }

    private var config: ServerConfig
    /// The binary's version, for the log and the status line.
    private let version: String
    /// Builds the configuration anew (command line over config file) for a HUP reload.
    private let reloadConfig: () throws -> ServerConfig
    private let logger: Logger
    private let errorLog: LogFile
    private var accessLog: LogFile?
    private var listeners: [Listener] = []
    private var workers: [pid_t: Worker] = [:]
    private var workerCount: Int
    private var age = 0
    private var generation = 1
    /// The generation and config to go back to when a reload's new app fails to boot.
    private var previous: (generation: Int, config: ServerConfig)?
    /// The new generation serves; the reload is answered once the old workers stopped accepting.
    private var reloadClosing = false
    private var reloadClosingSince: Double?
    private var signals: SignalPipe!
    private var stopping: (mode: Stop, deadline: Double)?
    private var exitStatus: Int32 = 0
    private var nextSpawnAllowed = 0.0
    /// Seconds to wait before the next worker after the app's startup (ASGI lifespan) failed; doubles
    /// up to 32 s while it keeps failing, and resets once a worker boots.
    private var startupBackoff = 0.0
    private let notifier = ServiceNotifier()
    private var lastStartExtension = 0.0
    /// Requests served by workers that have exited (the live ones count in their slots).
    private var requestsOfExitedWorkers: Int64 = 0
    /// The last thing that went wrong, for systemd's status line.
    private var lastError: String?
    /// USR2: the new arbiter we started from the binary on disk, until it has taken over (it reports
    /// `ready` once its workers have booted) or failed.
    private var upgrade: Upgrade.InProgress?
    /// This arbiter was replaced by a new one: it stops without removing what the new one uses.
    private var handedOver = false
    /// Set in a new arbiter started by USR2: where to say that it is ready.
    private var previousArbiter: (pid: pid_t, readyPipe: CInt)?
    /// `appserver reload|upgrade|status --pid`: the socket, and the clients waiting for the outcome
    /// of the reload or upgrade in progress.
    private var control: ControlSocket?
    private var reloadWaiters: [CInt] = []
    private var upgradeWaiters: [CInt] = []
    /// Handed over: the upgrade is answered once our workers stopped accepting (or after 2 s), so
    /// that every new connection from then on reaches the new arbiter's workers.
    private var upgradeAnswerDue: (message: String, since: Double)?
    /// `--reload`: the app's source files, and when a change is to be reloaded (changes come in bursts).
    private var reloader: SourceWatcher?
    /// `statsd_host`: Gunicorn's metrics, from the workers' slots.
    private var statsd: StatsdSender?
    private var sourceReloadDue: Double?
    /// `metrics_bind`: /metrics, /healthz, /readyz and /status, answered in this loop.
    private var metricsEndpoint: MetricsEndpoint?
    /// After USR2, the new arbiter answers on the metrics socket only once the old one stopped.
    private var metricsServing = false
    /// The arbiter this one replaced by USR2, if any.
    private var predecessorPID: pid_t?
    /// Every counter, monotonic across worker deaths, HUP and USR2.
    private var ledger: MetricsLedger!
    /// A graceful stop with `drain_delay`: /readyz answers 503 and the workers keep serving until then.
    private var drainingUntil: Double?
    private let startTime = Date().timeIntervalSince1970

    public init(config: ServerConfig, version: String, logger: Logger, errorLog: LogFile, accessLog: LogFile?,
                reloadConfig: @escaping () throws -> ServerConfig) {
        self.config = config
        self.version = version
        self.logger = logger
        self.errorLog = errorLog
        self.accessLog = accessLog
        self.workerCount = config.workers
        self.reloadConfig = reloadConfig
        if errorLog.isJournal, let journal = JournalSocket() { JournalFields.send = { journal.send($0) } }
        JournalFields.processFields = [("ARBITER_PID", String(getpid()))]
    }

    /// Runs until stopped; returns the process exit status.
    public func run() -> Int32 {
        let status = serve()
        // A new arbiter that stops before it was ready tells the old one why.
        if let previousArbiter { Upgrade.say("failed \(status == 0 ? 1 : status)", on: previousArbiter.readyPipe) }
        return status
    }

    private func serve() -> Int32 {
        do {
            try start()
        } catch {
            logger.error("\(error)")
            shutdownListeners()
            return exitStatus != 0 ? exitStatus : 1
        }
        while true {
            sleepUntilSignal()
            for signal in signals.drain() { handle(signal) }
            reloadChangedSources()
            reapWorkers()
            serveMetrics()
            if let drainingUntil, MonotonicClock.seconds() >= drainingUntil {
                self.drainingUntil = nil
                logger.info("drain delay over: stopping gracefully")
                stop(.graceful)
            }
            if let stopping {
                answerUpgradeOnceNotAccepting()
                if workers.isEmpty { break }
                if MonotonicClock.seconds() >= stopping.deadline { killAll(SIGKILL) }
                continue
            }
            murderWorkers()
            manageWorkers()
            reportToSystemd()
            statsd?.sendIfDue(now: MonotonicClock.seconds(), workers: workers.values.map { ($0.pid, $0.slot) },
                              logCounts: LogCounters.read(), backlog: config.enableBacklogMetric ? Listeners.backlog(listeners) : nil)
        }
        shutdown()
        // The last totals, for a next arbiter still serving after this one is gone.
        _ = ledger.totals(live: [])
        return exitStatus
    }

    // MARK: start and stop

    private func start() throws {
        signals = SignalPipe(handling: [SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH])
        ProcessTitle.set("master", name: config.procName)
        logger.info("Starting appserver \(version)")
        logNotes(config)
        LogCounters.prepare()
        ledger = MetricsLedger(predecessor: MetricsPage.inherited(logger: logger), logger: logger)
        ServerHooks.logger = logger
        if let host = config.statsdHost {
            statsd = StatsdSender(address: host, prefix: config.statsdPrefix, tags: config.dogstatsdTags, logger: logger)
        }
        if let file = config.configFile { logger.info("Config file: \(file)\(config.hooks.isEmpty ? "" : "; server hooks: " + config.hooks.joined(separator: ", "))") }
        do {
            try ArbiterPython.start(config)
        } catch {
            logger.error("\(error.description)")
            exitStatus = WorkerProcess.bootErrorStatus
            throw ArbiterStartError(message: "Python could not be started (see above)")
        }
        if config.preloadApp {
            do {
                try ArbiterPython.preload(config)
                logger.info("Preloaded the app \(config.app ?? "") in the arbiter")
            } catch {
                logger.error("\(error.description)")
                exitStatus = error.exitStatus
                throw ArbiterStartError(message: "the app could not be preloaded (see above)")
            }
        }
        shareSettingsWithHooks()
        if runHook("on_starting", [server]) != nil { throw ArbiterStartError(message: "the on_starting hook failed (see above)") }
        previousArbiter = Upgrade.takeHandover()
        predecessorPID = previousArbiter?.pid
        do {
            control = try ControlSocket(pid: getpid())
        } catch {
            logger.warning("no control socket, 'appserver reload --pid' will not reach this server: \(error)")
        }
        if let pidfile = config.pidfile { try Pidfile.write(pidfile) }
        let opened = try Listeners.open(config: config, upgrading: previousArbiter != nil)
        listeners = opened.app
        for listener in listeners {
            logger.info("Listening at: \(listener.description) (\(getpid())) [\(listener.origin)]\(listener.options(config).describedIfNotPlainHTTP)")
        }
        if let listener = opened.metrics {
            metricsEndpoint = MetricsEndpoint(listener: listener)
            metricsServing = previousArbiter == nil
            logger.info("Metrics and health at: \(listener.description)/metrics, /healthz, /readyz [\(listener.origin)]")
        }
        logger.info("Using worker: \(config.interface == .auto ? "auto (ASGI for a coroutine app, else WSGI)" : config.interface.rawValue), threads: \(config.threads)")
        if runHook("when_ready", [server]) != nil { throw ArbiterStartError(message: "the when_ready hook failed (see above)") }
        if config.reload { startReloader() }
        manageWorkers()
    }

    /// What reading the settings found worth saying: capped values, Gunicorn settings without effect,
    /// names in a Python config file that are no setting.
    private func logNotes(_ config: ServerConfig) {
        for note in config.notes {
            switch note.level {
            case .info: logger.info("\(note.text)")
            case .warning: logger.warning("\(note.text)")
            }
        }
    }

    private func shutdown() {
        if let upgradeAnswerDue { answer(&upgradeWaiters, ok: true, upgradeAnswerDue.message) }
        answer(&reloadWaiters, ok: false, "the server stopped before the reload finished")
        answer(&upgradeWaiters, ok: false, "the server stopped before the upgrade finished")
        control?.closeAll()
        runHook("on_exit", [server])
        shutdownListeners()
        logger.info("Shutting down: Master")
    }

    private func shutdownListeners() {
        metricsEndpoint?.closeClients()
        for listener in listeners + (metricsEndpoint.map { [$0.listener] } ?? []) {
            close(listener.descriptor)
            // After a handover the new arbiter serves the same socket file.
            if let path = listener.unixPathToRemove, !handedOver { unlink(path) }
        }
        listeners = []
        if let pidfile = config.pidfile { Pidfile.remove(handedOver ? pidfile + ".oldbin" : pidfile) }
    }

    /// TERM or QUIT: with `drain_delay`, /readyz turns 503 first and the workers keep serving for that
    /// long, so that a load balancer takes this server out before its sockets stop accepting.
    private func stopGracefully() {
        guard stopping == nil, drainingUntil == nil else { return }
        guard config.drainDelay > 0, !handedOver else { return stop(.graceful) }
        drainingUntil = MonotonicClock.seconds() + Double(config.drainDelay)
        notifier.stopping()
        logger.info("draining: /readyz answers 503; serving \(config.drainDelay) s more, then stopping gracefully")
    }

    private func stop(_ mode: Stop) {
        drainingUntil = nil
        if let stopping, stopping.mode == .fast || mode == .graceful { return }
        let grace = mode == .graceful ? Double(config.gracefulTimeout) : 2
        stopping = (mode, MonotonicClock.seconds() + grace)
        if !handedOver { notifier.stopping() }
        // New connections wait in the backlog of sockets we still hold; workers stop accepting first.
        killAll(mode == .graceful ? SIGTERM : SIGINT)
    }

    // MARK: signals

    private func sleepUntilSignal() {
        // Short waits while stopping, and while a reload waits for the old workers to stop accepting.
        var timeout: Int32 = stopping != nil ? 100 : reloadClosing ? 10 : sourceReloadDue != nil ? 50 : 1000
        if let drainingUntil { timeout = min(timeout, Int32(max(10, (drainingUntil - MonotonicClock.seconds()) * 1000))) }
        if metricsEndpoint != nil && !metricsServing { timeout = min(timeout, 100) }   // waiting for the old arbiter to stop serving
        if let interval = notifier.watchdogInterval {
            // Wake often enough to ping the watchdog on time (it is due every `interval` seconds).
            timeout = min(timeout, Int32(max(10, interval * 1000 / 4)))
        }
        let metrics = metricsServing ? metricsEndpoint : nil
        let readable = signals.wait(milliseconds: timeout, orReadable: (upgrade.map { [$0.pipe] } ?? []) + (control?.descriptors ?? [])
                                    + (reloader.map { [$0.descriptor] } ?? []) + (metrics?.readDescriptors ?? []),
                                    orWritable: metrics?.writeDescriptors ?? [])
        if let pipe = upgrade?.pipe, readable.contains(pipe) { readUpgradeReports() }
        if let reloader, readable.contains(reloader.descriptor) {
            let changed = reloader.readChanges()
            if !changed.isEmpty {
                logger.info("--reload: \(changed.count == 1 ? changed[0] : "\(changed.count) files") changed; reloading")
                sourceReloadDue = MonotonicClock.seconds() + 0.1
            }
        }
        handleControlRequests()
    }

    // MARK: --reload

    private func startReloader() {
        let cwd = FileManager.default.currentDirectoryPath
        let roots = [cwd] + config.pythonpath.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 }
        reloader = SourceWatcher(roots: roots, extraFiles: config.reloadExtraFiles, logger: logger)
    }

    /// A change seen by `--reload`, once the burst of writes is over and no reload is under way.
    private func reloadChangedSources() {
        guard let due = sourceReloadDue, MonotonicClock.seconds() >= due, previous == nil, stopping == nil else { return }
        sourceReloadDue = nil
        _ = reload()
    }

    // MARK: control requests

    /// `appserver reload|upgrade|status --pid`: a status is answered at once; a reload or upgrade is
    /// started and answered when it has succeeded or failed.
    private func handleControlRequests() {
        guard let control else { return }
        for (client, request) in control.collectRequests(now: MonotonicClock.seconds()) {
            logger.info("control request: \(request.rawValue)")
            if stopping != nil {
                control.answer(client, ok: false, "the server is stopping")
                continue
            }
            switch request {
            case .status:
                let booted = workers.values.filter { $0.generation == generation && !$0.retiring && $0.booted }.count
                control.answer(client, ok: true, "pid \(getpid()): \(statusLine(booted: booted))")
            case .statusJSON:
                control.answer(client, ok: true, snapshot().json())
            case .reload where Upgrade.binaryReplaced():
                logger.info("the binary on disk has changed since this arbiter started: upgrading instead of reloading")
                fallthrough
            case .upgrade:
                // A waiter before the action: the workers it forks must close the client's descriptor.
                upgradeWaiters.append(client)
                if let refusal = startUpgrade() {
                    upgradeWaiters.removeLast()
                    control.answer(client, ok: false, refusal)
                }
            case .reload:
                reloadWaiters.append(client)
                if let refusal = reload() {
                    reloadWaiters.removeLast()
                    control.answer(client, ok: false, refusal)
                }
            }
        }
    }

    private func answer(_ waiters: inout [CInt], ok: Bool, _ message: String) {
        for client in waiters { control?.answer(client, ok: ok, message) }
        waiters = []
    }

    // MARK: systemd

    /// READY=1 once the current generation's workers have all booted (again after a reload), a
    /// status line, more start-up time while the app imports, and the watchdog ping, sent only while
    /// this loop runs and some worker is alive and heartbeating within `--timeout`.
    private func reportToSystemd() {
        let now = MonotonicClock.seconds()
        let current = workers.values.filter { $0.generation == generation && !$0.retiring }
        let booted = current.filter(\.booted).count
        if booted > 0 { startupBackoff = 0 }
        if !notifier.isReady {
            if booted >= workerCount && previous == nil {
                if let previousArbiter {
                    // Tell the old arbiter, which (as systemd's main process) hands MAINPID over to us.
                    Upgrade.say("ready \(getpid())", on: previousArbiter.readyPipe)
                    close(previousArbiter.readyPipe)
                    self.previousArbiter = nil
                    notifier.ready(status: statusLine(booted: booted), mainPID: getpid())
                    logger.info("ready: \(booted) workers booted; taking over from the previous arbiter \(previousArbiter.pid)")
                } else {
                    notifier.ready(status: statusLine(booted: booted))
                    logger.info("ready: \(booted) workers booted")
                }
            } else if now - lastStartExtension >= 1 {
                lastStartExtension = now
                notifier.extendStartTimeout(seconds: 10)
            }
        } else {
            notifier.status(statusLine(booted: booted))
        }
        notifier.watchdog(now: now, healthy: workers.values.contains { isHealthy($0, now: now) })
    }

    /// Booted, not given up on, and heartbeating within `timeout`.
    private func isHealthy(_ worker: Worker, now: Double) -> Bool {
        let limit = config.timeout > 0 ? Double(config.timeout) : .infinity
        return worker.booted && worker.abortedAt == nil && now - Double(worker.slot.heartbeat.load(ordering: .relaxed)) / 1e9 <= limit
    }

    // MARK: metrics and health

    /// Answers the metrics endpoint's clients. After USR2 the new arbiter starts answering once the
    /// old one has stopped, and the old one, handed over, keeps its totals current for the new one.
    private func serveMetrics() {
        guard let endpoint = metricsEndpoint else { return }
        if handedOver {
            _ = ledger.totals(live: workers.values.map(\.slot.metrics))
            return
        }
        if !metricsServing {
            guard ledger.predecessorStoppedServing(pid: predecessorPID) else { return }
            metricsServing = true
        }
        endpoint.service(now: MonotonicClock.seconds()) { _, path in
            switch path {
            case "/metrics":
                return .init(status: 200, contentType: PrometheusText.contentType, body: snapshot().prometheus())
            case "/healthz":
                return .init(status: 200, body: "ok\n")
            case "/readyz":
                let readiness = readiness(now: MonotonicClock.seconds())
                return .init(status: readiness.ready ? 200 : 503, body: readiness.state + "\n")
            case "/status":
                return .init(status: 200, contentType: "application/json", body: snapshot().json() + "\n")
            default:
                return .init(status: 404, body: "not found: try /metrics, /healthz, /readyz or /status\n")
            }
        }
    }

    /// What /readyz says: ready while some worker that accepts is healthy; not while starting,
    /// draining (a graceful stop, and its `drain_delay`), or when no worker is healthy.
    private func readiness(now: Double) -> (ready: Bool, state: String) {
        if handedOver { return (false, "handed over to a new arbiter") }
        if stopping != nil || drainingUntil != nil { return (false, "draining") }
        if workers.values.contains(where: { $0.accepting && !$0.retiring && isHealthy($0, now: now) }) { return (true, "ready") }
        if !workers.values.contains(where: \.booted) { return (false, "starting") }
        return (false, "no healthy worker")
    }

    /// The server now, for /metrics, /status and `appserver status --json`.
    private func snapshot() -> ServerSnapshot {
        let now = MonotonicClock.seconds()
        var views: [ServerSnapshot.Worker] = []
        for worker in workers.values.sorted(by: { $0.age < $1.age }) {
            let gauges = worker.slot.metrics.gauges
            let state = !worker.booted ? "booting" : worker.retiring || !worker.accepting ? "retiring" : gauges.inFlight > 0 ? "busy" : "idle"
            var process = ProcessStats.read(pid: worker.pid)
            if let read = process { process?.cpuMicroseconds = ledger.liveCPU(pid: worker.pid, microseconds: read.cpuMicroseconds) }
            views.append(.init(pid: worker.pid, age: worker.age, generation: worker.generation, state: state,
                               requests: worker.slot.requests.load(ordering: .relaxed),
                               secondsSinceHeartbeat: max(0, now - Double(worker.slot.heartbeat.load(ordering: .relaxed)) / 1e9),
                               gauges: gauges, process: process))
        }
        let readiness = readiness(now: now)
        return ServerSnapshot(pid: getpid(), version: version, generation: generation, desiredWorkers: workerCount,
                              ready: readiness.ready, readiness: readiness.state, workers: views,
                              totals: ledger.totals(live: workers.values.map(\.slot.metrics)),
                              listenQueues: Listeners.queues(listeners), startTime: startTime,
                              reloading: previous != nil, upgrading: upgrade != nil, lastError: lastError)
    }

    private func statusLine(booted: Int) -> String {
        let served = requestsOfExitedWorkers + workers.values.reduce(0) { $0 + $1.slot.requests.load(ordering: .relaxed) }
        var line = "\(booted) workers serving, generation \(generation), \(served) requests served, appserver \(version)"
        if let lastError { line += "; last error: \(lastError)" }
        return line
    }

    private func handle(_ signal: CInt) {
        switch signal {
        case SIGCHLD:
            break
        case SIGTERM, SIGQUIT:
            logger.info("Handling signal: \(signalName(signal))")
            stopGracefully()
        case SIGINT:
            logger.info("Handling signal: int")
            stop(.fast)
        case SIGHUP:
            logger.info("Handling signal: hup")
            _ = reload()
        case SIGTTIN:
            setWorkerCount(workerCount + 1)
            logger.info("Handling signal: ttin; workers: \(workerCount)")
        case SIGTTOU:
            setWorkerCount(max(1, workerCount - 1))
            logger.info("Handling signal: ttou; workers: \(workerCount)")
        case SIGUSR1:
            logger.info("Handling signal: usr1; reopening log files")
            errorLog.reopen()
            accessLog?.reopen()
            if config.captureOutput { errorLog.captureStandardStreams() }   // stdout and stderr follow the new file
            killAll(SIGUSR1)
        case SIGUSR2:
            logger.info("Handling signal: usr2")
            _ = startUpgrade()
        default:
            break
        }
    }

    /// HUP: read the configuration again and replace the workers with ones that import the app
    /// afresh, retiring old workers only as new ones have booted. Returns why it did not start.
    private func reload() -> String? {
        guard stopping == nil, drainingUntil == nil else { return "the server is stopping" }
        let fresh: ServerConfig
        do {
            fresh = try reloadConfig()
        } catch {
            logger.error("reload failed, keeping the running workers: \(error)")
            lastError = "reload failed: \(error)"
            ledger.count(ArbiterCount.reloads + 1)
            return lastError
        }
        if config.preloadApp { logger.info("reload: the app was preloaded, so the new workers run the code loaded at start (USR2 or 'appserver upgrade' loads new code)") }
        notifier.reloading()
        previous = (generation, config)
        let kept = fresh.keepingRestartSettings(of: config)
        for change in kept.changes {
            logger.warning("reload: a new \(change) takes effect only on restart (or USR2, 'appserver upgrade'); keeping the running value")
        }
        config = kept.config
        ConfiguredEnvironment.apply(config.env)
        logNotes(config)
        shareSettingsWithHooks()
        runHook("on_reload", [server])
        setWorkerCount(config.workers)
        generation += 1
        manageWorkers()
        return nil
    }

    // MARK: workers

    /// Collects exited workers; a worker that could not boot the app stops the server (or, during a
    /// reload, only the reload).
    private func reapWorkers() {
        while true {
            var status: Int32 = 0
            var usage = rusage()
            let pid = wait4(-1, &status, WNOHANG, &usage)
            if pid <= 0 { return }
            guard let worker = workers.removeValue(forKey: pid) else { continue }
            if let words = worker.slot.lastWords.heard() {
                logger.log(level: words.level, "Worker (pid:\(pid)): \(words.message)", metadata: [ErrorLogHandler.journalOnly: ["worker_pid": "\(pid)"]])
            }
            requestsOfExitedWorkers += worker.slot.requests.load(ordering: .relaxed)
            statsd?.workerExited(pid: pid, slot: worker.slot)
            let exited = (status & 0x7f) == 0
            let code = (status >> 8) & 0xff
            let signal = status & 0x7f
            let cpu = Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
            ledger.workerExited(pid: pid, metrics: worker.slot.metrics, cpuMicroseconds: cpu,
                                reason: exitReason(worker, exited: exited, code: code))
            runHook("child_exit", [server, .worker(pid: pid, age: worker.age, alive: false, booted: worker.booted)])
            if !worker.booted && exited && (code == WorkerProcess.bootErrorStatus || code == WorkerProcess.appLoadErrorStatus) {
                bootFailed(worker, code: code)
                continue
            }
            if !worker.booted && exited && code == WorkerProcess.startupFailedStatus {
                startupFailed(worker)
                continue
            }
            if !exited {
                if worker.abortedAt == nil && !worker.retiring && stopping == nil {
                    logger.error("Worker (pid:\(pid)) was sent \(signalName(signal).uppercased() == "KILL" ? "SIGKILL! Perhaps out of memory?" : "SIG\(signalName(signal).uppercased())")")
                    lastError = "worker \(pid) died of SIG\(signalName(signal).uppercased())"
                }
            } else if code != 0 {
                logger.error("Worker (pid:\(pid)) exited with code \(code)")
            }
            if !worker.booted && stopping == nil {
                // It died while booting for some other reason: do not respawn in a tight loop.
                nextSpawnAllowed = MonotonicClock.seconds() + 1
            }
        }
    }

    /// Why a worker exited, for `appserver_worker_exits_total`.
    private func exitReason(_ worker: Worker, exited: Bool, code: Int32) -> String {
        let bootCodes = [WorkerProcess.bootErrorStatus, WorkerProcess.appLoadErrorStatus, WorkerProcess.startupFailedStatus]
        if !worker.booted && exited && bootCodes.contains(code) { return "boot_failure" }
        if worker.abortedAt != nil { return "timeout" }
        if worker.slot.metrics.retiredAfterMaxRequests { return "max_requests" }
        if stopping != nil { return "shutdown" }
        if worker.retiring { return worker.generation == generation ? "scale_down" : "reload" }
        return "crash"
    }

    private func bootFailed(_ worker: Worker, code: Int32) {
        // A worker of a generation already given up (a failed reload) or being replaced: nothing to do.
        if worker.generation != generation { return }
        if let previous, worker.generation == generation, workers.values.contains(where: { $0.generation == previous.generation }) {
            logger.error("reload failed: the new app did not boot (see above); the running workers keep serving")
            lastError = "reload failed: the new app did not boot (exit status \(code))"
            ledger.count(ArbiterCount.reloads + 1)
            for other in workers.values where other.generation == generation {
                workers[other.pid]?.retiring = true
                kill(other.pid, SIGKILL)
            }
            generation = previous.generation
            config = previous.config
            ConfiguredEnvironment.apply(config.env)
            setWorkerCount(config.workers)
            self.previous = nil
            answer(&reloadWaiters, ok: false, lastError!)
            return
        }
        guard stopping == nil else { return }
        // Status 3 is any boot error (Gunicorn's): the import, a post_fork hook, the user switch. The
        // worker's last words, logged just above, say which.
        logger.error("Worker failed to boot: \(code == WorkerProcess.appLoadErrorStatus ? "the app could not be loaded" : "the worker could not start the app") (the reason is above); shutting down")
        exitStatus = code
        stop(.fast)
    }

    /// The app's own startup (ASGI lifespan) failed in a new worker: during a reload, the reload fails;
    /// otherwise the cause may pass (a database still starting), so workers are retried, ever slower.
    private func startupFailed(_ worker: Worker) {
        if worker.generation != generation { return }
        if let previous, workers.values.contains(where: { $0.generation == previous.generation }) {
            bootFailed(worker, code: WorkerProcess.startupFailedStatus)
            return
        }
        startupBackoff = min(max(1, startupBackoff * 2), 32)
        nextSpawnAllowed = MonotonicClock.seconds() + startupBackoff
        lastError = "the app's startup failed"
        logger.error("Worker (pid:\(worker.pid)) failed the app's startup (see above); retrying in \(Int(startupBackoff)) s")
    }

    /// Workers silent for longer than `timeout` get SIGABRT, and SIGKILL if that does not end them.
    private func murderWorkers() {
        guard config.timeout > 0 else { return }
        let now = MonotonicClock.seconds()
        for (pid, worker) in workers where worker.booted {
            if let abortedAt = worker.abortedAt {
                if now - abortedAt > 5 { kill(pid, SIGKILL) }
                continue
            }
            let silent = now - Double(worker.slot.heartbeat.load(ordering: .relaxed)) / 1e9
            if silent > Double(config.timeout) {
                logger.critical("WORKER TIMEOUT (pid:\(pid))")
                lastError = "worker \(pid) timed out"
                workers[pid]?.abortedAt = now
                kill(pid, SIGABRT)
            }
        }
    }

    /// Spawns or retires workers until the current generation has `workerCount` of them; workers of
    /// an older generation retire one by one as new ones boot.
    private func manageWorkers() {
        guard stopping == nil else { return }
        let current = workers.values.filter { $0.generation == generation && !$0.retiring }
        if current.count < workerCount {
            if MonotonicClock.seconds() >= nextSpawnAllowed {
                for _ in current.count..<workerCount { spawnWorker() }
            }
        } else if current.count > workerCount {
            for worker in current.sorted(by: { $0.age < $1.age }).prefix(current.count - workerCount) { retire(worker.pid) }
        }
        let booted = current.filter(\.booted).count
        var old = workers.values.filter { $0.generation != generation && !$0.retiring }.sorted { $0.age < $1.age }
        while !old.isEmpty && booted + old.count > workerCount {
            retire(old.removeFirst().pid)
        }
        // Done when the new generation serves and no retiring worker of the old one still accepts
        // (it got TERM, but closes its listeners a moment later): from then on every new
        // connection reaches the new app, which is what a reload that succeeded promises.
        // A worker too stuck to close its listeners is not waited on for more than 2 s.
        let newGenerationServes = old.isEmpty && previous != nil && booted >= workerCount
        let now = MonotonicClock.seconds()
        if newGenerationServes && workers.values.contains(where: { $0.generation != generation && $0.retiring && $0.accepting }) {
            reloadClosingSince = reloadClosingSince ?? now
        } else {
            reloadClosingSince = nil
        }
        reloadClosing = reloadClosingSince.map { now - $0 < 2 } ?? false
        if newGenerationServes && !reloadClosing {
            logger.info("reload done: \(booted) workers of generation \(generation) serving")
            ledger.count(ArbiterCount.reloads)
            previous = nil
            reloadClosingSince = nil
            answer(&reloadWaiters, ok: true, "reloaded: \(booted) workers of generation \(generation) serving")
        }
    }

    private func retire(_ pid: pid_t) {
        workers[pid]?.retiring = true
        kill(pid, SIGTERM)
    }

    // MARK: binary upgrade (USR2)

    /// USR2: start the binary now on disk as a new arbiter that inherits the listening sockets. The
    /// old one keeps serving until the new one's workers have booted, then hands over and drains.
    /// Returns why it did not start.
    private func startUpgrade() -> String? {
        guard stopping == nil, upgrade == nil, previousArbiter == nil else {
            let reason = stopping != nil ? "the server is stopping" : upgrade != nil ? "an upgrade is already in progress"
                : "this arbiter is still taking over from the previous one"
            logger.warning("upgrade refused: \(reason)")
            return reason
        }
        runHook("pre_exec", [server])
        // The new arbiter writes the pid file: ours moves aside first, as Gunicorn's does.
        if let pidfile = config.pidfile { rename(pidfile, pidfile + ".oldbin") }
        let mask = SignalPipe.blockAll()
        defer { SignalPipe.restore(mask) }
        let passed = listeners + (metricsEndpoint.map { [$0.listener] } ?? [])
        guard let started = Upgrade.spawn(listeners: passed, metricsPage: ledger.page?.descriptor, logger: logger, restoringMask: mask) else {
            lastError = "upgrade failed: the new binary could not be started"
            ledger.count(ArbiterCount.upgrades + 1)
            if let pidfile = config.pidfile { rename(pidfile + ".oldbin", pidfile) }
            return lastError
        }
        upgrade = started
        logger.info("starting the new arbiter (\(Upgrade.executablePath())); serving until it is ready")
        notifier.status("upgrading: new arbiter starting")
        return nil
    }

    private func readUpgradeReports() {
        guard var upgrade else { return }
        let reports = upgrade.readReports()
        self.upgrade = upgrade
        for report in reports {
            switch report {
            case .started(let pid):
                self.upgrade?.pid = pid
                logger.info("the new arbiter is process \(pid)")
            case .ready(let pid):
                self.upgrade?.pid = pid
                upgradeTookOver()
            case .failed(let status):
                upgradeFailed(how: "exited with status \(status)")
            case .gone:
                upgradeFailed(how: "died")
            }
            if self.upgrade == nil { return }
        }
    }

    /// The new arbiter is ready: give it the main PID and stop gracefully.
    private func upgradeTookOver() {
        guard let upgrade, let pid = upgrade.pid else { return }
        close(upgrade.pipe)
        self.upgrade = nil
        logger.info("the new arbiter \(pid) is ready; handing over and stopping")
        notifier.handOver(to: pid)
        upgradeAnswerDue = ("upgraded: the new arbiter \(pid) is serving", MonotonicClock.seconds())
        ledger.count(ArbiterCount.upgrades)
        handedOver = true
        // The new arbiter answers on the metrics socket from now on (it waits for this mark).
        metricsEndpoint?.closeClients()
        metricsServing = false
        _ = ledger.totals(live: workers.values.map(\.slot.metrics))
        ledger.page?.markStoppedServing()
        stop(.graceful)
    }

    /// As a reload's answer waits for the old generation (see `manageWorkers`), an upgrade's waits
    /// for this arbiter's workers to close their listeners; one too stuck to is not waited on past 2 s.
    private func answerUpgradeOnceNotAccepting() {
        guard let due = upgradeAnswerDue else { return }
        guard !workers.values.contains(where: \.accepting) || MonotonicClock.seconds() - due.since >= 2 else { return }
        answer(&upgradeWaiters, ok: true, due.message)
        upgradeAnswerDue = nil
    }

    private func upgradeFailed(how: String) {
        guard let upgrade else { return }
        close(upgrade.pipe)
        self.upgrade = nil
        logger.error("upgrade failed: the new arbiter\(upgrade.pid.map { " \($0)" } ?? "") \(how) before it was ready; still serving")
        lastError = "upgrade failed: the new arbiter \(how)"
        ledger.count(ArbiterCount.upgrades + 1)
        if let pidfile = config.pidfile { rename(pidfile + ".oldbin", pidfile) }
        answer(&upgradeWaiters, ok: false, "\(lastError!) before it was ready (see its log); the old arbiter \(getpid()) keeps serving")
    }

    private func spawnWorker() {
        age += 1
        let slot = WorkerSlot()
        runHook("pre_fork", [server, .worker(pid: nil, age: age, alive: true, booted: false)])
        // Signals wait while the child is without its own handlers (it would otherwise write to our pipe).
        let mask = SignalPipe.blockAll()
        ArbiterPython.beforeFork()
        let pid = fork()
        if pid == 0 { ArbiterPython.afterForkInChild() } else { ArbiterPython.afterForkInParent() }
        if pid != 0 { SignalPipe.restore(mask) }
        if pid < 0 {
            logger.error("fork failed: \(String(cString: strerror(errno)))")
            nextSpawnAllowed = MonotonicClock.seconds() + 1
            return
        }
        if pid == 0 {
            signals.closeInChild()
            control?.closeInChild()
            for client in reloadWaiters + upgradeWaiters { close(client) }
            if let previousArbiter { close(previousArbiter.readyPipe) }
            SignalPipe.restore(mask)
            reloader?.closeInChild()
            statsd?.closeInChild()
            metricsEndpoint?.closeInChild()
            if let page = ledger.page { close(page.descriptor) }
            JournalFields.processFields = [("ARBITER_PID", String(getppid())), ("WORKER_PID", String(getpid())),
                                           ("WORKER_AGE", String(age)), ("GENERATION", String(generation))]
            logger.info("Booting worker with pid: \(getpid())")
            WorkerProcess.run(config: config, listeners: listeners, slot: slot, age: age, logger: logger,
                              errorLog: errorLog, accessLog: accessLog, countMetrics: metricsEndpoint != nil)
        }
        workers[pid] = Worker(pid: pid, slot: slot, age: age, generation: generation, spawned: MonotonicClock.seconds())
        ledger.count(ArbiterCount.spawns)
    }

    /// The worker count changes (TTIN, TTOU, a reload): Gunicorn's nworkers_changed hook hears of it.
    private func setWorkerCount(_ count: Int) {
        guard count != workerCount else { return }
        let old = workerCount
        workerCount = count
        runHook("nworkers_changed", [server, .integer(count), .integer(old)])
    }

    /// `server.cfg` and `worker.cfg` of the hooks: the settings now in force.
    private func shareSettingsWithHooks() {
        ArbiterPython.hold()
        ServerHooks.setConfig(config)
        ArbiterPython.release()
    }

    /// `server` as hooks see it.
    private var server: ServerHooks.Argument { .server(pid: getpid(), workers: workerCount) }

    /// Runs a server hook in the arbiter if the config file defines it; returns the traceback if it
    /// raised. While it runs, a helper thread keeps systemd's watchdog fed for up to `timeout` seconds
    /// (30 when timeout is 0): a slow hook is not a hung arbiter, but one that never returns is.
    @discardableResult
    private func runHook(_ name: String, _ arguments: [ServerHooks.Argument]) -> String? {
        guard config.hooks.contains(name) else { return nil }
        let keeper = notifier.watchdogInterval.map { WatchdogKeeper(interval: $0, budget: Double(config.timeout > 0 ? config.timeout : 30), hook: name, logger: logger) }
        defer { keeper?.stop() }
        ArbiterPython.hold()
        defer { ArbiterPython.release() }
        return ServerHooks.call(name, arguments)
    }

    private func killAll(_ signal: CInt) {
        for pid in workers.keys { kill(pid, signal) }
    }
}

func signalName(_ signal: CInt) -> String {
    switch signal {
    case SIGTERM: return "term"
    case SIGQUIT: return "quit"
    case SIGINT: return "int"
    case SIGHUP: return "hup"
    case SIGKILL: return "kill"
    case SIGABRT: return "abrt"
    case SIGSEGV: return "segv"
    case SIGBUS: return "bus"
    default: return "\(signal)"
    }
}

enum Pidfile {
    static func write(_ path: String) throws {
        if let text = try? String(contentsOfFile: path, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
           pid != getpid(), kill(pid, 0) == 0 {
            throw PidfileError(message: "Already running on PID \(pid) (or pid file '\(path)' is stale)")
        }
        // A temporary file renamed into place, as Gunicorn does, so a reader never sees it half
        // written; no fsync (Foundation's atomic write has one): a pid file means nothing after a
        // crash of the machine, and under heavy disk writeback fsync stalled start-up, and a USR2
        // handover, for seconds.
        var template = Array((path + ".XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw PidfileError(message: "cannot write the pid file '\(path)': \(String(cString: strerror(errno)))") }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let line = Array("\(getpid())\n".utf8)
        let written = line.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let failure = written == line.count ? nil : String(cString: strerror(errno))
        _ = fchmod(fd, 0o644)
        close(fd)
        guard failure == nil, rename(temporary, path) == 0 else {
            let reason = failure ?? String(cString: strerror(errno))
            unlink(temporary)
            throw PidfileError(message: "cannot write the pid file '\(path)': \(reason)")
        }
    }

    static func remove(_ path: String) {
        if let text = try? String(contentsOfFile: path, encoding: .utf8), pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) == getpid() {
            unlink(path)
        }
    }
}

struct ArbiterStartError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

struct PidfileError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
