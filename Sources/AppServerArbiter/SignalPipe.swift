import Foundation

/// Signals turned into bytes on a pipe (the self-pipe trick): the handler only writes the signal
/// number; the process reads and acts on it in its own loop, never inside the handler. The signal
/// mask stays empty, so processes the app starts inherit no blocked signals.
final class SignalPipe: @unchecked Sendable {
    nonisolated(unsafe) private static var writeEnd: CInt = -1
    private let readEnd: CInt

    init(handling signals: [CInt]) {
        var fds: [CInt] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe failed")
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        readEnd = fds[0]
        Self.writeEnd = fds[1]
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                let saved = errno
                var byte = UInt8(truncatingIfNeeded: signal)
                _ = write(SignalPipe.writeEnd, &byte, 1)
                errno = saved
            }
            action.sa_flags = SA_RESTART
            sigemptyset(&action.sa_mask)
            sigaction(signal, &action, nil)
        }
        var ignore = sigaction()
        ignore.__sigaction_handler.sa_handler = SIG_IGN
        sigaction(SIGPIPE, &ignore, nil)
        if !signals.contains(SIGCHLD) {
            var standard = sigaction()
            standard.__sigaction_handler.sa_handler = SIG_DFL
            sigaction(SIGCHLD, &standard, nil)
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        sigprocmask(SIG_SETMASK, &empty, nil)
    }

    /// Waits up to `milliseconds` for a signal to arrive.
    func wait(milliseconds: Int32) {
        var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        _ = poll(&poller, 1, milliseconds)
    }

    /// Waits for a signal, for one of `others` to become readable (or hung up), or for one of
    /// `writable` to take more bytes; returns those that are ready.
    func wait(milliseconds: Int32, orReadable others: [CInt], orWritable writable: [CInt] = []) -> Set<CInt> {
        var pollers = [pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)]
            + others.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            + writable.map { pollfd(fd: $0, events: Int16(POLLOUT), revents: 0) }
        guard poll(&pollers, nfds_t(pollers.count), milliseconds) > 0 else { return [] }
        return Set(pollers.dropFirst().filter { $0.revents != 0 }.map(\.fd))
    }

    /// The signals received since the last call, in order.
    func drain() -> [CInt] {
        var bytes = [UInt8](repeating: 0, count: 64)
        var received: [CInt] = []
        while true {
            let n = read(readEnd, &bytes, bytes.count)
            if n <= 0 { return received }
            received.append(contentsOf: bytes[0..<n].map { CInt($0) })
        }
    }

    /// Waits for the next signal.
    func next() -> CInt {
        while true {
            if let first = drainOne() { return first }
            wait(milliseconds: -1)
        }
    }

    private func drainOne() -> CInt? {
        var byte: UInt8 = 0
        return read(readEnd, &byte, 1) == 1 ? CInt(byte) : nil
    }

    /// Queues a signal for this process's own loop.
    func raise(_ signal: CInt) {
        var byte = UInt8(truncatingIfNeeded: signal)
        _ = write(Self.writeEnd, &byte, 1)
    }

    /// In a forked child, before it sets up its own pipe.
    func closeInChild() {
        close(readEnd)
        close(Self.writeEnd)
    }

    static func blockAll() -> sigset_t {
        var all = sigset_t(), old = sigset_t()
        sigfillset(&all)
        sigprocmask(SIG_BLOCK, &all, &old)
        return old
    }

    static func restore(_ mask: sigset_t) {
        var mask = mask
        sigprocmask(SIG_SETMASK, &mask, nil)
    }
}
