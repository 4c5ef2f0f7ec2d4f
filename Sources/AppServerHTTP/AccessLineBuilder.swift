/// The bytes of one access line as the formatter makes it: each piece copied into a stack buffer with
/// one bounds check, and the line added to the batch by one append. Appending each piece to the batch's
/// array cost ~80 instructions a call in the array's checks and ~16 calls a line (callgrind, WSGI hello
/// with the default format: 1,312 instructions a request).
///
/// Its methods are named as Array's, so that the formatter reads as it would appending to an array.
struct AccessLineBuilder: ~Copyable {
    private let staging: UnsafeMutableRawBufferPointer
    private var count = 0
    /// What did not fit in `staging` (a very long target or User-Agent), and everything after it.
    private var overflow: [UInt8] = []

    /// A line of up to this many bytes stays on the stack.
    static let stagingBytes = 1024

    /// Builds a line in a stack buffer and appends it to `line`.
    static func build(into line: inout [UInt8], _ body: (inout AccessLineBuilder) -> Void) {
        withUnsafeTemporaryAllocation(byteCount: stagingBytes, alignment: 1) { staging in
            var builder = AccessLineBuilder(staging: staging)
            body(&builder)
            builder.finish(into: &line)
        }
    }

    private init(staging: UnsafeMutableRawBufferPointer) {
        self.staging = staging
    }

    @inline(__always)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        guard overflow.isEmpty, bytes.count <= staging.count - count else {
            overflow.append(contentsOf: bytes)
            return
        }
        if let source = bytes.baseAddress { (staging.baseAddress! + count).copyMemory(from: source, byteCount: bytes.count) }
        count += bytes.count
    }

    mutating func append(contentsOf bytes: Slice<UnsafeRawBufferPointer>) {
        append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes))
    }

    mutating func append(contentsOf bytes: [UInt8]) {
        bytes.withUnsafeBytes { append(contentsOf: $0) }
    }

    mutating func append(contentsOf text: String.UTF8View) {
        if text.withContiguousStorageIfAvailable({ append(contentsOf: UnsafeRawBufferPointer($0)) }) == nil {
            for byte in text { append(byte) }
        }
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        guard overflow.isEmpty, count < staging.count else {
            overflow.append(byte)
            return
        }
        staging[count] = byte
        count += 1
    }

    mutating func append(repeating byte: UInt8, count repeats: Int) {
        for _ in 0..<max(0, repeats) { append(byte) }
    }

    /// `value` in decimal, written in place.
    mutating func appendDecimal(_ value: Int) {
        if value < 0 { append(UInt8(ascii: "-")) }
        let magnitude = abs(value)
        guard overflow.isEmpty, staging.count - count >= 20 else {
            withUnsafeTemporaryAllocation(byteCount: 20, alignment: 1) { digits in
                overflow.append(contentsOf: UnsafeRawBufferPointer(rebasing: digits[..<writeDecimal(magnitude, into: digits)]))
            }
            return
        }
        count += writeDecimal(magnitude, into: UnsafeMutableRawBufferPointer(rebasing: staging[count...]))
    }

    private consuming func finish(into line: inout [UInt8]) {
        line.append(contentsOf: UnsafeRawBufferPointer(rebasing: staging[..<count]))
        if !overflow.isEmpty { line.append(contentsOf: overflow) }
    }
}
