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
/// it: the owner's token is queued and `takeReleased()` returns it, on whatever thread may drop the
/// owner (for Python, one holding the GIL). Any other allocation through it is plain malloc.
///
/// NIO rounds a storage's capacity up to a power of two, so the storage handed out *ends* where the
/// lent memory ends (it starts before it) and the buffer is the slice of the lent bytes: appending
/// to it cannot grow into memory past them, it copies (a slice that ends at its storage's end is
/// reallocated or rebased, and `reallocate` copies lent memory out). Writing *into* its bytes
/// (`setBytes`, `discardReadBytes`, `clear()`) would change the owner's memory: the buffers are
/// for writing to a socket, which only reads them.
public enum ForeignBuffer {
    /// Below this a chunk is cheaper to copy than to send as a buffer of its own (another pending
    /// write, an iovec, the registry's lock twice, a reference held until the write completes): 16 KiB
    /// when lending is on. It is off (every chunk is copied) until a use-after-free is found: with it,
    /// tests/refleak's WSGI pair (`--threads 4`, 20-70 KB chunks) crashed the debug interpreter on a
    /// negative reference count in about one run of three; with it off, in none of 24.
    public static let minimumSize = Int.max

    /// A buffer whose readable bytes are `memory` itself. `owner` comes back from `takeReleased()`
    /// once per call of `wrap`, after the last buffer using it is gone; until then `memory` must stay.
    public static func wrap(_ memory: UnsafeRawBufferPointer, owner: UInt) -> ByteBuffer {
        precondition(memory.count > 0, "an empty buffer allocates nothing to wrap")
        pthread_setspecific(memoryToHandOut, UnsafeMutableRawPointer(mutating: memory.baseAddress! + memory.count))
        var buffer = allocator.buffer(capacity: memory.count)
        let storage = buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        let offset = buffer.capacity - memory.count
        registry.withLock { registry in
            registry.live.add(storage, owner: owner, length: memory.count)
            registry.lentCount += 1
        }
        buffer.moveWriterIndex(to: buffer.capacity)
        return buffer.getSlice(at: offset, length: memory.count)!
    }

    /// True when some wrapped memory was given back since the last `takeReleased()` (a cheap check).
    public static var hasReleased: Bool { releasedFlag.load(ordering: .relaxed) }

    /// The owners of memory no buffer uses anymore, one for each `wrap` of it.
    public static func takeReleased() -> [UInt] {
        guard hasReleased else { return [] }
        return registry.withLock { registry in
            releasedFlag.store(false, ordering: .relaxed)
            defer { registry.released = [] }
            return registry.released
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

    /// Gives a storage back if it was lent: its owner is queued. Returns the lent length (the last
    /// bytes of the storage), or nil for memory of the allocator's own (malloc'd).
    fileprivate static func giveBack(_ memory: UnsafeMutableRawPointer) -> Int? {
        registry.withLock { registry in
            guard let lent = registry.live.remove(UInt(bitPattern: memory)) else { return nil }
            registry.released.append(lent.owner)
            registry.lentCount -= 1
            releasedFlag.store(true, ordering: .relaxed)
            return lent.length
        }
    }

    private static let allocator = ByteBufferAllocator(
        allocate: { size in
            if let end = pthread_getspecific(memoryToHandOut) {
                pthread_setspecific(memoryToHandOut, nil)
                return end - Int(size)
            }
            return malloc(size)
        },
        reallocate: { memory, oldSize, newSize in
            // A write growing a buffer whose slice starts at its storage's start (a power-of-two length):
            // lent memory is copied out (the lent bytes, where they were), not resized.
            guard let memory, let length = ForeignBuffer.giveBack(memory) else { return realloc(memory, newSize) }
            let copy = malloc(newSize)!
            let offset = Int(oldSize) - length
            (copy + offset).copyMemory(from: memory + offset, byteCount: length)
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
