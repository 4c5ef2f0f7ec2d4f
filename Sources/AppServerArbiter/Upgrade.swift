import Foundation
import Logging

/// The mechanics of a binary upgrade (USR2): the old arbiter forks and execs the binary on disk,
/// handing over its listening sockets the way systemd would (LISTEN_FDS from fd 3, LISTEN_PID,
/// LISTEN_FDNAMES) and one more descriptor, a pipe, on which the new arbiter says it is ready.
enum Upgrade {
    static let readyVariable = "APPSERVER_UPGRADE_READY_FD"
    static let fromVariable = "APPSERVER_UPGRADE_FROM"
    /// The directory the server was started in (before `--chdir`), where the new binary starts too,
    /// so that relative paths on the command line mean the same thing.
    nonisolated(unsafe) static var startDirectory = FileManager.default.currentDirectoryPath
}

extension Arbiter {
    /// Call before `--chdir` takes effect: a binary upgrade starts the new binary from there.
    public static func rememberStartDirectory() {
        Upgrade.startDirectory = FileManager.default.currentDirectoryPath
    }
}

extension Upgrade {
    /// The binary to exec: what /proc/self/exe names, without the " (deleted)" that a package upgrade
    /// leaves on the old inode (the path then holds the new version). Not /proc/self/exe itself,
    /// which would rename the process "exe".
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
    }

    /// True when the file at `executablePath()` is no longer the one this process runs (a package
    /// upgrade put a new binary there): a reload then upgrades.
    static func binaryReplaced() -> Bool {
        var running = stat(), onDisk = stat()
        guard stat("/proc/self/exe", &running) == 0, stat(executablePath(), &onDisk) == 0 else { return false }
        return running.st_dev != onDisk.st_dev || running.st_ino != onDisk.st_ino
    }

    /// Forks and execs the new arbiter; returns its pid and the read end of its ready pipe.
    static func spawn(listeners: [Listener], logger: Logger, restoringMask mask: sigset_t) -> (pid: pid_t, readyPipe: CInt)? {
        var fds: [CInt] = [0, 0]
        guard pipe(&fds) == 0 else {
            logger.error("upgrade: pipe failed: \(String(cString: strerror(errno)))")
            return nil
        }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        let path = executablePath()
        let arguments = CommandLine.arguments
        let names = listeners.map(\.name).joined(separator: ":")
        let pid = fork()
        if pid < 0 {
            logger.error("upgrade: fork failed: \(String(cString: strerror(errno)))")
            close(fds[0]); close(fds[1])
            return nil
        }
        if pid == 0 {
            // The sockets go to 3, 4, ... and the ready pipe right after them; first out of the way
            // (high numbers), so that no source is overwritten before it is copied.
            let sources = listeners.map(\.descriptor) + [fds[1]]
            let high = sources.map { fcntl($0, F_DUPFD, 256) }
            for (index, fd) in high.enumerated() {
                dup2(fd, 3 + CInt(index))   // the copy has no FD_CLOEXEC: it survives exec
                close(fd)
            }
            setenv("LISTEN_FDS", String(listeners.count), 1)
            setenv("LISTEN_PID", String(getpid()), 1)
            setenv("LISTEN_FDNAMES", names, 1)
            setenv(readyVariable, String(3 + listeners.count), 1)
            setenv(fromVariable, String(getppid()), 1)
            _ = chdir(startDirectory)
            SignalPipe.restore(mask)
            let cArguments = arguments.map { strdup($0) } + [nil]
            execv(path, cArguments)
            _exit(127)
        }
        close(fds[1])
        return (pid, fds[0])
    }

    /// In a new arbiter: the previous one's pid and the pipe to tell it we are ready, if USR2 started us.
    static func takeHandover() -> (pid: pid_t, readyPipe: CInt)? {
        defer {
            unsetenv(readyVariable)
            unsetenv(fromVariable)
        }
        guard let fdText = getenv(readyVariable), let fd = CInt(String(cString: fdText)),
              let pidText = getenv(fromVariable), let pid = pid_t(String(cString: pidText)) else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return (pid, fd)
    }

    static func sayReady(_ fd: CInt) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
        close(fd)
    }
}
