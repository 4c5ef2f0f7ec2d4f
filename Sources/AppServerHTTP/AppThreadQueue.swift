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
///   by instead, in a timed wait: when the queue has had work and no thread took any for `stallDelay`,
///   the active threads are waiting on I/O (or busy in a long call), and the one standing by takes the
///   oldest request; another idle thread then stands by.
/// Gunicorn's gthread worker hands every request to its pool at once; the requests' overlap while they
/// wait on I/O is the same here, where a request that waits makes the next one start `stallDelay` later.
public struct AppThreadQueue<Item> {
    /// A waiting app thread's state, kept by the thread across its waits.
    public struct Waiter {
        var isIdle = false
        var standsBy = false
        var seenTaken: UInt64 = 0
        var deadline = Monotonic(nanoseconds: 0)
        public init() {}
    }

    /// What a waiting thread does next.
    public enum WaitStep {
        /// Run this item; `wakeAnother`: signal the condition (another idle thread is to stand by).
        case take(Item, wakeAnother: Bool)
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
    private var items = CircularBuffer<(item: Item, holdsPlace: Bool)>(initialCapacity: 64)
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

    /// Called by the I/O thread.
    public mutating func enqueue(_ item: Item, holdsPlace: Bool = false) -> Wake {
        items.append((item, holdsPlace))
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

    /// One step of a waiting thread, with the lock held; after a wait it calls again.
    public mutating func step(_ waiter: inout Waiter, now: Monotonic) -> WaitStep {
        if waiter.isIdle {
            idle -= 1
            waiter.isIdle = false
        }
        if standby == .called && !waiter.standsBy {
            standBy(&waiter, now: now)
        }
        if firstIsTakeable {
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
                return .waitUntil(waiter.deadline)
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
