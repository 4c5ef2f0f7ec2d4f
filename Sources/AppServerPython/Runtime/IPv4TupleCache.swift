import CPython
import NIOCore

/// Tuples made from an IPv4 address and port (ASGI's `(host, port)`, WSGI's REMOTE_ADDR and REMOTE_PORT),
/// by that address and port, direct-mapped: a key's slot comes from one multiply, and a newer address
/// takes an occupied slot. Hashing a SocketAddress for a Dictionary cost ~450 instructions, and making
/// the strings again ~1,000 a request. Owns its tuples like PyObjectCache; emptied past
/// `limit` insertions. Made and used with the GIL.
struct IPv4TupleCache: ~Copyable {
    private static let bits = 12
    private var keys = [UInt64](repeating: 0, count: 1 << bits)   // 0: empty (every key has bit 48 set)
    private var objects = [PyObjectPointer?](repeating: nil, count: 1 << bits)
    private let owner = CachedObjects()
    private var inserted = 0
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// The key of an IPv4 address and port; nil for other addresses.
    static func key(_ address: SocketAddress) -> UInt64? {
        guard case .v4(let v4) = address else { return nil }
        return 1 << 48 | UInt64(v4.address.sin_addr.s_addr) << 16 | UInt64(v4.address.sin_port)
    }

    private static func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - bits))
    }

    func find(_ key: UInt64) -> PyObjectPointer? {
        let slot = Self.slot(key)
        return keys[slot] == key ? objects[slot] : nil
    }

    mutating func insert(_ object: consuming PyRef, for key: UInt64) throws(PythonError) -> PyObjectPointer {
        if inserted >= limit { removeAll() }
        let pointer = try owner.keep(object)
        inserted += 1
        let slot = Self.slot(key)
        keys[slot] = key
        objects[slot] = pointer
        return pointer
    }

    mutating func removeAll() {
        for slot in keys.indices {
            keys[slot] = 0
            objects[slot] = nil
        }
        owner.removeAll()
        inserted = 0
    }
}
