/// The storages ForeignBuffer's allocator handed out, by address: open addressing with linear probing,
/// a multiplicative hash and backward-shift deletion. A Dictionary's seeded SipHash and its
/// find-then-remove cost about 1k instructions a streamed chunk (wrap, then give back); this costs a
/// few dozen.
struct LentTable {
    struct Lent: Equatable {
        /// The owner's token of lent memory; 0 for a block of the allocator's own (malloc'd).
        let owner: UInt
        let length: Int
        /// Buffers made by `wrap` over this storage still alive (the same memory may be wrapped twice).
        var buffers: Int
    }

    /// 0 marks a free slot: no storage is at address 0.
    private var keys: [UInt]
    private var entries: [Lent]
    private(set) var count = 0

    init(capacity: Int = 64) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "a power of two")
        keys = Array(repeating: 0, count: capacity)
        entries = Array(repeating: Lent(owner: 0, length: 0, buffers: 0), count: capacity)
    }

    /// Claims the storage at `address` for `owner`'s memory of `length` bytes (owner 0: a block of the
    /// allocator's own): a new entry, or one more buffer over the same lent memory. False when the address
    /// is held by anything else: a storage's start is all that `deallocate` is told, so two live storages
    /// must never share one.
    mutating func claim(_ address: UInt, owner: UInt, length: Int) -> Bool {
        precondition(address != 0)
        if (count + 1) * 2 > keys.count { rehash(capacity: keys.count * 2) }
        let (index, found) = slot(of: address)
        if found {
            guard owner != 0, entries[index].owner == owner, entries[index].length == length else { return false }
            entries[index].buffers += 1
        } else {
            keys[index] = address
            entries[index] = Lent(owner: owner, length: length, buffers: 1)
            count += 1
        }
        return true
    }

    /// One buffer fewer over the storage at `address`: its entry as it now is (removed when no buffer is
    /// left), or nil when nothing holds that address.
    mutating func remove(_ address: UInt) -> Lent? {
        let (index, found) = slot(of: address)
        guard found else { return nil }
        entries[index].buffers -= 1
        let entry = entries[index]
        if entry.buffers == 0 { vacate(index) }
        return entry
    }

    func lookUp(_ address: UInt) -> Lent? {
        let (index, found) = slot(of: address)
        return found ? entries[index] : nil
    }

    private var mask: Int { keys.count - 1 }

    private func home(_ address: UInt) -> Int {
        // Fibonacci hashing: the product's high bits mix all of the address's bits (storages are
        // 16-byte aligned, their low bits say nothing).
        Int(truncatingIfNeeded: (address &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The slot holding `address`, or the free slot where it would go.
    private func slot(of address: UInt) -> (index: Int, found: Bool) {
        var index = home(address)
        while true {
            let key = keys[index]
            if key == address { return (index, true) }
            if key == 0 { return (index, false) }
            index = (index + 1) & mask
        }
    }

    /// Frees a slot and moves back the entries after it that probing would no longer reach.
    private mutating func vacate(_ index: Int) {
        var hole = index
        var next = (index + 1) & mask
        while keys[next] != 0 {
            // An entry may fill the hole unless its home lies cyclically in (hole, next].
            let distanceFromHome = (next - home(keys[next])) & mask
            if distanceFromHome >= (next - hole) & mask {
                keys[hole] = keys[next]
                entries[hole] = entries[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = 0
        count -= 1
    }

    private mutating func rehash(capacity: Int) {
        let old = (keys, entries)
        keys = Array(repeating: 0, count: capacity)
        entries = Array(repeating: Lent(owner: 0, length: 0, buffers: 0), count: capacity)
        for (key, entry) in zip(old.0, old.1) where key != 0 {
            let (index, _) = slot(of: key)
            keys[index] = key
            entries[index] = entry
        }
    }
}
