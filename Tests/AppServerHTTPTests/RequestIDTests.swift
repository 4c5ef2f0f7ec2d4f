import Testing
@testable import AppServerHTTP

/// A made request id: 32 lower-case hex digits, this worker's random prefix then the serial.
@Suite struct RequestIDTests {
    static func hex(_ value: UInt64) -> String {
        var digits = [UInt8](repeating: 0, count: 16)
        digits.withUnsafeMutableBufferPointer { RequestID.writeHex(value, to: $0.baseAddress!) }
        return String(decoding: digits, as: UTF8.self)
    }

    static func expected(_ value: UInt64) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: 16 - text.count) + text
    }

    @Test(arguments: [0, 1, 9, 10, 15, 16, 0xFF, 0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 0xA0A0_A0A0_9F9F_9F9F,
                      UInt64(UInt32.max), UInt64(UInt32.max) + 1, UInt64.max] as [UInt64])
    func sixteenDigitsMostSignificantFirst(value: UInt64) {
        #expect(Self.hex(value) == Self.expected(value))
    }

    @Test func randomValuesToo() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let value = generator.next() as UInt64
            #expect(Self.hex(value) == Self.expected(value))
        }
    }

    @Test func madeIDsShareThePrefixAndDifferInTheSerial() {
        let first = RequestID.made(RequestID.nextSerial()), second = RequestID.made(RequestID.nextSerial())
        #expect(first.count == 32 && second.count == 32)
        #expect(first.prefix(16) == second.prefix(16) && first != second)
        #expect(first.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(UInt64(second.suffix(16), radix: 16)! > UInt64(first.suffix(16), radix: 16)!)
    }
}
