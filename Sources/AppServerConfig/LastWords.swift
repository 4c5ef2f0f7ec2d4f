import Logging

/// What a worker says right before it exits (why it could not boot, why it gave up), left in its slot
/// (memory shared since before fork) for the arbiter, which logs it when it reaps the worker:
/// `Worker (pid:812): <message>`, with the worker's WORKER_PID field in the journal.
///
/// The worker does not log it itself because the line could be lost under systemd. journald files a
/// native entry under a unit by reading the sender's /proc when it gets to the entry; a busy journald
/// finds a worker that exited at once gone and files its traceback under no unit, out of
/// `journalctl -u` (a failed rollout under load said nothing of why). The arbiter lives on, and
/// journald keeps its metadata for as long as the stream systemd opened for it is connected.
///
/// Layout: the message's length in bytes (0: nothing said), the level, then the UTF-8 bytes. The worker
/// writes once and exits; the arbiter reads after wait(2), so the two never race.
public struct LastWords: @unchecked Sendable {
    public static let capacity = 32768
    private static let header = 16
    /// The most of a message kept: a longer one keeps its first line and its end (a traceback's
    /// last lines say what failed).
    static let messageLimit = capacity - header
    private let memory: UnsafeMutableRawPointer

    /// `memory`: `capacity` zeroed bytes shared by the arbiter and the worker.
    public init(memory: UnsafeMutableRawPointer) {
        self.memory = memory
    }

    /// In the worker, right before `_exit`.
    public func say(_ level: Logger.Level, _ message: String) {
        let bytes = Self.fitted(Array(message.utf8))
        memory.storeBytes(of: Int64(Logger.Level.allCases.firstIndex(of: level) ?? 0), toByteOffset: 8, as: Int64.self)
        bytes.withUnsafeBytes { (memory + Self.header).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        memory.storeBytes(of: Int64(bytes.count), as: Int64.self)
    }

    /// In the arbiter, once the worker is reaped: what it said, if anything.
    public func heard() -> (level: Logger.Level, message: String)? {
        let count = Int(memory.load(as: Int64.self))
        guard count > 0, count <= Self.messageLimit else { return nil }
        let index = Int(memory.load(fromByteOffset: 8, as: Int64.self))
        let level = Logger.Level.allCases.indices.contains(index) ? Logger.Level.allCases[index] : .error
        let bytes = UnsafeRawBufferPointer(start: memory + Self.header, count: count)
        return (level, String(decoding: bytes, as: UTF8.self))
    }

    /// The message, or its first line and as much of its end as fits, with what was left out said.
    static func fitted(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count > messageLimit else { return bytes }
        let firstLine = bytes.prefix(1024).prefix { $0 != UInt8(ascii: "\n") }
        let marker = Array("\n[... \(bytes.count) bytes in all; the middle is left out ...]\n".utf8)
        let tail = bytes.suffix(messageLimit - firstLine.count - marker.count)
        return Array(firstLine) + marker + Array(tail)
    }
}
