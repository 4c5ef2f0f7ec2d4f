/// The header names the server reads for itself (the X-Forwarded-* headers, the request id), as a set
/// the parser can test a field's name against for a few instructions while it reads the field: a bit
/// for the name's length (63 and longer share one), then, for a name of such a length, one of 64 bits
/// chosen by its length and its first and last letters (without case). Names that are equal without case
/// have the same bits, so a field without them is none of the names; one with them may still be another
/// name (the readers compare the name itself). The parser notes which fields passed
/// (`HTTP1Head.watchedFields`), and the readers visit only those instead of every field.
public struct WatchedFieldNames: Sendable, Equatable {
    public private(set) var lengths: UInt64
    public private(set) var marks: UInt64

    /// Every name passes: a parser told nothing notes every field.
    public static let all = WatchedFieldNames(lengths: .max, marks: .max)

    private init(lengths: UInt64, marks: UInt64) {
        self.lengths = lengths
        self.marks = marks
    }

    /// The set of these names (any case).
    public init(_ names: some Sequence<[UInt8]>) {
        lengths = 0
        marks = 0
        for name in names where !name.isEmpty {
            lengths |= Self.lengthBit(name.count)
            marks |= Self.mark(length: name.count, first: name[0], last: name[name.count - 1])
        }
    }

    @inline(__always) static func lengthBit(_ length: Int) -> UInt64 { 1 << UInt64(min(length, 63)) }

    /// A name's mark: the three, multiplied, give the product's top six bits. Of ~50 usual browser and
    /// proxy headers, seven have the length of X-Forwarded-For, -Proto, -Protocol, -Ssl or X-Request-ID
    /// and one of them passes for one (`WatchedFieldNamesTests`); such a field costs a name comparison,
    /// nothing more.
    @inline(__always) static func mark(length: Int, first: UInt8, last: UInt8) -> UInt64 {
        let key = UInt32(truncatingIfNeeded: length) | UInt32(first | 0x20) << 8 | UInt32(last | 0x20) << 16
        return 1 << UInt64((key &* 0x9E37_79B1) >> 26)
    }

    /// Whether a name of this length may be in the set (most names are passed over here).
    @inline(__always) func mayContain(length: Int) -> Bool { lengths & Self.lengthBit(length) != 0 }

    /// Whether a name of this length, first and last byte may be in the set.
    @inline(__always) func mayContain(length: Int, first: UInt8, last: UInt8) -> Bool {
        mayContain(length: length) && marks & Self.mark(length: length, first: first, last: last) != 0
    }
}
