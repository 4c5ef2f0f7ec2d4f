import AppServerConfig
import Synchronization

/// A worker's access log. Its lines are gathered and written in batches: one write(2) for the requests a
/// thread ran back to back, rather than one each. A write(2) of a line costs ~0.6 us to a file and
/// ~2.5 us to a pipe or journald's stream, as much as a fifth of a hello request's time; a loop turn
/// at load runs 20 to 64 of them (bench/RESULTS.md).
///
/// A line waits only while its thread has more work at hand: the lines go out when the I/O thread's
/// tick ends (sync mode), when an app thread finds no more work, at the end of an ASGI loop's turn,
/// when they fill `batchBytes`, at the worker's heartbeat (every 500 ms) and before the worker exits.
public final class AccessLogWriter: Sendable {
    public let formatter: AccessLogFormatter
    let file: LogFile
    /// The lines not yet written, in order, each with its newline (and journald's priority prefix).
    private let pending = Mutex<[UInt8]>([])
    /// A batch this large is written at once, whoever adds to it.
    public static let batchBytes = 16 * 1024

    public init(format: String, requestIDHeader: String, file: LogFile) {
        self.formatter = AccessLogFormatter(format: format, requestIDHeader: requestIDHeader)
        self.file = file
    }

    /// Adds the line of `record` to the batch, formatted straight into it.
    public func add(_ record: AccessLogRecord) {
        add { formatter.append(record, to: &$0) }
    }

    /// Adds a line already formatted (without its newline) to the batch.
    public func add(line: [UInt8]) {
        add { $0.append(contentsOf: line) }
    }

    private func add(_ line: (inout [UInt8]) -> Void) {
        pending.withLock { batch in
            if batch.capacity == 0 { batch.reserveCapacity(Self.batchBytes + 1024) }
            if file.isJournal { batch.append(contentsOf: "<6>".utf8) }   // the journal's priority: info
            line(&batch)
            batch.append(UInt8(ascii: "\n"))
            if batch.count >= Self.batchBytes { writeOut(&batch) }
        }
    }

    /// Writes the lines gathered so far, if there are any.
    public func flush() {
        pending.withLock { batch in
            if !batch.isEmpty { writeOut(&batch) }
        }
    }

    /// As `flush`, unless another thread is writing or adding a line: for a worker that timed out, whose
    /// stuck thread may hold the lock in a write that never returns.
    public func flushUnlessBusy() {
        _ = pending.withLockIfAvailable { batch in
            if !batch.isEmpty { writeOut(&batch) }
        }
    }

    /// Under `pending`'s lock, so that batches reach the file in the order their lines were made.
    private func writeOut(_ batch: inout [UInt8]) {
        batch.withUnsafeBytes { file.write(bytes: $0) }
        batch.removeAll(keepingCapacity: true)
    }
}
