import Atomics
import Foundation
import Logging
import Synchronization

/// The error log: Gunicorn's line format, `[2026-11-24 10:00:00 +0000] [PID] [LEVEL] message`, written
/// with one write(2) a line so that the lines of several processes sharing the file never interleave.
public final class LogFile: Sendable {
    public let path: String
    private let fd: Mutex<Int32>

    /// `-` is stderr (or stdout for `stdout: true`).
    public init(path: String, stdout: Bool = false) throws(ConfigError) {
        self.path = path
        let descriptor = try Self.open(path, stdout: stdout)
        self.fd = Mutex(descriptor)
        self.stdout = stdout
        self.isJournal = path == "-" && Self.isJournalStream(descriptor)
    }

    /// The descriptor is systemd's journal stream (JOURNAL_STREAM names its device and inode): lines
    /// then start with a syslog priority, `<3>`, which the journal reads and removes.
    public let isJournal: Bool

    static func isJournalStream(_ fd: Int32) -> Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: value).split(separator: ":")
        var info = stat()
        guard parts.count == 2, fstat(fd, &info) == 0 else { return false }
        return UInt64(parts[0]) == UInt64(info.st_dev) && UInt64(parts[1]) == UInt64(info.st_ino)
    }

    private let stdout: Bool

    private static func open(_ path: String, stdout: Bool) throws(ConfigError) -> Int32 {
        if path == "-" { return stdout ? STDOUT_FILENO : STDERR_FILENO }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ConfigError.invalidValue(key: "logfile", value: path, reason: String(cString: strerror(errno)))
        }
        return fd
    }

    /// `capture_output`: the process's stdout and stderr (and its children's: the app's prints) go to this file.
    public func captureStandardStreams() {
        guard path != "-" else { return }
        fd.withLock { fd in
            _ = dup2(fd, STDOUT_FILENO)
            _ = dup2(fd, STDERR_FILENO)
        }
    }

    /// USR1: open the file again (after logrotate moved it).
    public func reopen() {
        guard path != "-", let newFD = try? Self.open(path, stdout: stdout) else { return }
        fd.withLock { current in
            let old = current
            current = newFD
            Glibc.close(old)
        }
    }

    public func write(_ line: String) {
        var line = line
        if !line.hasSuffix("\n") { line += "\n" }
        line.withUTF8 { write(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Writes `bytes` whole (a line with its newline), in one write(2) unless the kernel takes less.
    public func write(bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        fd.withLock { fd in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, base + offset, bytes.count - offset)
                if n < 0 { if errno == EINTR { continue }; return }
                offset += n
            }
        }
    }
}

/// A swift-log handler writing Gunicorn-style lines to the error log.
public struct ErrorLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let file: LogFile

    public init(file: LogFile, level: ServerConfig.LogLevel) {
        self.file = file
        self.logLevel = level.swiftLogLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Metadata under this key are fields of the journal entry only, which its text says already:
    /// `["journal": ["worker_pid": "812"]]`.
    public static let journalOnly = "journal"

    public func log(event: LogEvent) {
        LogCounters.count(event.level)
        var text = "\(event.message)"
        var merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let journalOnly = merged.removeValue(forKey: Self.journalOnly)
        if file.isJournal, let send = JournalFields.send {
            // One journal entry with fields (`journalctl WORKER_PID=812`, `REQUEST_ID=...`), the
            // traceback in the same MESSAGE; the stream below if the journal refuses it.
            var fields = [("MESSAGE", "[\(getpid())] [\(Self.name(event.level))] \(text)"), ("PRIORITY", String(Self.syslogPriority(event.level))),
                          ("SYSLOG_IDENTIFIER", "appserver")] + JournalFields.processFields
            var entryFields = merged
            if case .dictionary(let only)? = journalOnly { entryFields.merge(only) { $1 } }
            for (key, value) in entryFields.sorted(by: { $0.key < $1.key }) { fields.append((JournalFields.fieldName(key), "\(value)")) }
            if send(fields) { return }
        }
        if !merged.isEmpty {
            // On the message's first line, before a traceback.
            let fields = " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            if let newline = text.firstIndex(of: "\n") { text.insert(contentsOf: fields, at: newline) } else { text += fields }
        }
        if file.isJournal {
            // The journal stamps the time itself; every line carries the priority (tracebacks too).
            let priority = "<\(Self.syslogPriority(event.level))>"
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            let first = lines.isEmpty ? "" : lines.removeFirst()
            file.write(([priority + "[\(getpid())] [\(Self.name(event.level))] " + first] + lines.map { priority + $0 }).joined(separator: "\n"))
        } else {
            file.write("[\(Self.timestamp())] [\(getpid())] [\(Self.name(event.level))] \(text)")
        }
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARNING"
        case .error: return "ERROR"
        case .critical: return "CRITICAL"
        }
    }

    /// `2026-11-24 10:00:00 +0000`, local time as Gunicorn prints it.
    public static func timestamp() -> String {
        var now = time(nil)
        var tm = tm()
        localtime_r(&now, &tm)
        var buf = [CChar](repeating: 0, count: 64)
        let n = strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S %z", &tm)
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension ServerConfig.LogLevel {
    public var swiftLogLevel: Logger.Level {
        switch self {
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }
}

/// Structured fields of error-log entries sent to the journal (under systemd, when stderr is its
/// stream). The sender is installed by the arbiter (AppServerSystemd's JournalSocket).
public enum JournalFields {
    /// Sends one entry; false if the journal did not take it.
    nonisolated(unsafe) public static var send: (@Sendable ([(String, String)]) -> Bool)?
    /// Fields of every entry of this process: ARBITER_PID, and in a worker WORKER_PID, WORKER_AGE
    /// and GENERATION. Set once, while the process has one thread.
    nonisolated(unsafe) public static var processFields: [(String, String)] = []

    /// A journal field name for a metadata key: `request_id` is REQUEST_ID.
    static func fieldName(_ key: String) -> String {
        let name = String(decoding: key.uppercased().utf8.map { ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) ? $0 : 95 }, as: UTF8.self)
        return name.first.map { $0.isLetter } == true ? name : "F_" + name
    }
}

/// Error-log lines by level, of every process of the server: a few words of memory shared across fork
/// (made by the arbiter before its first worker), for statsd's `gunicorn.log.*` counters.
public enum LogCounters {
    public struct Counts: Equatable, Sendable {
        public var critical: Int64 = 0
        public var error: Int64 = 0
        public var warning: Int64 = 0
        public init() {}

        public func subtracting(_ earlier: Counts) -> Counts {
            var result = Counts()
            result.critical = critical - earlier.critical
            result.error = error - earlier.error
            result.warning = warning - earlier.warning
            return result
        }
    }

    // Only ever accessed atomically.
    nonisolated(unsafe) private static let words: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>? = {
        guard let memory = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else { return nil }
        return memory.bindMemory(to: UnsafeAtomic<Int64>.Storage.self, capacity: 3)
    }()

    /// Makes the shared words now, before fork, so that every process counts into the same ones.
    public static func prepare() { _ = words }

    static func count(_ level: Logger.Level) {
        guard let words else { return }
        let index: Int
        switch level {
        case .critical: index = 0
        case .error: index = 1
        case .warning: index = 2
        default: return
        }
        UnsafeAtomic<Int64>(at: words + index).wrappingIncrement(ordering: .relaxed)
    }

    public static func read() -> Counts {
        var counts = Counts()
        guard let words else { return counts }
        counts.critical = UnsafeAtomic<Int64>(at: words).load(ordering: .relaxed)
        counts.error = UnsafeAtomic<Int64>(at: words + 1).load(ordering: .relaxed)
        counts.warning = UnsafeAtomic<Int64>(at: words + 2).load(ordering: .relaxed)
        return counts
    }
}
