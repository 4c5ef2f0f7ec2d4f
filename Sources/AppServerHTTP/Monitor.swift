#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A mutex with one condition variable: what a Python thread waits on (with the GIL released) while the
/// I/O thread fills a request body or drains a response. `Synchronization.Mutex` has no condition.
public final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    @inline(__always) public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a signal; call with the lock held (inside `withLock`). Returns false on timeout.
    @discardableResult
    public func wait(deadline: Monotonic? = nil) -> Bool {
        guard let deadline else {
            pthread_cond_wait(condition, mutex)
            return true
        }
        var ts = timespec(tv_sec: Int(deadline.nanoseconds / 1_000_000_000), tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
        return pthread_cond_timedwait(condition, mutex, &ts) != ETIMEDOUT
    }

    private static let stripes: [Monitor] = (0..<64).map { _ in Monitor() }

    /// One of a fixed set of monitors, picked by `key`: for short-lived objects whose waits are rare.
    /// Waiters must re-check their condition after waking (another object's broadcast may wake them).
    public static func striped(for key: ObjectIdentifier) -> Monitor {
        // The object's address, past its 16-byte alignment (hashValue would run SipHash every request).
        stripes[Int((UInt(bitPattern: key) >> 4) & 63)]
    }

    private static let nextStripe = Atomic<Int>(0)

    /// The next of the shared monitors, round robin.
    public static func nextStriped() -> Monitor {
        stripes[nextStripe.add(1, ordering: .relaxed).newValue & 63]
    }

    func unlockForCallout() { pthread_mutex_unlock(mutex) }
    func lockAfterCallout() { pthread_mutex_lock(mutex) }

    public func signal() { pthread_cond_signal(condition) }
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// CLOCK_MONOTONIC time, the clock that timeouts and heartbeats are measured on.
public struct Monotonic: Comparable, Sendable {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static func now() -> Monotonic {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Monotonic(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public func adding(seconds: Double) -> Monotonic {
        Monotonic(nanoseconds: nanoseconds + Int64(seconds * 1e9))
    }

    public static func < (a: Monotonic, b: Monotonic) -> Bool { a.nanoseconds < b.nanoseconds }
}
