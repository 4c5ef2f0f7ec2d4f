import AppServerConfig
import AppServerSystemd
import Foundation
import Logging

/// Gunicorn's statsd metrics (`statsd_host`, `statsd_prefix`, `dogstatsd_tags`), under Gunicorn's names,
/// sent by the arbiter from what the workers count in their shared slots: no worker sends a packet
/// per request. Once a second: `gunicorn.requests` (counter), `gunicorn.request.status.CODE`
/// (counters), `gunicorn.request.duration` (a timer in ms: each duration bucket's count as one sample
/// with a sample rate, which statsd counts as that many samples), `gunicorn.workers` (gauge), and
/// `gunicorn.log.critical|error|warning` (counters of error-log lines of every process).
final class StatsdSender {
    private let descriptor: CInt
    /// A unix datagram socket's address, given with each datagram; nil for UDP (connected).
    private let unixDestination: UnixSocketAddress?
    private let prefix: String
    private let tags: String
    private var last: [pid_t: WorkerSlot.Counts] = [:]
    private var lastLogCounts = LogCounters.Counts()
    private var lastSent = 0.0

    /// `host:port` (UDP, IPv4 or IPv6, `[::1]:8125`) or `unix:PATH` (a datagram socket), as Gunicorn.
    init?(address: String, prefix: String, tags: String, logger: Logger) {
        var fd: CInt = -1
        if address.hasPrefix("unix:") || address.hasPrefix("/") {
            // Gunicorn's `unix://PATH` and `unix:PATH`, or a bare path.
            let path = address.hasPrefix("unix://") ? String(address.dropFirst(7)) : address.hasPrefix("unix:") ? String(address.dropFirst(5)) : address
            guard let destination = UnixSocketAddress(path: path) else {
                logger.error("statsd: \(address): a socket path is 1 to \(UnixSocketAddress.capacity) bytes; no metrics are sent")
                return nil
            }
            // Not connected: each datagram is addressed, so a statsd that starts later, or starts
            // again on a new socket file, gets the next one (a connected socket would stay refused).
            unixDestination = destination
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            if access(path, F_OK) != 0 { logger.warning("statsd: \(path) is not there yet; sending once it appears") }
        } else {
            unixDestination = nil
            var host = address, port = "8125"
            if let colon = address.lastIndex(of: ":"), !address.hasSuffix("]") {
                host = String(address[..<colon])
                port = String(address[address.index(after: colon)...])
            }
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, port, &hints, &result) == 0, let first = result else {
                logger.error("statsd: cannot resolve \(address); no metrics are sent")
                return nil
            }
            defer { freeaddrinfo(result) }
            fd = socket(first.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            if fd >= 0 { _ = connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) }
        }
        guard fd >= 0 else {
            logger.error("statsd: no socket: \(String(cString: strerror(errno)))")
            return nil
        }
        descriptor = fd
        // Gunicorn: a non-empty prefix ends with exactly one dot.
        var trimmed = prefix
        while trimmed.hasSuffix(".") { trimmed.removeLast() }
        self.prefix = trimmed.isEmpty ? "" : trimmed + "."
        self.tags = tags.isEmpty ? "" : "|#" + tags
        logger.info("statsd: sending Gunicorn's metrics to \(address)\(self.prefix.isEmpty ? "" : " with the prefix \(self.prefix)")")
    }

    deinit { close(descriptor) }

    func closeInChild() { close(descriptor) }

    /// Once a second: what changed in every live worker's slot since the last send.
    func sendIfDue(now: Double, workers: [(pid: pid_t, slot: WorkerSlot)], logCounts: LogCounters.Counts, backlog: Int?) {
        guard now - lastSent >= 1 else { return }
        lastSent = now
        var total = WorkerSlot.Counts()
        for worker in workers {
            let counts = worker.slot.counts()
            total.add(counts.subtracting(last[worker.pid] ?? WorkerSlot.Counts()))
            last[worker.pid] = counts
        }
        let live = Set(workers.map(\.pid))
        last = last.filter { live.contains($0.key) }
        var lines = ["gunicorn.workers:\(workers.count)|g"]
        if let backlog { lines.append("gunicorn.backlog:\(backlog)|g") }
        lines += metricLines(for: total)
        let logs = logCounts.subtracting(lastLogCounts)
        lastLogCounts = logCounts
        for (name, count) in [("critical", logs.critical), ("error", logs.error), ("warning", logs.warning)] where count > 0 {
            lines.append("gunicorn.log.\(name):\(count)|c")
        }
        send(lines)
    }

    /// A worker was reaped: what it counted after the last send.
    func workerExited(pid: pid_t, slot: WorkerSlot) {
        let counts = slot.counts().subtracting(last.removeValue(forKey: pid) ?? WorkerSlot.Counts())
        send(metricLines(for: counts))
    }

    private func metricLines(for counts: WorkerSlot.Counts) -> [String] {
        var lines: [String] = []
        if counts.requests > 0 { lines.append("gunicorn.requests:\(counts.requests)|c") }
        for (code, count) in counts.statuses where count > 0 { lines.append("gunicorn.request.status.\(code):\(count)|c") }
        for (milliseconds, count) in counts.durations where count > 0 {
            lines.append(count == 1 ? "gunicorn.request.duration:\(milliseconds)|ms"
                         : "gunicorn.request.duration:\(milliseconds)|ms|@\(String(format: "%.6g", 1 / Double(count)))")
        }
        return lines
    }

    /// Lines go out in datagrams of at most 1400 bytes; a statsd that is down loses them, as with Gunicorn.
    private func send(_ lines: [String]) {
        var packet = ""
        func flush() {
            guard !packet.isEmpty else { return }
            _ = packet.withCString { text in
                if let unixDestination {
                    unixDestination.withSockaddr { sendto(descriptor, text, strlen(text), Int32(MSG_DONTWAIT), $0, $1) }
                } else {
                    Glibc.send(descriptor, text, strlen(text), Int32(MSG_DONTWAIT))
                }
            }
            packet = ""
        }
        for line in lines {
            let full = prefix + line + tags
            if packet.utf8.count + full.utf8.count + 1 > 1400 { flush() }
            packet += packet.isEmpty ? full : "\n" + full
        }
        flush()
    }
}
