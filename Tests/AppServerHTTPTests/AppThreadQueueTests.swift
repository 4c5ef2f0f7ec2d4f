import Testing
@testable import AppServerHTTP

/// The hand-off between the I/O thread and app threads, driven without threads: each "thread" is a
/// Waiter, time is given.
@Suite struct AppThreadQueueTests {
    typealias Queue = AppThreadQueue<Int>
    let ms: Int64 = 1_000_000

    func at(_ milliseconds: Double) -> Monotonic { Monotonic(nanoseconds: Int64(milliseconds * 1e6)) }

    /// Parks `count` threads as idle, as they are after start.
    func idleThreads(_ queue: inout Queue, _ count: Int) -> [Queue.Waiter] {
        (0..<count).map { _ in
            var waiter = Queue.Waiter()
            guard case .waitForSignal = queue.step(&waiter, now: at(0)) else { Issue.record("an empty queue has a thread wait"); return waiter }
            return waiter
        }
    }

    /// A queue of `threads` app threads of which the first has taken request 1 and runs it.
    func oneRunning(threads count: Int) -> (Queue, [Queue.Waiter]) {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, count)
        _ = queue.enqueue(1, now: at(0))
        _ = queue.tickEnded()
        if case .take(1, _) = queue.step(&threads[0], now: at(0)) {} else { Issue.record("the first thread takes 1") }
        return (queue, threads)
    }

    @Test func theFirstRequestOfATickWakesOneThreadAfterTheTick() {
        var queue = Queue(maxRunning: 4, stallDelay: ms)
        var threads = idleThreads(&queue, 4)
        let first = queue.enqueue(1, now: at(0)), second = queue.enqueue(2, now: at(0)), third = queue.enqueue(3, now: at(0))
        #expect(first == .afterTick)
        #expect(second == .none && third == .none, "one wake a tick")
        let signal = queue.tickEnded()
        #expect(signal)
        // The woken thread takes the first and, work being left, calls another to stand by.
        guard case .take(1, wakeAnother: true) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // The active thread goes on by itself: no thread is woken per request.
        let next = queue.nextForActive(), after = queue.nextForActive(), none = queue.nextForActive()
        #expect(next! == (2, false) && after! == (3, false))
        #expect(none == nil)
        #expect(queue.active == 0)
    }

    @Test func workQueuedWhileAThreadRunsWaitsForIt() {
        var (queue, threads) = oneRunning(threads: 2)
        // An active thread will come back for it; an idle one is called to stand by.
        let second = queue.enqueue(2, now: at(10)), third = queue.enqueue(3, now: at(10.5))
        #expect(second == .now)
        #expect(third == .none, "one stands by")
        // The called thread watches for `stallDelay` instead of taking.
        guard case .waitUntil(let deadline) = queue.step(&threads[1], now: at(10)) else { Issue.record("stands by"); return }
        #expect(deadline == at(11))
        // The active thread takes 2: the oldest is now 3, which will have waited a delay at 11.5.
        _ = queue.finished()
        let next = queue.nextForActive()
        #expect(next! == (2, false))
        guard case .waitUntil(let later) = queue.step(&threads[1], now: at(10.8)) else { Issue.record("still stands by"); return }
        #expect(later == at(11.5))
    }

    /// One thread active on request 1, requests 2...12 queued at 0.1 ms, a second thread standing by since
    /// 0.2 ms; the active thread then takes 2...8 by 0.9 ms.
    func busyQueue() -> (Queue, [Queue.Waiter]) {
        var queue = Queue(maxRunning: 16, stallDelay: ms)
        var threads = idleThreads(&queue, 3)
        _ = queue.enqueue(1, now: at(0))
        _ = queue.tickEnded()
        if case .take(1, _) = queue.step(&threads[0], now: at(0)) {} else { Issue.record("takes 1") }
        for request in 2...12 { _ = queue.enqueue(request, now: at(0.1)) }
        if case .waitUntil(at(1.2)) = queue.step(&threads[1], now: at(0.2)) {} else { Issue.record("stands by") }
        for request in 2...8 {
            _ = queue.finished()
            #expect(queue.nextForActive()! == (request, false))
        }
        return (queue, threads)
    }

    @Test func requestsWaitingBehindThreadsThatTakeOthersAreTakenOnceTheOldestWaitedADelay() {
        // Threads whose requests each wait on I/O take requests often, yet are too few for the queue:
        // the oldest request's wait, not whether anyone took one, calls in the thread standing by.
        var (queue, threads) = busyQueue()
        guard case .join(9, wakeAnother: true) = queue.step(&threads[1], now: at(1.2)) else { Issue.record("joins for 9, queued at 0.1"); return }
        // The next one stands by a whole delay of its own before it joins: one thread a delay.
        guard case .waitUntil(let next) = queue.step(&threads[2], now: at(1.3)) else { Issue.record("the next stands by"); return }
        #expect(next == at(2.3))
        guard case .take(10, wakeAnother: false) = queue.step(&threads[2], now: at(2.3)) else { Issue.record("takes 10 (no progress since 1.3: a stall)"); return }
        #expect(queue.active == 3)
    }

    @Test func aJoinerThatWaitedForTheGILKeepsTheOthersOutForTheBackoff() {
        // Requests that keep the GIL busy: the thread that joined them waited for it, runs its one
        // request and waits again; for the backoff only a stall calls a thread in.
        var (queue, threads) = busyQueue()
        guard case .join(9, wakeAnother: true) = queue.step(&threads[1], now: at(1.2)) else { Issue.record("joins for 9"); return }
        queue.joinerWaitedForTheGIL(now: at(6.2))
        queue.endActive()
        #expect(queue.active == 1)
        guard case .waitUntil(let due) = queue.step(&threads[2], now: at(6.3)) else { Issue.record("stands by"); return }
        #expect(due == at(7.3), "the stall watch, not the oldest's wait")
        _ = queue.finished()
        #expect(queue.nextForActive()! == (10, false))
        guard case .waitUntil(let later) = queue.step(&threads[2], now: at(7.3)) else { Issue.record("progress: still stands by"); return }
        #expect(later == at(8.3))
        // No progress for a delay: a stall still calls it in, backoff or not.
        guard case .take(11, _) = queue.step(&threads[2], now: at(8.3)) else { Issue.record("takes 11 on the stall"); return }
        // After the backoff the oldest's wait counts again, though the active threads make progress.
        _ = queue.enqueue(13, now: at(100))
        guard case .waitUntil(let afterBackoff) = queue.step(&threads[1], now: at(100)) else { Issue.record("stands by again"); return }
        #expect(afterBackoff == at(101))
        _ = queue.finished()
        #expect(queue.nextForActive()! == (12, false))
        guard case .waitUntil(let backoffEnd) = queue.step(&threads[1], now: at(101)) else { Issue.record("waits out the backoff"); return }
        #expect(backoffEnd == at(102), "the stall watch, restarted by the progress")
        _ = queue.finished()
        _ = queue.enqueue(14, now: at(101))
        #expect(queue.nextForActive()! == (13, false))
        guard case .join(14, _) = queue.step(&threads[1], now: at(106.2)) else { Issue.record("joins for 14 after the backoff"); return }
    }

    @Test func aStalledQueueIsTakenByTheThreadStandingBy() {
        var (queue, threads) = oneRunning(threads: 3)
        // Thread 0 now waits on I/O inside the app: it takes nothing more.
        let second = queue.enqueue(2, now: at(0)), third = queue.enqueue(3, now: at(0))
        #expect(second == .now && third == .none)
        guard case .waitUntil = queue.step(&threads[1], now: at(0)) else { Issue.record("stands by"); return }
        // Woken early (a spurious wake-up): not yet.
        guard case .waitUntil = queue.step(&threads[1], now: at(0.5)) else { Issue.record("waits out the delay"); return }
        // No progress for the delay: it takes the oldest and calls the last idle thread to stand by.
        guard case .take(2, wakeAnother: true) = queue.step(&threads[1], now: at(1)) else { Issue.record("takes 2"); return }
        guard case .waitUntil = queue.step(&threads[2], now: at(1)) else { Issue.record("the next stands by"); return }
        guard case .take(3, wakeAnother: false) = queue.step(&threads[2], now: at(2)) else { Issue.record("takes 3"); return }
        #expect(queue.active == 3)
        #expect(queue.running == 3)
    }

    @Test func theThreadStandingByGoesIdleWhenTheQueueEmpties() {
        var (queue, threads) = oneRunning(threads: 2)
        let second = queue.enqueue(2, now: at(0))
        #expect(second == .now)
        guard case .waitUntil = queue.step(&threads[1], now: at(0)) else { Issue.record("stands by"); return }
        _ = queue.finished()
        let next = queue.nextForActive()
        #expect(next! == (2, false))
        guard case .waitForSignal = queue.step(&threads[1], now: at(1)) else { Issue.record("idle again"); return }
        #expect(queue.idle == 1)
        // Next time work is queued behind an active thread, a thread is called again.
        let third = queue.enqueue(3, now: at(0))
        #expect(third == .now)
    }

    @Test func requestsBeyondTheThreadCountWaitForAPlace() {
        var queue = Queue(maxRunning: 1, stallDelay: ms)
        var threads = idleThreads(&queue, 2)
        let inline = queue.claimInline()
        #expect(inline, "nothing runs: the I/O thread may run it itself")
        let wake = queue.enqueue(1, now: at(0))
        #expect(wake == .none, "the one place is taken: nobody can run it")
        let inlineAgain = queue.claimInline()
        #expect(!inlineAgain)
        guard case .waitForSignal = queue.step(&threads[0], now: at(0)) else { Issue.record("waits for the place"); return }
        let signal = queue.finished()
        #expect(signal, "the place came free: wake a thread")
        guard case .take(1, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes 1"); return }
        // Another request waits for the place too.
        let another = queue.enqueue(2, holdsPlace: false, now: at(0))
        #expect(another == .none)
        #expect(queue.running == 1)
    }

    @Test func theRestOfAResponseDoesNotWaitForAPlace() {
        var queue = Queue(maxRunning: 1, stallDelay: ms)
        var threads = idleThreads(&queue, 1)
        let inline = queue.claimInline()
        #expect(inline)
        let wake = queue.enqueue(7, holdsPlace: true, now: at(0))
        #expect(wake == .afterTick)
        let signal = queue.tickEnded()
        #expect(signal)
        guard case .take(7, _) = queue.step(&threads[0], now: at(0)) else { Issue.record("takes the continuation"); return }
        #expect(queue.running == 1, "still the one request")
    }
}
