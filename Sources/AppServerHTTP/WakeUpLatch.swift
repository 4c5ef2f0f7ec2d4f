/// When a queue's producers wake the thread that consumes it through a pipe: the pure state of that
/// wake-up, guarded by the queue's lock, returning what to do.
///
/// The consumer takes every queued item each time it wakes, so an item queued while a wake-up is on
/// its way rides on it: the pipe carries at most one byte. A wake-up is on its way while the I/O
/// thread will write it at the end of its current event-loop tick (`scheduled`: all the items of one
/// tick share it), or once it is written and the consumer has not yet taken the queue (`written`).
/// Under load the consumer is busy while new requests arrive, and every tick of the I/O thread used to
/// write a byte that the consumer read only when it next polled: most of the I/O thread's writes that
/// were not responses.
public struct WakeUpLatch: Sendable {
    public enum Action: Equatable, Sendable {
        /// Nothing: a wake-up is on its way.
        case none
        /// Write the wake-up at the end of the I/O thread's tick, after calling `tickEnded`.
        case writeAfterTick
        /// Write the wake-up now.
        case writeNow
    }

    private var scheduled = false
    private var written = false

    public init() {}

    /// An item was queued, by the I/O thread (`onIOThread`) or by another thread.
    public mutating func queued(onIOThread: Bool) -> Action {
        if scheduled || written { return .none }
        if onIOThread {
            scheduled = true
            return .writeAfterTick
        }
        written = true
        return .writeNow
    }

    /// The I/O thread's tick ended after `.writeAfterTick`; it writes the wake-up now. (Nothing else
    /// wrote one meanwhile: every item queued since rode on the scheduled one.)
    public mutating func tickEnded() {
        scheduled = false
        written = true
    }

    /// The consumer woke and drained the pipe, and now takes the queue (in the same hold of the lock):
    /// an item queued after this needs a wake-up of its own.
    public mutating func taking() {
        written = false
    }
}
