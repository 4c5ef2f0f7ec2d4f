import Testing
@testable import AppServerHTTP

/// The hand-off between the I/O thread and app threads, driven without threads: each "thread" is a
/// Waiter, time is given.
@Suite struct AppThreadQueueTests {
    typealias Queue = AppThreadQueue<Int>
    let ms: Int64 = 1_000_000

    func at(_ milliseconds: Int64) -> Monotonic { Monotonic(nanoseconds: milliseconds * ms) }

    /// Parks `count` threads as idle, as they are after start.
    func idleThreads(_ queue: inout Queue, _ count: Int) -> [Queue.Waiter] {
        (0..<count).map { _ in
            var waiter = Queue.Waiter()
            guard case .waitForSignal = queue.step(&waiter, now: at(0)) else { Issue.record("an empty queue has a thread wait"); return waiter }
            return waiter
        }
    }

    @Test func theFirstRequestOfATickWakesOneThreadAfterTheTick() {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, 4)
        let r1 = queue.enqueue(1)
        #expect(r1 == .afterTick)
        let r2 = queue.enqueue(2)
        #expect(r2 == .none, "one wake a tick")
        let r3 = queue.enqueue(3)
        #expect(r3 == .none)
        let r4 = queue.tickEnded()
        #expect(r4)
        // The woken thread takes the first and, work being left, calls another to stand by.
        guard case .take(1, wakeAnother: true) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // The active thread goes on by itself: no thread is woken per request.
        let r5 = queue.nextForActive()!
        #expect(r5 == (2, false))
        let r6 = queue.nextForActive()!
        #expect(r6 == (3, false))
        let r7 = queue.nextForActive()
        #expect(r7 == nil)
        #expect(queue.active == 0)
    }

    @Test func workQueuedWhileAThreadRunsWaitsForIt() {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, 2)
        _ = queue.enqueue(1)
        _ = queue.tickEnded()
        guard case .take(1, wakeAnother: false) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // An active thread will come back for it; an idle one is called to stand by.
        let r8 = queue.enqueue(2)
        #expect(r8 == .now)
        let r9 = queue.enqueue(3)
        #expect(r9 == .none, "one stands by")
        // The called thread watches for `stallDelay` instead of taking.
        guard case .waitUntil(let deadline) = queue.step(&threads[1], now: at(10)) else { Issue.record("stands by"); return }
        #expect(deadline == at(11))
        // The active thread makes progress: the watch starts again.
        _ = queue.finished()
        let r10 = queue.nextForActive()!
        #expect(r10 == (2, false))
        guard case .waitUntil(let later) = queue.step(&threads[1], now: at(11)) else { Issue.record("still stands by"); return }
        #expect(later == at(12))
    }

    @Test func aStalledQueueIsTakenByTheThreadStandingBy() {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, 3)
        _ = queue.enqueue(1)
        _ = queue.tickEnded()
        guard case .take(1, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // Thread 0 now waits on I/O inside the app: it takes nothing more.
        let r11 = queue.enqueue(2)
        #expect(r11 == .now)
        let r12 = queue.enqueue(3)
        #expect(r12 == .none)
        guard case .waitUntil = queue.step(&threads[1], now: at(0)) else { Issue.record("stands by"); return }
        // Woken early (a spurious wake-up): not yet.
        guard case .waitUntil = queue.step(&threads[1], now: at(0) + 0.5) else { Issue.record("waits out the delay"); return }
        // No progress for the delay: it takes the oldest and calls the last idle thread to stand by.
        guard case .take(2, wakeAnother: true) = queue.step(&threads[1], now: at(1)) else { Issue.record("takes 2"); return }
        guard case .waitUntil = queue.step(&threads[2], now: at(1)) else { Issue.record("the next stands by"); return }
        guard case .take(3, wakeAnother: false) = queue.step(&threads[2], now: at(2)) else { Issue.record("takes 3"); return }
        #expect(queue.active == 3)
        #expect(queue.running == 3)
    }

    @Test func theThreadStandingByGoesIdleWhenTheQueueEmpties() {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, 2)
        _ = queue.enqueue(1)
        _ = queue.tickEnded()
        guard case .take(1, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        let r13 = queue.enqueue(2)
        #expect(r13 == .now)
        guard case .waitUntil = queue.step(&threads[1], now: at(0)) else { Issue.record("stands by"); return }
        _ = queue.finished()
        let r14 = queue.nextForActive()!
        #expect(r14 == (2, false))
        guard case .waitForSignal = queue.step(&threads[1], now: at(1)) else { Issue.record("idle again"); return }
        #expect(queue.idle == 1)
        // Next time work is queued behind an active thread, a thread is called again.
        let r15 = queue.enqueue(3)
        #expect(r15 == .now)
    }

    @Test func requestsBeyondTheThreadCountWaitForAPlace() {
        var queue = Queue(maxRunning: 1, stallDelay: ms)
        var threads = idleThreads(&queue, 2)
        let r16 = queue.claimInline()
        #expect(r16, "nothing runs: the I/O thread may run it itself")
        let r17 = queue.enqueue(1)
        #expect(r17 == .none, "the one place is taken: nobody can run it")
        let inlineAgain = queue.claimInline()
        #expect(!inlineAgain)
        guard case .waitForSignal = queue.step(&threads[0], now: at(0)) else { Issue.record("waits for the place"); return }
        let r18 = queue.finished()
        #expect(r18, "the place came free: wake a thread")
        guard case .take(1, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // Another request waits for the place too.
        let r19 = queue.enqueue(2, holdsPlace: false)
        #expect(r19 == .none)
        #expect(queue.running == 1)
        _ = threads
    }

    @Test func theRestOfAResponseDoesNotWaitForAPlace() {
        var queue = Queue(maxRunning: 1, stallDelay: ms)
        var threads = idleThreads(&queue, 1)
        let r20 = queue.claimInline()
        #expect(r20)
        let r21 = queue.enqueue(7, holdsPlace: true)
        #expect(r21 == .afterTick)
        let r22 = queue.tickEnded()
        #expect(r22)
        guard case .take(7, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes the continuation"); return }
        #expect(queue.running == 1, "still the one request")
    }
}

private extension Monotonic {
    static func + (time: Monotonic, milliseconds: Double) -> Monotonic {
        Monotonic(nanoseconds: time.nanoseconds + Int64(milliseconds * 1e6))
    }
}
