import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import AppServerHTTP

/// The outbox between app threads and the I/O thread, with real threads posting to a real event loop.
@Suite(.serialized) final class ResponseOutboxTests {
    /// The I/O thread: one event loop a test.
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var loop: any EventLoop { group.next() }
    deinit { try? group.syncShutdownGracefully() }

    /// What the event loop saw; touched on the loop only.
    final class Log: @unchecked Sendable {
        var written: [[Int]]
        /// Tasks an app thread queued after a post that ran before that post's write.
        var tasksAheadOfTheirWrite = 0
        init(threads: Int) { written = Array(repeating: [], count: threads) }
        /// In a task an app thread queued after posting `sequence`: counts the task if that write is not done.
        func expectWritten(thread: Int, through sequence: Int) {
            if (written[thread].last ?? -1) < sequence { tasksAheadOfTheirWrite += 1 }
        }
    }

    struct Recorded: OutboxWrite {
        let log: Log
        let thread: Int
        let sequence: Int
        func write() { log.written[thread].append(sequence) }
    }

    /// Runs `body` on `count` threads of its own at once (not a pool's: they must run side by side).
    func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchSemaphore(value: 0)
        for index in 0..<count {
            Thread { body(index); done.signal() }.start()
        }
        for _ in 0..<count { done.wait() }
    }

    @Test func everyWriteArrivesOnceInItsThreadsOrderAndBeforeTheTasksQueuedAfterIt() throws {
        let loop = self.loop
        let threads = 4, writesEach = 20_000
        let log = Log(threads: threads)
        let outbox = ResponseOutbox<Recorded>(eventLoop: loop)

        onThreads(threads) { thread in
            var batch = MoveOutArray<Recorded>()
            var sequence = 0
            while sequence < writesEach {
                if sequence % 7 == 3 {
                    // A batch, as ASGI's loop thread posts a turn's writes.
                    for _ in 0..<min(3, writesEach - sequence) {
                        batch.append(Recorded(log: log, thread: thread, sequence: sequence))
                        sequence += 1
                    }
                    outbox.post(taking: &batch)
                    #expect(batch.isEmpty)
                } else {
                    outbox.post(Recorded(log: log, thread: thread, sequence: sequence))
                    sequence += 1
                }
                if sequence % 100 == 0 {
                    // A task of the app thread's own after a post (a file to send, a close).
                    let last = sequence - 1
                    loop.execute { log.expectWritten(thread: thread, through: last) }
                }
            }
        }
        // Every post queued its task (or found one queued) before it returned: a task queued now runs after them.
        let (written, ahead) = try loop.submit { (log.written, log.tasksAheadOfTheirWrite) }.wait()
        for thread in 0..<threads {
            #expect(written[thread].elementsEqual(0..<writesEach), "thread \(thread): \(written[thread].count) writes, in order: \(written[thread] == written[thread].sorted())")
        }
        #expect(ahead == 0)
    }

    @Test func aWritePostedWhileABatchIsWrittenIsTakenByTheNextTask() throws {
        let loop = self.loop
        let log = Log(threads: 1)
        let outbox = ResponseOutbox<Recorded>(eventLoop: loop)
        // The loop is held busy while the first write is posted: its task is queued, not yet run.
        let holding = loop.submit { Thread.sleep(forTimeInterval: 0.05) }
        outbox.post(Recorded(log: log, thread: 0, sequence: 0))
        try holding.wait()
        // That task ran (or runs) and took it; a post after it queues another task.
        outbox.post(Recorded(log: log, thread: 0, sequence: 1))
        #expect(try loop.submit { log.written[0] }.wait() == [0, 1])
    }

    /// The ordering promise under a loop slow to take a task: a post that finds a task queued may queue
    /// its own task straight after, so a task that takes its write must be queued before it returns (a
    /// post that saw a task about to be queued and trusted it, while another thread was still queueing
    /// that task, lets its own task get ahead of its write: this test then fails).
    @Test func aTaskQueuedAfterAPostRunsAfterItsWriteWhenQueueingIsSlow() throws {
        let loop = self.loop
        let threads = 4, writesEach = 500
        let log = Log(threads: threads)
        let outbox = ResponseOutbox<Recorded>(eventLoop: QueueingThrough.slowToQueue(base: loop))
        onThreads(threads) { thread in
            for sequence in 0..<writesEach {
                outbox.post(Recorded(log: log, thread: thread, sequence: sequence))
                loop.execute { log.expectWritten(thread: thread, through: sequence) }
            }
        }
        let (written, ahead) = try loop.submit { (log.written, log.tasksAheadOfTheirWrite) }.wait()
        #expect(written.allSatisfy { $0.elementsEqual(0..<writesEach) }, "writes per thread: \(written.map(\.count))")
        #expect(ahead == 0)
    }

    /// A task may run before the post that queued it has returned (the woken I/O thread preempts the
    /// poster): it took the writes, so it must not count as still queued, or the next post trusts it
    /// and its write is never taken.
    @Test func aTaskThatRanBeforeItsPostReturnedDoesNotCountAsQueued() throws {
        let loop = self.loop
        let log = Log(threads: 1)
        let outbox = ResponseOutbox<Recorded>(eventLoop: QueueingThrough.runsBeforeReturning(base: loop))
        for sequence in 0..<50 {
            outbox.post(Recorded(log: log, thread: 0, sequence: sequence))
        }
        var batch = MoveOutArray<Recorded>()
        batch.append(Recorded(log: log, thread: 0, sequence: 50))
        outbox.post(taking: &batch)
        #expect(try loop.submit { log.written[0] }.wait().elementsEqual(0...50))
    }
}

/// An event loop that queues its tasks on `base` its own way (`queue`, on the queueing thread), the
/// rest as `base` does: how the outbox's posts meet a loop that is slow to take a task, or quick.
final class QueueingThrough: EventLoop, @unchecked Sendable {
    let base: any EventLoop
    let queue: @Sendable (_ base: any EventLoop, _ task: @escaping @Sendable () -> Void) -> Void
    init(base: any EventLoop, queue: @escaping @Sendable (_ base: any EventLoop, _ task: @escaping @Sendable () -> Void) -> Void) {
        self.base = base
        self.queue = queue
    }

    /// Takes its time to queue a task, then hands it on.
    static func slowToQueue(base: any EventLoop) -> QueueingThrough {
        QueueingThrough(base: base) { base, task in
            usleep(100)
            base.execute(task)
        }
    }

    /// Returns only after the task ran, as when the woken loop thread runs at once on the queueing
    /// thread's core.
    static func runsBeforeReturning(base: any EventLoop) -> QueueingThrough {
        QueueingThrough(base: base) { base, task in
            let ran = DispatchSemaphore(value: 0)
            base.execute { task(); ran.signal() }
            ran.wait()
        }
    }

    var inEventLoop: Bool { base.inEventLoop }
    func execute(_ task: @escaping @Sendable () -> Void) { queue(base, task) }
    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        base.scheduleTask(deadline: deadline, task)
    }
    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        base.scheduleTask(in: delay, task)
    }
    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        callback(nil)
    }
}
