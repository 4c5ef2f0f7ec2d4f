import AppServerConfig
import CHostedImage
import Foundation
import Logging

/// The mechanics of a binary upgrade (USR2): the old arbiter starts the binary on disk, handing over
/// its listening sockets the way systemd would (LISTEN_FDS from fd 3, LISTEN_PID, LISTEN_FDNAMES) and
/// one more descriptor, a pipe, on which the new arbiter reports: `started PID` (from the
/// intermediate process), then `ready PID` or `failed STATUS`. The end of the pipe without either means
/// the new arbiter died.
///
/// The new arbiter is started by a double fork, so that it is init's child (systemd's) from the
/// start, not the old arbiter's: once MAINPID= names it, systemd supervises it as its own child,
/// waits for its graceful stop and notices its exit. (A main PID that is not systemd's child is
/// "alien": systemd then neither waits for it after SIGTERM nor sees it die.)
enum Upgrade {
    static let readyVariable = "APPSERVER_UPGRADE_READY_FD"
    static let fromVariable = "APPSERVER_UPGRADE_FROM"
    /// The directory the server was started in (before `--chdir`), where the new binary starts too,
    /// so that relative paths on the command line mean the same thing.
    nonisolated(unsafe) static var startDirectory = FileManager.default.currentDirectoryPath

    /// What the new arbiter has said so far.
    enum Report: Equatable {
        case started(pid_t)
        case ready(pid_t)
        case failed(status: Int32)
        /// The pipe ended without `ready` or `failed`: the new arbiter died.
        case gone
    }

    /// The old arbiter's side of an upgrade in progress.
    struct InProgress {
        let pipe: CInt
        var pid: pid_t?
        var buffer: [UInt8] = []

        /// Reads what the pipe has; returns the complete reports.
        mutating func readReports() -> [Report] {
            var chunk = [UInt8](repeating: 0, count: 128)
            let n = read(pipe, &chunk, chunk.count)
            if n > 0 { buffer += chunk[0..<n] }
            var reports: [Report] = []
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let words = String(decoding: buffer[..<newline], as: UTF8.self).split(separator: " ")
                buffer.removeSubrange(...newline)
                switch (words.first, words.count > 1 ? Int32(words[1]) : nil) {
                case ("started", let pid?): pid_t(exactly: pid).map { reports.append(.started($0)) }
                case ("ready", let pid?): pid_t(exactly: pid).map { reports.append(.ready($0)) }
                case ("failed", let status?): reports.append(.failed(status: status))
                default: break
                }
            }
            if n == 0 { reports.append(.gone) }
            return reports
        }
    }
}

extension Arbiter {
    /// Call before `--chdir` takes effect: a binary upgrade starts the new binary from there.
    public static func rememberStartDirectory() {
        Upgrade.startDirectory = FileManager.default.currentDirectoryPath
    }

    /// The path of the running binary (what a USR2 upgrade starts).
    public static var executablePath: String { Upgrade.executablePath() }
}

extension Upgrade {
    /// The binary to exec: the launcher when python3.X hosts the server (HostedImage), else what
    /// /proc/self/exe names, without the " (deleted)" that a package upgrade leaves on the old inode
    /// (the path then holds the new version). Not /proc/self/exe itself, which would rename the process "exe".
    static func executablePath() -> String {
        if let launcher = HostedImage.files?.launcher { return launcher.path }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
    }

    /// True when the files this process runs are no longer the ones at their paths (a package upgrade
    /// put new ones there): a reload then upgrades.
    static func binaryReplaced() -> Bool {
        if let files = HostedImage.files { return files.launcher.replaced || files.library.replaced }
        var running = stat(), onDisk = stat()
        guard stat("/proc/self/exe", &running) == 0, stat(executablePath(), &onDisk) == 0 else { return false }
        return running.st_dev != onDisk.st_dev || running.st_ino != onDisk.st_ino
    }

    /// Starts the new arbiter (double fork, see above); returns the read end of its report pipe.
    /// `metricsPage`: the descriptor of the page where this arbiter keeps its metric totals.
    static func spawn(listeners: [Listener], metricsPage: CInt?, logger: Logger, restoringMask mask: sigset_t) -> InProgress? {
        var fds: [CInt] = [0, 0]
        guard pipe(&fds) == 0 else {
            logger.error("upgrade: pipe failed: \(String(cString: strerror(errno)))")
            return nil
        }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        let path = executablePath()
        let arguments = CommandLine.arguments
        let names = listeners.map(\.name).joined(separator: ":")
        let oldArbiter = getpid()
        let intermediate = fork()
        if intermediate < 0 {
            logger.error("upgrade: fork failed: \(String(cString: strerror(errno)))")
            close(fds[0]); close(fds[1])
            return nil
        }
        if intermediate == 0 {
            let pid = fork()
            if pid != 0 {
                // Say who the new arbiter is, and leave it to init.
                say(pid > 0 ? "started \(pid)" : "failed 1", on: fds[1])
                _exit(pid > 0 ? 0 : 1)
            }
            // The sockets go to 3, 4, ... and the report pipe right after them; first out of the way
            // (high numbers), so that no source is overwritten before it is copied.
            let sources = listeners.map(\.descriptor) + [fds[1]] + (metricsPage.map { [$0] } ?? [])
            let high = sources.map { fcntl($0, F_DUPFD, 256) }
            for (index, fd) in high.enumerated() {
                dup2(fd, 3 + CInt(index))   // the copy has no FD_CLOEXEC: it survives exec
                close(fd)
            }
            // The new arbiter reads its config afresh: it starts from the environment as it was before
            // any config set `env`, or it would take this one's variables for the machine's own.
            ConfiguredEnvironment.apply([:])
            setenv("LISTEN_FDS", String(listeners.count), 1)
            setenv("LISTEN_PID", String(getpid()), 1)
            setenv("LISTEN_FDNAMES", names, 1)
            setenv(readyVariable, String(3 + listeners.count), 1)
            setenv(fromVariable, String(oldArbiter), 1)
            // systemd's watchdog pings count from the process WATCHDOG_PID names (sd_watchdog_enabled
            // checks it): the new arbiter becomes the main process, so it is the one to ping.
            if let text = getenv("WATCHDOG_PID"), pid_t(String(cString: text)) == oldArbiter {
                setenv("WATCHDOG_PID", String(getpid()), 1)
            }
            if metricsPage != nil { setenv(MetricsPage.variable, String(4 + listeners.count), 1) }
            _ = chdir(startDirectory)
            SignalPipe.restore(mask)
            let cArguments = arguments.map { strdup($0) } + [nil]
            execv(path, cArguments)
            say("failed 127", on: 3 + CInt(listeners.count))
            _exit(127)
        }
        close(fds[1])
        return InProgress(pipe: fds[0])
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

    /// One report line to the old arbiter.
    static func say(_ report: String, on fd: CInt) {
        let line = Array("\(report)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

/// The files a server hosted by python3.X is made of (Sources/appserver, the launcher): /proc/self/exe
/// names python3.X there, so the launcher (what a USR2 upgrade starts again) and the server's library
/// are named by the launcher, and their identities taken when the server starts, to tell when a
/// package upgrade has replaced them.
public enum HostedImage {
    public static let launcherVariable = APPSERVER_LAUNCHER_VARIABLE
    public static let libraryVariable = APPSERVER_HOSTED_LIBRARY_VARIABLE

    struct File {
        let path: String
        let device: UInt64
        let inode: UInt64

        init?(path: String) {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            self.path = path
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
        }

        /// Another file at the path now (none at all is no upgrade to make).
        var replaced: Bool {
            guard let now = File(path: path) else { return false }
            return now.device != device || now.inode != inode
        }
    }

    /// Why a hosted server cannot know its files.
    public enum AdoptionError: Error, CustomStringConvertible {
        case notLaunched
        case unreadable(path: String, reason: String)

        public var description: String {
            switch self {
            case .notLaunched:
                "the server's library was loaded without its launcher (\(launcherVariable) and \(libraryVariable) "
                    + "are not both set): start the server with the appserver command"
            case let .unreadable(path, reason):
                "cannot stat \(path): \(reason)"
            }
        }
    }

    /// Set once, at the start of a hosted server (before any thread).
    nonisolated(unsafe) static var files: (launcher: File, library: File)?

    /// Takes the launcher's and the library's identities when the server starts. Without them a USR2
    /// upgrade would exec python3.X itself with the server's arguments, so a server that cannot have
    /// them does not start.
    public static func adopt(launcher: String?, library: String?) throws(AdoptionError) {
        guard let launcher, let library else { throw .notLaunched }
        guard let launcherFile = File(path: launcher) else {
            throw .unreadable(path: launcher, reason: String(cString: strerror(errno)))
        }
        guard let libraryFile = File(path: library) else {
            throw .unreadable(path: library, reason: String(cString: strerror(errno)))
        }
        files = (launcherFile, libraryFile)
    }
}
