import NIOCore

/// Decides which app thread takes the I/O thread's work, and when a sleeping one is woken: the pure
/// state of the queue between them, guarded by its owner's lock, returning what to signal.
///
/// Only one thread runs Python at a time (the GIL), so a second app thread helps only while the first
/// one waits: on a database, a sleep, a socket. A thread woken for every request would instead take the
/// request, queue up for the GIL behind the first, and on a single core cost two context switches per
/// request. So:
/// - While no app thread is active, the first request queued wakes one, once the I/O thread's event-loop
///   tick ends (`enqueue` says `.afterTick`): it then finds every request that tick read.
/// - While one is active, it takes the next request itself when it finishes one. One idle thread stands
///   by instead, in a timed wait, and takes the oldest request when the active threads cannot be counted
///   on for it: when none took any for `stallDelay` (they are waiting on I/O, or busy in a long call), or
///   when the oldest has waited `stallDelay` (`.join`): threads whose requests each wait on I/O take
///   requests often, yet too few of them leave the rest of the queue waiting. Another idle thread then
///   stands by.
/// - Requests that keep the GIL busy are best run one after another by the thread that holds it. A
///   thread that joined them waits for the GIL (CPython makes its holder give it up after 5 ms) and
///   says so (`joinerWaitedForTheGIL`): it runs that one request and waits again, and for
///   `gilBusyBackoff` the oldest request's wait calls no one in. Neither a thread's wall time nor its
///   CPU time tells a wait for the GIL from a wait for I/O; the joiner's own wait for the GIL does. A
///   thread called in by a stall stays active.
/// Gunicorn's gthread worker hands every request to its pool at once; the requests' overlap while they
/// wait on I/O is the same here, where a request that waits makes the next one start `stallDelay` later,
/// and threads join one a `stallDelay` while requests keep waiting.
public struct AppThreadQueue<Item> {
    /// A waiting app thread's state, kept by the thread across its waits.
    public struct Waiter {
        var isIdle = false
        var standsBy = false
        var seenTaken: UInt64 = 0
        var deadline = Monotonic(nanoseconds: 0)
        /// When it began standing by.
        var since = Monotonic(nanoseconds: 0)
        public init() {}
    }

    /// What a waiting thread does next.
    public enum WaitStep {
        /// Run this item; `wakeAnother`: signal the condition (another idle thread is to stand by).
        case take(Item, wakeAnother: Bool)
        /// As `take`, called in by the oldest request's wait while the active threads make progress: the
        /// thread tells `joinerWaitedForTheGIL` if it then finds the GIL busy.
        case join(Item, wakeAnother: Bool)
        case waitForSignal
        case waitUntil(Monotonic)
    }

    /// What the I/O thread does after queueing an item.
    public enum Wake: Equatable {
        case none
        /// Signal the condition now (an idle thread is to stand by).
        case now
        /// Call `tickEnded()` when this event-loop tick's other events have been handled.
        case afterTick
    }

    private enum Standby { case none, called, present }

    /// Requests run at once, at most (`--threads`); an item that `holdsPlace` (the rest of a response
    /// already counted) does not wait for a place.
    public let maxRunning: Int
    public let stallDelay: Int64
    /// How long a joiner's wait for the GIL keeps the oldest request's wait from calling threads in.
    public var gilBusyBackoff: Int64 { stallDelay * 100 }
    private var joinsByWaitAllowedFrom = Monotonic(nanoseconds: 0)
    private var items = CircularBuffer<(item: Item, holdsPlace: Bool, queued: Monotonic)>(initialCapacity: 64)
    public private(set) var running = 0
    /// App threads between taking an item and waiting again.
    public private(set) var active = 0
    /// App threads waiting for a signal (the one standing by not counted).
    public private(set) var idle = 0
    private var standby = Standby.none
    /// Items taken so far: the progress the thread standing by watches.
    private var taken: UInt64 = 0
    private var wakeScheduled = false

    public init(maxRunning: Int, stallDelay: Int64) {
        self.maxRunning = maxRunning
        self.stallDelay = stallDelay
    }

    private var firstIsTakeable: Bool {
        guard let first = items.first else { return false }
        return first.holdsPlace || running < maxRunning
    }

    private var hasWaiter: Bool { idle > 0 || standby == .present }

    /// Called by the I/O thread; `now`: when the item was queued.
    public mutating func enqueue(_ item: Item, holdsPlace: Bool = false, now: Monotonic) -> Wake {
        items.append((item, holdsPlace, now))
        guard firstIsTakeable else { return .none }
        if active == 0 {
            guard hasWaiter && !wakeScheduled else { return .none }
            wakeScheduled = true
            return .afterTick
        }
        guard standby == .none && idle > 0 else { return .none }
        standby = .called
        return .now
    }

    /// After an `.afterTick`: true when the condition is to be signalled (no thread came by itself).
    public mutating func tickEnded() -> Bool {
        wakeScheduled = false
        return active == 0 && firstIsTakeable && hasWaiter
    }

    /// The I/O thread runs a request itself (sync mode) when nothing else is running or queued.
    public mutating func claimInline() -> Bool {
        guard running == 0 && items.isEmpty else { return false }
        running += 1
        return true
    }

    /// A request ended (its response done). True when the condition is to be signalled: a place came
    /// free and no active thread will come for the queued work.
    public mutating func finished() -> Bool {
        running -= 1
        return active == 0 && firstIsTakeable && hasWaiter
    }

    /// An active thread asks for more work after finishing an item; nil makes it inactive. With an
    /// item, `wakeAnother` as in `.take`.
    public mutating func nextForActive() -> (item: Item, wakeAnother: Bool)? {
        active -= 1
        guard firstIsTakeable else { return nil }
        var asActive = Waiter()
        return take(&asActive)
    }

    /// A thread that joined (`.join`) waited `stallDelay` or more to take the GIL back: the GIL is busy
    /// with requests on the CPU. The thread runs that one item, then waits again (`endActive`).
    public mutating func joinerWaitedForTheGIL(now: Monotonic) {
        joinsByWaitAllowedFrom = Monotonic(nanoseconds: now.nanoseconds + gilBusyBackoff)
    }

    /// An active thread finished its item and waits again without asking for more.
    public mutating func endActive() {
        active -= 1
    }

    /// One step of a waiting thread, with the lock held; after a wait it calls again.
    public mutating func step(_ waiter: inout Waiter, now: Monotonic) -> WaitStep {
        if waiter.isIdle {
            idle -= 1
            waiter.isIdle = false
        }
        if standby == .called && !waiter.standsBy {
            standBy(&waiter, now: now)
        }
        if let first = items.first, first.holdsPlace || running < maxRunning {
            if active == 0 || (waiter.standsBy && taken == waiter.seenTaken && now >= waiter.deadline) {
                let (item, wakeAnother) = take(&waiter)
                return .take(item, wakeAnother: wakeAnother)
            }
            if !waiter.standsBy && standby == .none {
                standBy(&waiter, now: now)
            }
            if waiter.standsBy {
                if taken != waiter.seenTaken {
                    // The active threads are making progress: watch another `stallDelay`.
                    waiter.seenTaken = taken
                    waiter.deadline = Monotonic(nanoseconds: now.nanoseconds + stallDelay)
                }
                // The oldest has waited a delay, and so has this thread (unless the GIL was found busy).
                let waited = max(Monotonic(nanoseconds: max(first.queued, waiter.since).nanoseconds + stallDelay), joinsByWaitAllowedFrom)
                if now >= waited {
                    let (item, wakeAnother) = take(&waiter)
                    return .join(item, wakeAnother: wakeAnother)
                }
                return .waitUntil(min(waiter.deadline, waited))
            }
        } else if waiter.standsBy {
            standby = .none
            waiter.standsBy = false
        }
        idle += 1
        waiter.isIdle = true
        return .waitForSignal
    }

    private mutating func standBy(_ waiter: inout Waiter, now: Monotonic) {
        standby = .present
        waiter.standsBy = true
        waiter.seenTaken = taken
        waiter.deadline = Monotonic(nanoseconds: now.nanoseconds + stallDelay)
        waiter.since = now
    }

    private mutating func take(_ waiter: inout Waiter) -> (item: Item, wakeAnother: Bool) {
        if waiter.standsBy {
            standby = .none
            waiter.standsBy = false
        }
        let first = items.removeFirst()
        if !first.holdsPlace { running += 1 }
        taken &+= 1
        active += 1
        // Work is left that the active threads may not come for: someone is to watch it.
        let wakeAnother = firstIsTakeable && standby == .none && idle > 0
        if wakeAnother { standby = .called }
        return (first.item, wakeAnother)
    }
}
