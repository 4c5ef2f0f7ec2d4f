/// Checks of header bytes eight at a time (SWAR: one UInt64 holds eight bytes, and carry-free
/// arithmetic tests all of them at once). Each is exact or a sufficient test whose callers fall back
/// to a byte-by-byte check (`isTokenByte`), so a word's answer never lets a wrong byte through.

private let ones: UInt64 = 0x0101_0101_0101_0101
private let highs: UInt64 = 0x8080_8080_8080_8080

/// Whether any of the eight bytes of `word` is below 0x20 or is 0x7F (a tab, allowed in a value, is
/// one too: the caller looks at such a word byte by byte). Exact, no false negatives: the
/// "has a byte less than n" and "has a zero byte" tricks (each true only when such a byte exists).
@inline(__always) func mayHoldControlByte(_ word: UInt64) -> Bool {
    controlByteMarks(word) != 0
}

/// A mark (the byte's high bit) on the first byte of `word`, in memory order, that is below 0x20 or
/// is 0x7F, and maybe on bytes after it (a borrow carries upward only), none when there is no such
/// byte: the lowest mark is exact, so `trailingZeroBitCount >> 3` is that byte's position.
@inline(__always) func controlByteMarks(_ word: UInt64) -> UInt64 {
    let bytes = UInt64(littleEndian: word)
    let below20 = (bytes &- ones &* 0x20) & ~bytes & highs
    let deletes = bytes ^ (ones &* 0x7F)
    return below20 | (deletes &- ones) & ~deletes & highs
}

/// Whether all eight bytes of `word` are letters, digits or '-', the bytes of nearly every header
/// name (all tchars; a false answer only sends the caller to `isTokenByte`). Exact: with every byte
/// ASCII and at least 0x20, setting 0x20 folds upper- onto lower-case letters and maps only digits
/// onto digits and only '-' onto '-'; a byte in [lo, hi] is one where x + (0x80 - lo) has its high
/// bit and x + (0x7F - hi) has not, with no carry between bytes below 0x80.
@inline(__always) func isWordOfNameBytes(_ word: UInt64) -> Bool {
    guard word & highs == 0, (word &- ones &* 0x20) & ~word & highs == 0 else { return false }
    let folded = word | (ones &* 0x20)
    @inline(__always) func within(_ lo: UInt64, _ hi: UInt64) -> UInt64 {
        (folded &+ ones &* (0x80 - lo)) & ~(folded &+ ones &* (0x7F - hi)) & highs
    }
    return within(0x61, 0x7A) | within(0x30, 0x39) | within(0x2D, 0x2D) == highs
}

/// The position (0 to 7, in memory order) of the first byte of `word` that is `byte`, or nil. The
/// "has a zero byte" trick on `word ^ byte`: a borrow can mark a byte above a zero one, never below,
/// so the lowest mark is exact.
@inline(__always) func firstByte(_ byte: UInt8, in word: UInt64) -> Int? {
    let zeroed = UInt64(littleEndian: word) ^ (ones &* UInt64(byte))
    let marks = (zeroed &- ones) & ~zeroed & highs
    return marks == 0 ? nil : marks.trailingZeroBitCount >> 3
}

/// `word`'s first `count` bytes (in memory order), the others replaced by `fill`; the bytes come back
/// in little-endian order, which the byte-class checks do not mind.
@inline(__always) func bytesBefore(_ count: Int, of word: UInt64, filledWith fill: UInt8) -> UInt64 {
    let kept: UInt64 = count == 0 ? 0 : ~0 >> UInt64(64 - count * 8)
    return UInt64(littleEndian: word) & kept | ones &* UInt64(fill) & ~kept
}

/// Calls `check` with the offset of each eight bytes of `bytes` (at least eight), the last eight
/// overlapping the ones before when the count is not a multiple of eight; stops at the first false.
@inline(__always) private func allWords(_ bytes: UnsafeRawBufferPointer, _ check: (UInt64, Int) -> Bool) -> Bool {
    let base = bytes.baseAddress!, last = bytes.count - 8
    var offset = 0
    while true {
        let at = min(offset, last)
        guard check(base.loadUnaligned(fromByteOffset: at, as: UInt64.self), at) else { return false }
        if at == last { return true }
        offset += 8
    }
}

/// Whether `bytes` is a token (RFC 9110 tchar bytes, at least one): a word at a time when all are
/// letters, digits and '-', else (and for fewer than eight bytes) byte by byte.
@inline(__always) func isToken(_ bytes: UnsafeRawBufferPointer) -> Bool {
    if bytes.count >= 8 && allWords(bytes, { word, _ in isWordOfNameBytes(word) }) { return true }
    return !bytes.isEmpty && bytes.allSatisfy(isTokenByte)
}

/// Whether `bytes` holds a CR, an LF or a NUL (what may not be in a response header's value): a word
/// at a time, byte by byte within a word that may hold a control byte (and for fewer than eight).
@inline(__always) func containsLineBreakOrNUL(_ bytes: UnsafeRawBufferPointer) -> Bool {
    @inline(__always) func isBreakOrNUL(_ c: UInt8) -> Bool { c == 13 || c == 10 || c == 0 }
    guard bytes.count >= 8 else { return bytes.contains(where: isBreakOrNUL) }
    return !allWords(bytes) { word, at in
        !mayHoldControlByte(word) || !bytes[at..<(at + 8)].contains(where: isBreakOrNUL)
    }
}

/// ASCII case-insensitive equality of a token (checked tchar bytes) with `lower`, a lower-case name
/// of letters and '-', eight bytes at a time: setting 0x20 on a tchar gives a letter or '-' only
/// for that letter in either case or for '-' itself, so the fold is exact for such names.
@inline(__always) func tokenEqualsLowercased(_ token: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
    let count = lower.utf8CodeUnitCount
    guard token.count == count else { return false }
    guard count >= 8 else { return equalsLowercased(token, lower) }
    let base = token.baseAddress!, name = UnsafeRawPointer(lower.utf8Start)
    let fold = ones &* 0x20
    var i = 0
    while i + 8 < count {
        guard base.loadUnaligned(fromByteOffset: i, as: UInt64.self) | fold == name.loadUnaligned(fromByteOffset: i, as: UInt64.self) else { return false }
        i += 8
    }
    // The last eight bytes, overlapping the word before when the count is not a multiple of eight.
    return base.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) | fold == name.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
}

/// Whether the `count` bytes at `a` and at `b` are the same: eight at a time (the last eight overlapping
/// the ones before), four at a time under eight. Inlined where it is called (a header name's cache
/// lookup): memcmp was a call through the PLT, ~20 instructions for a name of two dozen bytes.
@inlinable @inline(__always)
public func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
    if count >= 8 {
        var offset = 0
        while offset + 8 < count {
            guard a.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == b.loadUnaligned(fromByteOffset: offset, as: UInt64.self) else { return false }
            offset += 8
        }
        return a.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
    }
    if count >= 4 {
        return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
            && a.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self) == b.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)
    }
    var index = 0
    while index < count {
        guard a.load(fromByteOffset: index, as: UInt8.self) == b.load(fromByteOffset: index, as: UInt8.self) else { return false }
        index += 1
    }
    return true
}
