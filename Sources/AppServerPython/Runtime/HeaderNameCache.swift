import AppServerHTTP
import CPython

/// Objects a worker keeps by a name's own bytes (WSGI's `HTTP_*` keys, ASGI's lower-cased names, methods),
/// found without making a String of the name: a request with two dozen headers looked each up by a
/// String key, paying for the String and a SipHash of it every time. Open addressing over a power-of-two
/// table with a word-at-a-time hash; the cache owns one reference to each object (CachedObjects) and hands out
/// borrowed pointers valid until it is emptied, as PyObjectCache. Bounded twice: past `limit` names it is
/// emptied, and a name is looked for in at most `maxProbes` slots, so names made to collide only miss
/// the cache (and cost their own requests a lookup each). Made and used with the GIL.
struct HeaderNameCache: ~Copyable {
    private struct Slot {
        var hash: UInt32 = 0
        var start: Int32 = 0
        var length: Int32 = 0
        var object: PyObjectPointer?
    }

    private static let maxProbes = 8
    private var slots: [Slot]
    private let mask: Int
    /// The cached names' bytes, one after another (a slot's `start` and `length` point in here).
    private var names: [UInt8] = []
    private var count = 0
    private let limit: Int
    private let owner = CachedObjects()

    init(limit: Int) {
        self.limit = limit
        var capacity = 16
        while capacity < limit * 2 { capacity *= 2 }
        slots = Array(repeating: Slot(), count: capacity)
        mask = capacity - 1
    }

    /// A multiplicative hash of the name's bytes eight at a time: FNV-1a, a byte at a time, was most of
    /// a lookup's cost. Under eight bytes the name is one word, from two overlapping loads (4 to 7 bytes)
    /// or its first, middle and last bytes (1 to 3), which tells apart names of one length; the length
    /// is mixed in first.
    @inline(__always) private static func hash(_ name: UnsafeRawBufferPointer) -> UInt32 {
        let count = name.count
        guard let base = name.baseAddress, count > 0 else { return 0 }
        let multiplier: UInt64 = 0x9E37_79B9_7F4A_7C15
        var hash = UInt64(truncatingIfNeeded: count) &* multiplier
        @inline(__always) func mix(_ word: UInt64) {
            // The product's two halves folded: a low-half-only multiply would leave a name's last
            // bytes (a word's high ones) out of the index's low bits.
            let product = (hash ^ word).multipliedFullWidth(by: multiplier)
            hash = product.high ^ product.low
        }
        if count >= 8 {
            var offset = 0
            while offset + 8 < count {
                mix(base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                offset += 8
            }
            mix(base.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self))
        } else if count >= 4 {
            mix(UInt64(base.loadUnaligned(as: UInt32.self)) | UInt64(base.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)) << 32)
        } else {
            mix(UInt64(base.load(as: UInt8.self)) | UInt64(base.load(fromByteOffset: count / 2, as: UInt8.self)) << 8
                | UInt64(base.load(fromByteOffset: count - 1, as: UInt8.self)) << 16)
        }
        return UInt32(truncatingIfNeeded: hash ^ (hash >> 32))
    }

    /// The object kept for exactly these bytes, borrowed; nil when there is none.
    func find(_ name: UnsafeRawBufferPointer) -> PyObjectPointer? {
        let hash = Self.hash(name)
        var index = Int(hash) & mask
        for _ in 0..<Self.maxProbes {
            let slot = slots[index]
            guard let object = slot.object else { return nil }
            if slot.hash == hash && Int(slot.length) == name.count && matches(slot, name) { return object }
            index = (index + 1) & mask
        }
        return nil
    }

    @inline(__always) private func matches(_ slot: Slot, _ name: UnsafeRawBufferPointer) -> Bool {
        guard let base = name.baseAddress, name.count > 0 else { return true }
        return names.withUnsafeBytes { bytesEqual($0.baseAddress! + Int(slot.start), base, count: name.count) }
    }

    /// Keeps `object` for `name`; returns it borrowed. Past the probe bound it is kept (the pointer must
    /// stay valid) but not found again.
    mutating func insert(_ object: consuming PyRef, for name: UnsafeRawBufferPointer) throws(PythonError) -> PyObjectPointer {
        if count >= limit { removeAll() }
        let pointer = try owner.keep(object)
        count += 1
        let hash = Self.hash(name)
        var index = Int(hash) & mask
        for _ in 0..<Self.maxProbes {
            if slots[index].object == nil {
                slots[index] = Slot(hash: hash, start: Int32(names.count), length: Int32(name.count), object: pointer)
                names.append(contentsOf: name)
                break
            }
            index = (index + 1) & mask
        }
        return pointer
    }

    /// The common methods' interned strings, by the method's bytes (the WSGI environ's and the ASGI scope's).
    static func commonMethods() throws(PythonError) -> HeaderNameCache {
        var cache = HeaderNameCache(limit: 16)
        for method in ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] {
            let object = Python.interned(method)
            _ = try Array(method.utf8).withUnsafeBytes { raw in Result { () throws(PythonError) in try cache.insert(object.copy(), for: raw) } }.get()
        }
        return cache
    }

    mutating func removeAll() {
        for index in slots.indices { slots[index] = Slot() }
        names.removeAll(keepingCapacity: true)
        count = 0
        owner.removeAll()
    }
}
