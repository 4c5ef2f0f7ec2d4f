import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// The systemd side of the server: sockets passed by socket activation and sd_notify messages.
public enum Systemd {
    /// The first descriptor systemd passes (SD_LISTEN_FDS_START).
    public static let firstListenDescriptor: CInt = 3

    /// Listening sockets passed to this process (`LISTEN_FDS`/`LISTEN_PID` naming it), with their
    /// `FileDescriptorName=` names. The LISTEN_* variables are removed, so the app's own children do
    /// not take them for theirs.
    public static func listenDescriptors() -> [(descriptor: CInt, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        var result: [(CInt, String)] = []
        for i in 0..<Int(count) {
            let name = names?[i].map { String(cString: $0) } ?? "unknown"
            result.append((firstListenDescriptor + CInt(i), name))
            free(names?[i])
        }
        free(names)
        return result
    }

    /// Sends a notification (`READY=1`, `STATUS=...`) when NOTIFY_SOCKET is set; a no-op otherwise.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }
}

/// What the arbiter tells systemd (sd_notify): readiness, a status line, reloads, stopping, and
/// watchdog pings that are sent only while the server is healthy. Does nothing outside systemd.
public final class ServiceNotifier {
    /// Half of `WATCHDOG_USEC`, in seconds, when systemd runs a watchdog for this process.
    public var watchdogInterval: Double? { schedule?.interval }
    private var schedule: WatchdogSchedule?
    private var lastStatus = ""
    public private(set) var isReady = false

    public init() {
        var usec: UInt64 = 0
        schedule = sd_watchdog_enabled(0, &usec) > 0 && usec > 0 ? WatchdogSchedule(interval: Double(usec) / 2e6) : nil
    }

    /// `mainPID`: a new arbiter after USR2, whose messages count only once the old one has named it.
    public func ready(status: String, mainPID: pid_t? = nil) {
        isReady = true
        // A new arbiter's first messages may arrive before the old one named it the main process
        // (NotifyAccess=main drops them): the status is sent again on the next round, and so is the
        // watchdog ping, on every round for a while (see WatchdogSchedule.tookOver).
        lastStatus = mainPID == nil ? status : ""
        if mainPID != nil { schedule?.tookOver() }
        Systemd.notify((mainPID.map { "MAINPID=\($0)\n" } ?? "") + "READY=1\nSTATUS=\(status)")
    }

    /// The old arbiter, still systemd's main process, names the new one (works with NotifyAccess=main).
    /// The same message feeds the watchdog for it: systemd does not restart the watchdog's clock when the
    /// main process changes, and the new arbiter's own pings were dropped until now, so without it the
    /// old arbiter's last ping could be up to a whole WatchdogSec old when the new one's first counts.
    public func handOver(to pid: pid_t) {
        let ping = schedule == nil ? "" : "WATCHDOG=1\n"
        Systemd.notify("MAINPID=\(pid)\nREADY=1\n\(ping)STATUS=handed over to the new arbiter \(pid)")
    }

    /// A new status line (sent only when it changed).
    public func status(_ text: String) {
        guard text != lastStatus else { return }
        lastStatus = text
        Systemd.notify("STATUS=\(text)")
    }

    public func reloading() {
        isReady = false
        Systemd.notify("RELOADING=1\nSTATUS=reloading")
    }

    public func stopping() {
        Systemd.notify("STOPPING=1\nSTATUS=stopping")
    }

    /// While the app imports, asks systemd for more start-up time, a little at a time.
    public func extendStartTimeout(seconds: Int) {
        Systemd.notify("EXTEND_TIMEOUT_USEC=\(seconds * 1_000_000)")
    }

    /// Pings the watchdog when it is due and `healthy` (the loop runs and a worker is alive).
    public func watchdog(now: Double, healthy: Bool) {
        guard schedule?.due(now: now, healthy: healthy) == true else { return }
        Systemd.notify("WATCHDOG=1")
    }
}

/// When to ping systemd's watchdog: every `interval` (half of WatchdogSec) while healthy, and on every
/// round for one interval after a new arbiter took over (USR2), because until the old arbiter names it
/// the main process its pings are dropped (NotifyAccess=main), and it cannot tell when that happened.
public struct WatchdogSchedule: Sendable {
    public let interval: Double
    private var last = -Double.infinity
    private var eagerUntil = -Double.infinity
    private var tookOverSinceLastRound = false

    public init(interval: Double) {
        self.interval = interval
    }

    /// Ping on every round for one interval from the next.
    public mutating func tookOver() {
        tookOverSinceLastRound = true
    }

    /// Whether to ping now (a round of the arbiter's loop); a ping it says yes to counts as sent.
    public mutating func due(now: Double, healthy: Bool) -> Bool {
        if tookOverSinceLastRound {
            tookOverSinceLastRound = false
            eagerUntil = now + interval
        }
        guard healthy, now < eagerUntil || now - last >= interval else { return false }
        last = now
        return true
    }
}
