#if canImport(Glibc)
import Glibc
#endif
@_spi(CustomByteBufferAllocator) import NIOCore
import Synchronization

/// ByteBuffers over memory the server does not own (a Python bytes object's), so that a large
/// response chunk reaches the socket without being copied first: for a 1 MiB streamed body the
/// copies were 6-7% of the worker's time (bench/RESULTS.md, issue 16).
///
/// NIO has no public way to put foreign memory in a ByteBuffer, but a buffer keeps the allocator it
/// was made with and frees its memory through it. Buffers made here use an allocator whose
/// `allocate` hands out the memory being wrapped (passed in a thread-local, since the allocator's
/// functions take no context) and whose `deallocate` gives it back to its owner instead of freeing
/// it: the owner's token is queued and `drainReleased` hands it out, on whatever thread may drop the
/// owner (for Python, one holding the GIL). Any other allocation through it is plain malloc.
///
/// NIO rounds a storage's capacity up to a power of two, so the storage handed out *ends* where the
/// lent memory ends (it starts before it) and the buffer is the slice of the lent bytes: appending
/// to it cannot grow into memory past them, it copies (a slice that ends at its storage's end is
/// reallocated or rebased, and `reallocate` copies lent memory out). Writing *into* its bytes
/// (`setBytes`, `discardReadBytes`, `clear()`) would change the owner's memory: the buffers are
/// for writing to a socket, which only reads them.
///
/// `deallocate` is told only a storage's start, which for lent memory is an address in memory that
/// is not the server's: two lent memories of different sizes can give the same start (a 20,000-byte
/// chunk whose end is 98,304 bytes before a 70,000-byte one's), and so can a block the allocator
/// mallocs. Every storage it hands out is therefore claimed in the registry first, and a lent memory
/// whose start is taken gets the next power of two as its capacity (a start further back).
public enum ForeignBuffer {
    /// Below this a chunk is cheaper to copy than to send as a buffer of its own (another pending
    /// write, an iovec, the registry's lock twice, a reference held until the write completes).
    public static let minimumSize = 16 * 1024

    /// The largest storage a lent memory gets (NIO's capacities are 32-bit; larger memory is copied).
    static let largestCapacity = 1 << 31
    /// How many larger capacities a lent memory tries when its start is taken, before being copied.
    static let capacityTries = 8

    /// A buffer whose readable bytes are `memory` itself. `owner` comes back from `drainReleased`
    /// once per call of `wrap`, after the last buffer using it is gone; until then `memory` must stay.
    /// (In the rare case where no storage start is free, the buffer is a copy and `owner` comes back at once.)
    public static func wrap(_ memory: UnsafeRawBufferPointer, owner: UInt) -> ByteBuffer {
        precondition(memory.count > 0, "an empty buffer allocates nothing to wrap")
        precondition(owner != 0, "0 names the allocator's own blocks")
        let end = memory.baseAddress! + memory.count
        let smallest = 1 << (Int.bitWidth - (memory.count - 1).leadingZeroBitCount)   // NIO's power of two
        let capacity: Int? = registry.withLock { registry in
            var capacity = smallest
            for _ in 0..<capacityTries where capacity <= largestCapacity && UInt(capacity) < UInt(bitPattern: end) {
                if registry.live.claim(UInt(bitPattern: end - capacity), owner: owner, length: memory.count) {
                    registry.lentCount += 1
                    return capacity
                }
                capacity <<= 1
            }
            return nil
        }
        guard let capacity else {
            let copy = ByteBuffer(bytes: memory)
            registry.withLock { registry in   // copied: the owner may go at once
                registry.released.append(owner)
                releasedFlag.store(true, ordering: .relaxed)
            }
            return copy
        }
        pthread_setspecific(memoryToHandOut, UnsafeMutableRawPointer(mutating: end))
        var buffer = allocator.buffer(capacity: capacity)
        precondition(buffer.capacity == capacity, "NIO rounded a capacity differently")
        buffer.moveWriterIndex(to: capacity)
        return buffer.getSlice(at: capacity - memory.count, length: memory.count)!
    }

    /// True when some wrapped memory was given back since the last `drainReleased` (a cheap check).
    public static var hasReleased: Bool { releasedFlag.load(ordering: .relaxed) }

    /// Calls `body` with each owner of memory no buffer uses anymore, one for each `wrap` of it, and
    /// forgets them. `body` runs under the registry's lock (the queue keeps its storage: handing out an
    /// array instead cost an allocation a streamed chunk): it must not make or drop a ForeignBuffer.
    public static func drainReleased(_ body: (UInt) -> Void) {
        guard hasReleased else { return }
        registry.withLock { registry in
            releasedFlag.store(false, ordering: .relaxed)
            for owner in registry.released { body(owner) }
            registry.released.removeAll(keepingCapacity: true)
        }
    }

    /// Memory lent by `wrap` and not yet given back (the tests check that it all comes back).
    public static var lentCount: Int { registry.withLock { $0.lentCount } }

    private struct Registry {
        var live = LentTable()
        var released: [UInt] = []
        var lentCount = 0
    }

    private static let registry = Mutex(Registry())
    private static let releasedFlag = Atomic<Bool>(false)

    /// Lets go of the storage at `memory`: lent memory's owner is queued and its length returned;
    /// a block of the allocator's own is unclaimed (nil: the caller frees it).
    fileprivate static func giveBack(_ memory: UnsafeMutableRawPointer) -> Int? {
        registry.withLock { registry in
            guard let entry = registry.live.remove(UInt(bitPattern: memory)) else {
                preconditionFailure("ForeignBuffer's allocator freed a storage it did not hand out")
            }
            guard entry.owner != 0 else { return nil }
            registry.released.append(entry.owner)
            registry.lentCount -= 1
            releasedFlag.store(true, ordering: .relaxed)
            return entry.length
        }
    }

    /// The length of the lent memory whose storage starts at `memory`; nil for a block of the allocator's own.
    fileprivate static func lentLength(_ memory: UnsafeMutableRawPointer) -> Int? {
        registry.withLock { registry in
            registry.live.lookUp(UInt(bitPattern: memory)).flatMap { $0.owner == 0 ? nil : $0.length }
        }
    }

    /// A block of the allocator's own, at an address no lent storage starts at (a malloc'd block may
    /// start where a lent storage's range begins, in memory not the server's: such a block is held
    /// aside until a free one comes back).
    fileprivate static func ownBlock(_ size: Int) -> UnsafeMutableRawPointer {
        var taken: [UnsafeMutableRawPointer] = []
        defer { for block in taken { free(block) } }
        while true {
            let block = malloc(max(size, 1))!
            if registry.withLock({ $0.live.claim(UInt(bitPattern: block), owner: 0, length: 0) }) { return block }
            taken.append(block)
        }
    }

    private static let allocator = ByteBufferAllocator(
        allocate: { size in
            // The storage of `wrap` (claimed there), or one of the allocator's own (a copy of a lent buffer).
            if let end = pthread_getspecific(memoryToHandOut) {
                pthread_setspecific(memoryToHandOut, nil)
                return end - Int(size)
            }
            return ForeignBuffer.ownBlock(Int(size))
        },
        reallocate: { memory, oldSize, newSize in
            // A write growing a buffer whose slice starts at its storage's start: lent memory is copied
            // out (the lent bytes, where they were) before it is given back; a block of the allocator's
            // own moves to a new one.
            let copy = ForeignBuffer.ownBlock(Int(newSize))
            guard let memory else { return copy }
            if let length = ForeignBuffer.lentLength(memory) {
                let offset = Int(oldSize) - length
                (copy + offset).copyMemory(from: memory + offset, byteCount: length)
            } else {
                copy.copyMemory(from: memory, byteCount: Int(min(oldSize, newSize)))
            }
            if ForeignBuffer.giveBack(memory) == nil { free(memory) }
            return copy
        },
        deallocate: { memory in
            if ForeignBuffer.giveBack(memory) == nil { free(memory) }
        },
        copy: { destination, source, count in
            destination.copyMemory(from: source, byteCount: count)
        })
}

/// The memory `ForeignBuffer.wrap` is about to hand to its allocator, on the wrapping thread.
private let memoryToHandOut: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create")
    return key
}()
