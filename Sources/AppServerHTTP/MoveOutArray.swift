/// An array whose elements leave it moved, not copied. A loop over an array copies each element (a
/// retain of every reference it holds), and emptying the array afterwards releases the originals: for
/// a response's write, whose exchange, buffer and pieces are references, that was 6-8 calls of retain
/// and release a request for nothing. Here each slot is an optional that `drain` takes in place.
public struct MoveOutArray<Element> {
    private var items: [Element?] = []

    public init() {}

    public var isEmpty: Bool { items.isEmpty }

    public mutating func append(_ element: consuming Element) { items.append(element) }

    /// Moves all of `other`'s elements to the end of this one, in order, and leaves `other` empty.
    /// Into an empty array the two trade storage, so nothing is moved one by one.
    public mutating func append(takingAllOf other: inout MoveOutArray) {
        if items.isEmpty {
            swap(&items, &other.items)
        } else {
            other.drain { items.append($0) }
        }
    }

    /// Hands each element to `body` in order, moved out of the array, and leaves the array empty with
    /// its storage kept. `body` must not touch this array.
    public mutating func drain(_ body: (consuming Element) -> Void) {
        // Through the storage's pointer: `items[index].take()` copied the element out (a retain of
        // each of its references) and then released the slot's.
        items.withUnsafeMutableBufferPointer { slots in
            guard let base = slots.baseAddress else { return }
            for index in slots.indices {
                let element = (base + index).move()
                (base + index).initialize(to: nil)
                if let element { body(element) }
            }
        }
        items.removeAll(keepingCapacity: true)
    }

    /// The first element, copied.
    public var first: Element? { items.first ?? nil }
}

extension MoveOutArray: Sendable where Element: Sendable {}
