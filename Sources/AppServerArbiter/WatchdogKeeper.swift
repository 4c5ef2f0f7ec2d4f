import AppServerHTTP
import AppServerSystemd
import Foundation
import Logging

/// Feeds systemd's watchdog while the arbiter's one thread is inside a server hook (Python code it
/// cannot interrupt), for at most `budget` seconds: past that the hook is taken for hung and the pings
/// stop, so systemd's watchdog acts as it would on a stuck arbiter. The thread ends with the hook.
final class WatchdogKeeper: @unchecked Sendable {
    private let monitor = Monitor()
    private var done = false
    private var thread: Thread?

    init(interval: Double, budget: Double, hook: String, logger: Logger) {
        let started = Monotonic.now()
        let thread = Thread { [monitor] in
            var warned = false
            while true {
                let finished: Bool = monitor.withLock {
                    if !self.done { _ = monitor.wait(deadline: Monotonic.now().adding(seconds: interval / 2)) }
                    return self.done
                }
                if finished { return }
                if Monotonic.now().seconds - started.seconds <= budget {
                    _ = Systemd.notify("WATCHDOG=1")
                } else if !warned {
                    warned = true
                    logger.error("the \(hook) hook has run for more than \(Int(budget)) s: no more watchdog pings until it returns")
                }
            }
        }
        self.thread = thread
        thread.start()
    }

    /// The hook returned: the thread ends (waited for, so the arbiter forks with one thread only).
    func stop() {
        monitor.withLock {
            done = true
            monitor.broadcast()
        }
        while thread?.isFinished == false { usleep(200) }
        thread = nil
    }
}
