import Testing
@testable import AppServerHTTP

@Suite struct LentTableTests {
    /// Random adds and removes, against a Dictionary: addresses from a small pool (so that the same
    /// storage is lent twice and slots collide), a table that starts small and grows.
    @Test func agreesWithADictionary() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20 {
            var table = LentTable(capacity: 1)
            var model: [UInt: LentTable.Lent] = [:]
            let pool = (1...UInt(40 + round * 20)).map { $0 * 16 }
            for _ in 0..<5_000 {
                let address = pool.randomElement(using: &generator)!
                if Bool.random(using: &generator) {
                    do { let claimed = table.claim(address, owner: address + 1, length: Int(address)); #expect(claimed) }
                    model[address, default: LentTable.Lent(owner: address + 1, length: Int(address), buffers: 0)].buffers += 1
                } else {
                    var expected = model[address]
                    expected?.buffers -= 1
                    model[address] = expected?.buffers == 0 ? nil : expected
                    #expect(table.remove(address) == expected)
                }
                #expect(table.count == model.count)
            }
            for address in pool { #expect(table.lookUp(address) == model[address]) }
        }
    }

    /// Entries that share a home slot stay reachable when one before them goes (backward shift).
    @Test func removingFromAClusterKeepsTheRestReachable() {
        var table = LentTable(capacity: 1024)
        let addresses = (1...300).map { UInt($0) << 20 }   // many share a home in a small table's probe runs
        for address in addresses { let claimed = table.claim(address, owner: address, length: 1); #expect(claimed) }
        for address in addresses where address % (3 << 20) == 0 { #expect(table.remove(address)?.buffers == 0) }
        for address in addresses {
            #expect((table.lookUp(address) != nil) == (address % (3 << 20) != 0))
        }
        #expect(table.remove(12_345) == nil)
    }

    /// An address holds one thing: the same lent memory again (one more buffer), never another owner's
    /// memory, other memory of the same owner, or a block of the allocator's own.
    @Test func anAddressIsClaimedByOneMemoryOnly() {
        var table = LentTable(capacity: 8)
        do { let claimed = table.claim(4096, owner: 7, length: 20_000); #expect(claimed) }
        do { let claimed = table.claim(4096, owner: 7, length: 20_000); #expect(claimed) }
        do { let claimed = table.claim(4096, owner: 8, length: 70_000); #expect(!claimed) }
        do { let claimed = table.claim(4096, owner: 7, length: 70_000); #expect(!claimed) }
        do { let claimed = table.claim(4096, owner: 0, length: 0); #expect(!claimed) }
        #expect(table.lookUp(4096) == LentTable.Lent(owner: 7, length: 20_000, buffers: 2))
        do { let claimed = table.claim(8192, owner: 0, length: 0); #expect(claimed) }
        do { let claimed = table.claim(8192, owner: 0, length: 0); #expect(!claimed) }
        do { let claimed = table.claim(8192, owner: 7, length: 20_000); #expect(!claimed) }
        let removed = table.remove(8192)
        #expect(removed?.owner == 0 && table.lookUp(8192) == nil)
        do { let claimed = table.claim(8192, owner: 9, length: 1); #expect(claimed) }
    }
}
