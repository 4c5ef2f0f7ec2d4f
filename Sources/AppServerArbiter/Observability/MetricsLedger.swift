import AppServerConfig
import AppServerHTTP
import Atomics
import Foundation
import Logging

/// The counts the arbiter keeps itself (the workers count requests; the arbiter counts workers,
/// reloads and upgrades), as words, so that they travel to a new arbiter with the workers' counts.
enum ArbiterCount {
    static let exitReasons = ["crash", "timeout", "max_requests", "reload", "scale_down", "shutdown", "boot_failure"]
    static let outcomes = ["success", "failure"]
    static let logLevels = ["critical", "error", "warning"]

    static let spawns = 0
    static let exits = spawns + 1
    static let reloads = exits + exitReasons.count
    static let upgrades = reloads + outcomes.count
    /// CPU time of workers, in microseconds: in the arbiter's own words those that exited (from
    /// wait4); in totals, the live ones too.
    static let workerCPU = upgrades + outcomes.count
    static let logMessages = workerCPU + 1
    static let size = logMessages + logLevels.count

    static func exit(_ reason: String) -> Int { exits + exitReasons.firstIndex(of: reason)! }
}

/// Every counter of the server, monotonic for its whole life: the workers alive now (their shared
/// slots), the workers that exited (their last counts, taken when they are reaped), the arbiter's own
/// counts, and, after a binary upgrade (USR2), the previous arbiter's totals, which it keeps writing
/// to a shared page (`MetricsPage`) until it exits. A new arbiter's totals include them, so neither
/// a worker's death nor a HUP nor a USR2 ever makes a counter go down.
final class MetricsLedger {
    private(set) var own = [Int64](repeating: 0, count: ArbiterCount.size)
    private var exited = WorkerMetrics.Counters()
    /// The previous arbiter's page, after USR2.
    private let predecessor: MetricsPage?
    /// Ours, which a next arbiter reads.
    let page: MetricsPage?
    /// Each live worker's CPU time as last read (microseconds): a zombie's /proc entry reads less.
    private var workerCPU: [pid_t: Int64] = [:]

    init(predecessor: MetricsPage?, logger: Logger) {
        self.predecessor = predecessor
        page = MetricsPage.create(logger: logger)
    }

    func count(_ index: Int, by amount: Int64 = 1) { own[index] += amount }

    /// A worker was reaped: its final counts and CPU time stay in the totals.
    func workerExited(pid: pid_t, metrics: WorkerMetrics, cpuMicroseconds: Int64, reason: String) {
        exited += metrics.counters()
        own[ArbiterCount.workerCPU] += max(cpuMicroseconds, workerCPU.removeValue(forKey: pid) ?? 0)
        own[ArbiterCount.exit(reason)] += 1
    }

    /// A live worker's CPU time, never less than read before.
    func liveCPU(pid: pid_t, microseconds: Int64) -> Int64 {
        let value = max(microseconds, workerCPU[pid] ?? 0)
        workerCPU[pid] = value
        return value
    }

    struct Totals {
        var workers: WorkerMetrics.Counters
        var arbiter: [Int64]
    }

    /// The server's totals now, given the live workers' counters; written to our page too, before
    /// anyone sees them, so that a next arbiter never reports less than we did.
    func totals(live: [WorkerMetrics]) -> Totals {
        var workers = exited
        for metrics in live { workers += metrics.counters() }
        var arbiter = own
        // This arbiter's processes count their error-log lines in memory made at its start.
        let logs = LogCounters.read()
        arbiter[ArbiterCount.logMessages] += logs.critical
        arbiter[ArbiterCount.logMessages + 1] += logs.error
        arbiter[ArbiterCount.logMessages + 2] += logs.warning
        let liveCPU = workerCPU.values.reduce(0, +)
        arbiter[ArbiterCount.workerCPU] += liveCPU
        if let previous = predecessor?.read() {
            workers += previous.workers
            for index in 0..<ArbiterCount.size { arbiter[index] += previous.arbiter[index] }
        }
        page?.write(Totals(workers: workers, arbiter: arbiter))
        return Totals(workers: workers, arbiter: arbiter)
    }

    /// Whether the previous arbiter stopped answering on the metrics socket (or is gone): until
    /// then a new arbiter leaves the socket to it, so that the two never answer turn about with
    /// different totals.
    func predecessorStoppedServing(pid: pid_t?) -> Bool {
        guard let predecessor else { return true }
        if predecessor.stoppedServing { return true }
        if let pid, kill(pid, 0) != 0 && errno == ESRCH { return true }
        return false
    }
}

/// A page of shared memory (a POSIX shared memory object, unlinked at once: only the descriptor
/// names it) where an arbiter keeps its totals for the one that replaces it on USR2. The new one
/// gets the descriptor with the listening sockets and maps it read-only.
final class MetricsPage {
    static let variable = "APPSERVER_METRICS_PAGE_FD"
    /// The layout's size is in the first word: a new binary with another layout starts from zero.
    private static let magic: Int64 = 0x6170_7073_0000_0000 | Int64(WorkerMetrics.Counters.size << 16) | Int64(ArbiterCount.size)
    private static let size = 4096
    private static let stoppedWord = 1
    private static let firstValue = 2

    let descriptor: CInt
    private let words: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>

    private init(descriptor: CInt, memory: UnsafeMutableRawPointer) {
        self.descriptor = descriptor
        words = memory.bindMemory(to: UnsafeAtomic<Int64>.Storage.self, capacity: Self.size / 8)
    }

    static func create(logger: Logger) -> MetricsPage? {
        precondition((firstValue + WorkerMetrics.Counters.size + ArbiterCount.size) * 8 <= size)
        let name = "/appserver-metrics-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            logger.warning("metrics: no shared page for a binary upgrade (\(String(cString: strerror(errno)))): counters restart from zero after USR2")
            return nil
        }
        shm_unlink(name)
        guard ftruncate(fd, off_t(size)) == 0,
              let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), memory != MAP_FAILED else {
            close(fd)
            return nil
        }
        let page = MetricsPage(descriptor: fd, memory: memory)
        UnsafeAtomic<Int64>(at: page.words).store(magic, ordering: .relaxed)
        return page
    }

    /// In a new arbiter started by USR2: the previous one's page, if it passed one of our layout.
    static func inherited(logger: Logger) -> MetricsPage? {
        defer { unsetenv(variable) }
        guard let text = getenv(variable), let fd = CInt(String(cString: text)) else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        guard let memory = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), memory != MAP_FAILED else {
            close(fd)
            return nil
        }
        close(fd)
        let page = MetricsPage(descriptor: -1, memory: memory)
        guard UnsafeAtomic<Int64>(at: page.words).load(ordering: .relaxed) == magic else {
            logger.warning("metrics: the previous arbiter's counters have another layout (another version); counting from zero")
            munmap(memory, size)
            return nil
        }
        return page
    }

    var stoppedServing: Bool { UnsafeAtomic<Int64>(at: words + Self.stoppedWord).load(ordering: .relaxed) == 1 }

    func markStoppedServing() { UnsafeAtomic<Int64>(at: words + Self.stoppedWord).store(1, ordering: .relaxed) }

    func write(_ totals: MetricsLedger.Totals) {
        let values = totals.workers.values + totals.arbiter
        for (index, value) in values.enumerated() {
            UnsafeAtomic<Int64>(at: words + Self.firstValue + index).store(value, ordering: .relaxed)
        }
    }

    func read() -> MetricsLedger.Totals {
        var values: [Int64] = []
        values.reserveCapacity(WorkerMetrics.Counters.size + ArbiterCount.size)
        for index in 0..<(WorkerMetrics.Counters.size + ArbiterCount.size) {
            values.append(UnsafeAtomic<Int64>(at: words + Self.firstValue + index).load(ordering: .relaxed))
        }
        return MetricsLedger.Totals(workers: WorkerMetrics.Counters(values: Array(values[..<WorkerMetrics.Counters.size])),
                                    arbiter: Array(values[WorkerMetrics.Counters.size...]))
    }
}
