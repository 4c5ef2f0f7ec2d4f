import AppServerHTTP
import Foundation

/// What the server looks like now, taken by the arbiter for one answer: the metrics endpoint renders
/// it in Prometheus's text format, `/status` and `appserver status --json` as JSON.
struct ServerSnapshot {
    struct Worker {
        var pid: pid_t
        var age: Int
        var generation: Int
        /// booting, idle, busy or retiring.
        var state: String
        var requests: Int64
        var secondsSinceHeartbeat: Double
        var gauges: WorkerMetrics.Gauges
        var process: ProcessStats?
    }

    struct ListenQueue {
        var listener: String
        var waiting: Int
        var limit: Int
    }

    var pid: pid_t
    var version: String
    var generation: Int
    var desiredWorkers: Int
    var ready: Bool
    /// ready, starting, draining, no healthy worker, handed over.
    var readiness: String
    var workers: [Worker]
    var totals: MetricsLedger.Totals
    var listenQueues: [ListenQueue]
    var startTime: Double
    var reloading: Bool
    var upgrading: Bool
    var lastError: String?

    static let workerStates = ["booting", "idle", "busy", "retiring"]

    /// `/metrics`.
    func prometheus() -> String {
        var out = PrometheusText()
        let w = totals.workers
        let a = totals.arbiter
        out.family("appserver_build_info", .gauge, "The running appserver's version, as a label.")
        out.sample("appserver_build_info", ["version": version], Int64(1))
        out.single("appserver_start_time_seconds", .gauge, "When this arbiter started, in seconds since the epoch.", Int64(startTime))
        out.single("appserver_ready", .gauge, "1 when /readyz answers 200.", ready ? 1 : 0)
        out.single("appserver_generation", .gauge, "The generation of workers serving (1, then one more for each reload).", Int64(generation))

        out.family("appserver_requests_total", .counter, "Responses the workers finished, by method and status class.")
        for (m, method) in WorkerMetrics.methods.enumerated() {
            for (c, statusClass) in WorkerMetrics.statusClasses.enumerated() {
                out.sample("appserver_requests_total", ["method": method, "status": statusClass], w.requests(method: m, statusClass: c))
            }
        }
        out.histogram("appserver_request_duration_seconds", "Time from a request's head to the end of its response.",
                      bounds: WorkerMetrics.durationBounds, counts: w.durationBuckets, sum: w.durationSumSeconds)
        out.single("appserver_request_body_bytes_total", .counter, "Request body bytes received.", w.requestBodyBytes)
        out.single("appserver_response_bytes_total", .counter, "Response bytes sent (status line, headers and body).", w.responseBytes)
        let gauges = workers.reduce(WorkerMetrics.Gauges()) { $0 + $1.gauges }
        out.single("appserver_requests_in_flight", .gauge, "Requests being answered now.", gauges.inFlight)
        out.single("appserver_connections_open", .gauge, "Client connections open now (websockets included).", gauges.connections)
        out.single("appserver_connections_total", .counter, "Client connections accepted.", w.connectionsAccepted)
        out.single("appserver_websocket_connections", .gauge, "Websocket connections open now.", gauges.webSockets)
        out.single("appserver_websocket_connections_total", .counter, "Websocket connections accepted.", w.webSocketsAccepted)
        out.single("appserver_app_exceptions_total", .counter, "Requests whose app call raised.", w.appExceptions)
        out.single("appserver_request_timeouts_total", .counter, "Requests answered 504 because they ran past --timeout while their worker lived.", w.timedOut)
        out.family("appserver_http_refused_total", .counter, "Requests the HTTP layer refused before the app saw them, by status.")
        for (index, refusal) in WorkerMetrics.refusals.enumerated() {
            out.sample("appserver_http_refused_total", ["status": refusal.status == 0 ? "other" : String(refusal.status), "reason": refusal.reason], w.refused(index))
        }

        out.family("appserver_workers", .gauge, "Worker processes by state.")
        for state in Self.workerStates {
            out.sample("appserver_workers", ["state": state], Int64(workers.filter { $0.state == state }.count))
        }
        out.single("appserver_workers_desired", .gauge, "Workers the server keeps (workers, TTIN and TTOU).", Int64(desiredWorkers))
        out.single("appserver_worker_spawns_total", .counter, "Workers started.", a[ArbiterCount.spawns])
        // The arbiter's counters by one label, each value in the words from `first` on.
        func byLabel(_ name: String, _ help: String, _ label: String, _ values: [String], from first: Int) {
            out.family(name, .counter, help)
            for (index, value) in values.enumerated() { out.sample(name, [label: value], a[first + index]) }
        }
        byLabel("appserver_worker_exits_total", "Workers that exited, by reason.", "reason", ArbiterCount.exitReasons, from: ArbiterCount.exits)
        byLabel("appserver_reloads_total", "Reloads (HUP, appserver reload), by outcome.", "outcome", ArbiterCount.outcomes, from: ArbiterCount.reloads)
        byLabel("appserver_upgrades_total", "Binary upgrades (USR2, appserver upgrade), by outcome.", "outcome", ArbiterCount.outcomes, from: ArbiterCount.upgrades)
        byLabel("appserver_log_messages_total", "Error-log messages of every process, by level.", "level", ArbiterCount.logLevels, from: ArbiterCount.logMessages)

        out.family("appserver_listen_queue", .gauge, "Connections waiting in a TCP listening socket's queue for a worker to accept them.")
        for queue in listenQueues { out.sample("appserver_listen_queue", ["listener": queue.listener], Int64(queue.waiting)) }
        out.family("appserver_listen_queue_limit", .gauge, "The length of a TCP listening socket's queue (backlog).")
        for queue in listenQueues { out.sample("appserver_listen_queue_limit", ["listener": queue.listener], Int64(queue.limit)) }

        out.family("appserver_workers_cpu_seconds_total", .counter, "CPU time of all workers, those that exited included.")
        out.sample("appserver_workers_cpu_seconds_total", [:], Double(a[ArbiterCount.workerCPU]) / 1e6)
        out.family("appserver_worker_cpu_seconds_total", .counter, "CPU time of each live worker.")
        for worker in workers { if let process = worker.process { out.sample("appserver_worker_cpu_seconds_total", ["worker": String(worker.pid)], Double(process.cpuMicroseconds) / 1e6) } }
        out.family("appserver_worker_resident_memory_bytes", .gauge, "Resident memory of each live worker.")
        for worker in workers { if let process = worker.process { out.sample("appserver_worker_resident_memory_bytes", ["worker": String(worker.pid)], process.residentBytes) } }
        return out.text
    }

    /// `/status` and `appserver status --json`: one JSON object.
    func json() -> String {
        var object: [String: Any] = [
            "pid": Int(pid), "version": version, "generation": generation, "workers_desired": desiredWorkers,
            "ready": ready, "readiness": readiness, "reloading": reloading, "upgrading": upgrading,
            "requests_total": totals.workers.requestsTotal, "start_time": startTime,
            "workers": workers.map { worker -> [String: Any] in
                var entry: [String: Any] = [
                    "pid": Int(worker.pid), "age": worker.age, "generation": worker.generation, "state": worker.state,
                    "requests": worker.requests, "seconds_since_heartbeat": (worker.secondsSinceHeartbeat * 1000).rounded() / 1000,
                    "requests_in_flight": worker.gauges.inFlight, "connections_open": worker.gauges.connections,
                ]
                if let process = worker.process {
                    entry["resident_memory_bytes"] = process.residentBytes
                    entry["cpu_seconds"] = Double(process.cpuMicroseconds) / 1e6
                }
                return entry
            },
        ]
        object["last_error"] = lastError ?? NSNull()
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A process's CPU time and resident memory, from /proc/PID/stat.
struct ProcessStats {
    var cpuMicroseconds: Int64
    var residentBytes: Int64

    private static let ticksPerSecond = Int64(sysconf(Int32(_SC_CLK_TCK)))
    private static let pageSize = Int64(sysconf(Int32(_SC_PAGESIZE)))

    static func read(pid: pid_t) -> ProcessStats? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = Glibc.read(fd, &buffer, buffer.count)
        guard n > 0 else { return nil }
        // The name, in parentheses, may hold spaces: fields are counted after its last ')'.
        guard let close = buffer[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 2)..<n].split(separator: UInt8(ascii: " ")).map { Int64(String(decoding: $0, as: UTF8.self)) ?? 0 }
        // From the state (field 3): utime is field 14, stime 15, rss 24.
        guard fields.count > 21 else { return nil }
        let ticks = fields[11] + fields[12]
        return ProcessStats(cpuMicroseconds: ticks * 1_000_000 / ticksPerSecond, residentBytes: fields[21] * pageSize)
    }
}
