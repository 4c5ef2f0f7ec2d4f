import NIOCore
import Synchronization

/// Buffers of written responses, kept for the heads of the next ones: a response's head (and a small
/// body after it) goes out as one buffer, and allocating and freeing its storage (an object and its
/// bytes, often on two threads) cost ~800 instructions a request. The I/O thread gives a response's last
/// buffer back once it is flushed; an app thread takes one for the next response's head.
///
/// A given buffer may still be referenced: by NIO, when the socket took only part of it, or by the write
/// that carried it, until that is let go. Taking one is therefore never a promise of its memory:
/// `ByteBuffer.clear(minimumCapacity:)` reuses the storage only when the taker's copy is its only
/// reference, and otherwise allocates, leaving the bytes others still read as they are (copy on write).
public final class ResponseBufferPool: Sendable {
    /// At most this many buffers are kept (one for each response of a busy event-loop tick).
    public static let maximumCount = 64
    /// Kept only with storage of this size: enough for a head and a small body, and never a lent buffer
    /// (ForeignBuffer's are at least `ForeignBuffer.minimumSize`, and their memory is an app's object).
    public static let keptCapacities = 256...4096

    private let buffers = Mutex<[ByteBuffer]>([])

    public init() {
        buffers.withLock { $0.reserveCapacity(Self.maximumCount) }
    }

    /// A buffer given back, the last given first (its memory is the likeliest to be in the cache), or nil.
    public func take() -> ByteBuffer? {
        buffers.withLock { $0.popLast() }
    }

    /// Keeps `buffer` for a later response when it is of a kept size and the pool is not full.
    /// Call only with a buffer of the standard allocator's (a response's head or framing buffer).
    public func give(_ buffer: ByteBuffer) {
        guard Self.keptCapacities.contains(buffer.storageCapacity) else { return }
        buffers.withLock { buffers in
            if buffers.count < Self.maximumCount { buffers.append(buffer) }
        }
    }

    /// How many buffers are kept (for tests).
    public var count: Int { buffers.withLock { $0.count } }
}
