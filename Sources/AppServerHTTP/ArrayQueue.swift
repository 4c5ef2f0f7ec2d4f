/// A first-in first-out queue: an array and the index of its first live element. NIO's `CircularBuffer`
/// allocates its storage when made, through a generic path that looks up the storage's metadata at run
/// time (~650 instructions); an empty ArrayQueue allocates nothing until its first element, which matters
/// for queues most users never fill (a request's body chunks, a connection's pipelined request parts).
struct ArrayQueue<Element>: Sequence {
    private var items: [Element?] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    /// Slots held, taken ones included (for tests).
    var slots: Int { items.count }
    var first: Element? { isEmpty ? nil : items[head] }

    mutating func append(_ element: Element) { items.append(element) }

    mutating func replaceFirst(with element: Element) { items[head] = element }

    /// Drops the first element's reference at once: a queue fed as fast as it is drained never
    /// empties, and what was taken must not stay held. The dead front is cut once it is half the array.
    mutating func removeFirst() {
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 16 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
    }

    func makeIterator() -> Iterator { Iterator(items: items, index: head) }

    struct Iterator: IteratorProtocol {
        let items: [Element?]
        var index: Int

        mutating func next() -> Element? {
            guard index < items.count else { return nil }
            defer { index += 1 }
            return items[index]
        }
    }
}
