import NIOCore
import Synchronization

/// A write an app thread hands to the I/O thread; `write()` runs on the event loop.
protocol OutboxWrite: Sendable {
    /// Consuming: the batch hands each write over moved, and the write moves its buffers on.
    consuming func write()
}

/// Response writes that app threads (WSGI `--threads`, ASGI's loop thread) hand to the I/O thread.
/// One task on the event loop writes all the writes posted before it ran: a task for each write cost a
/// closure made on the app thread and freed on the I/O thread (malloc's slow path across threads) and
/// the loop's lock. Writes keep their order, also with the tasks an app thread queues itself after a
/// post (a file to send, a close): a post returns only once a task that will take its write is queued.
/// Generic over what it carries so that its threads can be tested without connections.
final class ResponseOutbox<Write: OutboxWrite>: @unchecked Sendable {
    private struct Posted {
        var writes = MoveOutArray<Write>()
        /// A task that will take `writes` is on the event loop's queue.
        var taskQueued = false
        /// How many times a task took `writes`: a post that queued a task reads it before and after,
        /// and only if no task took the writes in between is its own task still to come.
        var takes: UInt64 = 0

        /// What a post that has just added writes must do: nil when a task is queued, else queue one,
        /// with this count of takes to check against once it is queued.
        var takesIfNoTaskQueued: UInt64? { taskQueued ? nil : takes }
    }

    private let posted = Mutex(Posted())
    private let eventLoop: any EventLoop
    /// The storage of the last batch, emptied, handed back to `posted` by the next task (so neither
    /// array is allocated again). Touched on `eventLoop` only.
    private var spare = MoveOutArray<Write>()

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func post(_ write: Write) {
        let takes = posted.withLock { posted -> UInt64? in
            posted.writes.append(write)
            return posted.takesIfNoTaskQueued
        }
        if let takes { queueTask(takenSince: takes) }
    }

    /// Posts all of `writes` and leaves it empty. Into an empty outbox the arrays trade places, so
    /// the writes are not moved one by one.
    func post(taking writes: inout MoveOutArray<Write>) {
        guard !writes.isEmpty else { return }
        let takes = posted.withLock { posted -> UInt64? in
            posted.writes.append(takingAllOf: &writes)
            return posted.takesIfNoTaskQueued
        }
        if let takes { queueTask(takenSince: takes) }
    }

    /// Queues a task outside the lock. Queueing wakes the event loop (an eventfd write), and the woken
    /// I/O thread, on the core of a pinned worker, preempted the poster while it held the lock, spun on
    /// it and slept until the poster ran again. The task counts as queued only if none took the writes
    /// meanwhile (it may be the one that did); until then every post queues one of its own, so a post
    /// still returns only after a task that will take its write is queued. A task that finds the
    /// writes taken writes nothing.
    private func queueTask(takenSince takes: UInt64) {
        eventLoop.execute { self.writePosted() }
        posted.withLock { posted in
            if posted.takes == takes { posted.taskQueued = true }
        }
    }

    private func writePosted() {
        var batch = MoveOutArray<Write>()
        swap(&batch, &spare)   // `batch` holds the storage alone: the app threads' appends to it must not copy it
        posted.withLock { posted in
            swap(&batch, &posted.writes)
            posted.taskQueued = false
            posted.takes &+= 1
        }
        batch.drain { $0.write() }
        spare = batch
    }
}
