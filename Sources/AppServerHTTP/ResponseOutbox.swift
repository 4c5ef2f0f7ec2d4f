import NIOCore
import Synchronization

/// A write an app thread hands to the I/O thread; `write()` runs on the event loop.
protocol OutboxWrite: Sendable {
    func write()
}

/// Response writes that app threads (WSGI `--threads`, ASGI's loop thread) hand to the I/O thread.
/// One task on the event loop writes all the writes posted before it ran: a task for each write cost a
/// closure made on the app thread and freed on the I/O thread (malloc's slow path across threads) and
/// the loop's lock. Writes keep their order, also with the tasks an app thread queues itself after a
/// post (a file to send, a close): the write is taken by a task queued before the post returned.
/// Generic over what it carries so that its threads can be tested without connections.
final class ResponseOutbox<Write: OutboxWrite>: @unchecked Sendable {
    private struct Posted {
        var writes: [Write] = []
        /// A task that will take `writes` is queued on the event loop.
        var taskQueued = false
    }

    private let posted = Mutex(Posted())
    private let eventLoop: any EventLoop
    /// The storage of the last batch, emptied, handed back to `posted` by the next task (so neither
    /// array is allocated again). Touched on `eventLoop` only.
    private var spare: [Write] = []

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func post(_ write: Write) {
        posted.withLock { posted in
            posted.writes.append(write)
            queueTaskIfNone(&posted)
        }
    }

    /// Posts all of `writes` and leaves it empty. Into an empty outbox the arrays trade places, so
    /// the writes are not copied one by one (nor retained and released again).
    func post(taking writes: inout [Write]) {
        guard !writes.isEmpty else { return }
        let traded = posted.withLock { posted in
            defer { queueTaskIfNone(&posted) }
            guard posted.writes.isEmpty else {
                posted.writes.append(contentsOf: writes)
                return false
            }
            swap(&posted.writes, &writes)
            return true
        }
        if !traded { writes.removeAll(keepingCapacity: true) }
    }

    /// Queues the task under the lock, so that "a task is queued" is true as soon as a post sees it: a
    /// post that finds one and then queues a task of its own (a file, a close) queues it behind.
    private func queueTaskIfNone(_ posted: inout Posted) {
        guard !posted.taskQueued else { return }
        posted.taskQueued = true
        eventLoop.execute { self.writePosted() }
    }

    private func writePosted() {
        var batch = spare
        spare = []   // `batch` holds the storage alone: the app threads' appends to it must not copy it
        posted.withLock { posted in
            swap(&batch, &posted.writes)
            posted.taskQueued = false
        }
        for write in batch { write.write() }
        batch.removeAll(keepingCapacity: true)
        spare = batch
    }
}
