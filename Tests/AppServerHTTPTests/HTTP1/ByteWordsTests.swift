import Testing
@testable import AppServerHTTP

/// The word-at-a-time checks against their byte-by-byte definitions, for every byte value in every
/// position (a borrow or carry between bytes would show as a wrong answer next to some byte).
@Suite struct ByteWordsTests {
    /// Equal runs of every length from 0 to 40, and the same with one byte changed at each position.
    @Test func bytesEqualFindsADifferenceAnywhere() {
        for count in 0...40 {
            let a = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(a.withUnsafeBytes { x in a.withUnsafeBytes { y in bytesEqual(x.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, y.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: count) } })
            for position in 0..<count {
                for flip: UInt8 in [0x01, 0x80, 0x20] {
                    var b = a
                    b[position] ^= flip
                    let equal = a.withUnsafeBytes { x in b.withUnsafeBytes { y in bytesEqual(x.baseAddress!, y.baseAddress!, count: count) } }
                    #expect(!equal, "length \(count), byte \(position)")
                }
            }
        }
    }

    private static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2D
    }

    private static func word(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    @Test func aWordOfNameBytesIsExactlyLettersDigitsAndDash() {
        for fill in Array("aZ0-".utf8) {
            for position in 0..<8 {
                for value in 0...255 {
                    var bytes = [UInt8](repeating: fill, count: 8)
                    bytes[position] = UInt8(value)
                    #expect(isWordOfNameBytes(Self.word(bytes)) == Self.isNameByte(UInt8(value)), "byte \(value) at \(position)")
                }
            }
        }
    }

    /// The first control byte's position from its lowest mark, with two bytes of every value in every
    /// pair of positions over fillers that a borrow could turn (0x20, 0x80, 0x7E, 0xFF): a mark
    /// carried up from a lower byte must never come before the first true one.
    @Test func theFirstControlBytesPositionIsExact() {
        var wrong = 0
        for fill: UInt8 in [0x41, 0x20, 0x80, 0x7E, 0xFF] {
            for first in 0..<8 {
                for second in first..<8 {
                    for a in 0...255 {
                        for b in stride(from: 0, through: 255, by: first == second ? 256 : 1) {
                            var bytes = [UInt8](repeating: fill, count: 8)
                            bytes[first] = UInt8(a)
                            bytes[second] = first == second ? UInt8(a) : UInt8(b)
                            let expected = bytes.firstIndex { $0 < 0x20 || $0 == 0x7F }
                            let marks = controlByteMarks(Self.word(bytes))
                            if (marks == 0 ? nil : marks.trailingZeroBitCount >> 3) != expected { wrong += 1 }
                        }
                    }
                }
            }
        }
        #expect(wrong == 0)
    }

    @Test func controlBytesAreFoundInEveryPosition() {
        for position in 0..<8 {
            for value in 0...255 {
                var bytes = [UInt8](repeating: 0x41, count: 8)
                bytes[position] = UInt8(value)
                #expect(mayHoldControlByte(Self.word(bytes)) == (value < 0x20 || value == 0x7F), "byte \(value) at \(position)")
            }
        }
    }

    /// Every prefix of `text` up to 19 bytes (below, at and over one and two words), with every byte
    /// value put in every position of it.
    private static func forEachVariant(of text: String, _ body: ([UInt8], _ value: UInt8, _ position: Int) -> Void) {
        for length in 1...19 {
            for position in 0..<length {
                for value in 0...255 {
                    var bytes = Array(text.utf8.prefix(length))
                    bytes[position] = UInt8(value)
                    body(bytes, UInt8(value), position)
                }
            }
        }
    }

    @Test func isTokenMatchesTheByteByByteRuleAtEveryLength() {
        Self.forEachVariant(of: "Content-Length-X-Yz") { bytes, value, position in
            let expected = bytes.allSatisfy(isTokenByte)
            bytes.withUnsafeBytes { #expect(isToken($0) == expected, "byte \(value) at \(position) of \(bytes.count)") }
        }
        #expect(!isToken(UnsafeRawBufferPointer(start: nil, count: 0)))
    }

    @Test func lineBreaksAndNULsAreFoundAtEveryLength() {
        Self.forEachVariant(of: "text/html; charset=") { bytes, value, position in
            let expected = value == 13 || value == 10 || value == 0
            bytes.withUnsafeBytes { #expect(containsLineBreakOrNUL($0) == expected, "byte \(value) at \(position) of \(bytes.count)") }
        }
        var tabbed = Array("a\tvalue with\ta tab and \u{7F}".utf8)
        tabbed.withUnsafeMutableBytes { #expect(!containsLineBreakOrNUL(UnsafeRawBufferPointer($0))) }
    }

    @Test func theFirstColonIsFoundInEveryPosition() {
        for position in 0..<8 {
            for value in 0...255 {
                // Colons after the byte under test must not hide it; bytes before it are other values.
                var bytes = Array("abcdefgh".utf8)
                bytes[position] = UInt8(value)
                for after in (position + 1)..<8 where after % 2 == 0 { bytes[after] = 0x3A }
                let expected = bytes.firstIndex(of: 0x3A)
                #expect(firstByte(0x3A, in: Self.word(bytes)) == expected, "byte \(value) at \(position)")
            }
        }
        #expect(firstByte(0x3A, in: Self.word(Array("abcdefgh".utf8))) == nil)
        #expect(firstByte(0x3A, in: Self.word(Array(";9:;:::;".utf8))) == 2, "neighbours of the colon's value")
    }

    @Test func bytesBeforeACountAreKeptAndTheRestFilled() {
        let bytes = Array("Ab-0:x\u{7F}\u{80}".utf8.prefix(8))
        for count in 0...7 {
            let kept = Array(bytes.prefix(count)) + [UInt8](repeating: 0x61, count: 8 - count)
            #expect(bytesBefore(count, of: Self.word(bytes), filledWith: 0x61) == Self.word(kept), "\(count) kept")
        }
    }

    @Test func tokenComparisonFoldsOnlyLetters() {
        let names: [StaticString] = ["connection", "keep-alive", "content-length", "transfer-encoding"]
        for name in names {
            let lower = Array(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            for position in lower.indices {
                for value in 0...255 where isTokenByte(UInt8(value)) {
                    var bytes = lower
                    bytes[position] = UInt8(value)
                    let expected = bytes.withUnsafeBytes { equalsLowercased($0, UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)) }
                    bytes.withUnsafeBytes { #expect(tokenEqualsLowercased($0, name) == expected, "\(name): byte \(value) at \(position)") }
                }
            }
            var upper = lower.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
            upper.withUnsafeMutableBytes { #expect(tokenEqualsLowercased(UnsafeRawBufferPointer($0), name)) }
            var shorter = Array(lower.dropLast())
            shorter.withUnsafeMutableBytes { #expect(!tokenEqualsLowercased(UnsafeRawBufferPointer($0), name)) }
        }
    }
}
