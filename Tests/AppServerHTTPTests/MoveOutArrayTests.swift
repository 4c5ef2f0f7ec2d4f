import Testing
@testable import AppServerHTTP

@Suite struct MoveOutArrayTests {
    final class Item {
        let number: Int
        init(_ number: Int) { self.number = number }
    }

    /// Elements come out in order, moved: one the taker let go is freed at once, not kept by the array
    /// until it is emptied (as a loop over an array's copies would).
    @Test func drainsInOrderAndKeepsNothing() {
        final class Watched { weak var item: Item? }
        var array = MoveOutArray<Item>()
        let watched = (0..<5).map { _ in Watched() }
        for number in 0..<5 {
            let item = Item(number)
            watched[number].item = item
            array.append(item)
        }
        #expect(watched.allSatisfy { $0.item != nil })
        var seen: [Int] = []
        array.drain { item in
            seen.append(item.number)
            if item.number > 0 { #expect(watched[item.number - 1].item == nil) }
        }
        #expect(seen == [0, 1, 2, 3, 4])
        #expect(array.isEmpty)
        #expect(watched.allSatisfy { $0.item == nil })
        array.drain { _ in Issue.record("an emptied array handed out an element") }
    }

    /// Appending another array moves its elements after this one's, in order, and empties it, whether
    /// this one was empty (the storage is traded) or not.
    @Test func appendTakingAllOfKeepsOrder() {
        var first = MoveOutArray<Int>()
        var second = MoveOutArray<Int>()
        second.append(1)
        second.append(2)
        first.append(takingAllOf: &second)
        #expect(second.isEmpty)
        second.append(3)
        first.append(takingAllOf: &second)
        #expect(second.isEmpty)
        #expect(first.first == 1)
        var seen: [Int] = []
        first.drain { seen.append($0) }
        #expect(seen == [1, 2, 3])
        #expect(first.first == nil)
    }
}
