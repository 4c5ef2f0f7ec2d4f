import Synchronization

/// The request id (`request_id_header`, X-Request-ID by default): the one a front end or client sent,
/// when it is a plausible id, or one made here. It is in the access log, in error-log entries about
/// the request, and in the environ or scope as that header, so that the app's logs and the server's
/// name the same request the same way.
public enum RequestID {
    /// Longest id taken from a request; a longer value is replaced by one made here.
    static let maxLength = 200

    /// The id a request carries in the header `lowercasedName`, if it is 1 to 200 visible ASCII characters.
    /// (The name is one of the parser's watched names: `EdgePolicy.watchedFieldNames`.)
    static func carried(in headers: RequestHeaders, lowercasedName: [UInt8]) -> String? {
        var found: String?
        headers.forEachWatched { _, name, value in
            guard found == nil, name.count == lowercasedName.count, RequestHeaders.equalsLowercased(name, lowercasedName), value.count > 0, value.count <= maxLength,
                  value.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return }
            found = String(decoding: value, as: UTF8.self)
        }
        return found
    }

    /// A new id's serial: with this process's random 64-bit prefix, 32 hex digits, unique without a
    /// random draw per request. Nothing is formatted until someone reads it (`withMade`, `made`).
    static func nextSerial() -> UInt64 {
        UInt64(bitPattern: Int64(counter.add(1, ordering: .relaxed).newValue))
    }

    /// Writes the 32 digits of a made id at `digits` (which has room for them).
    public static func writeMade(_ serial: UInt64, to digits: UnsafeMutablePointer<UInt8>) {
        withUnsafeBytes(of: prefixDigits) { digits.update(from: $0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: 16) }
        writeHex(serial, to: digits + 16)
    }

    /// A made id as text.
    static func made(_ serial: UInt64) -> String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            writeMade(serial, to: buffer.baseAddress!)
            return 32
        }
    }

    // Made on first use, after fork: each worker has its own.
    private static let prefixDigits: (UInt64, UInt64) = {
        var digits: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &digits) { writeHex(UInt64.random(in: 0...UInt64.max), to: $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        return digits
    }()
    private static let counter = Atomic<Int>(0)

    /// `value` as 16 lower-case hex digits, most significant first: each half's eight nibbles spread to
    /// a byte each and turned to digits eight at a time (a digit's loop was ~120 instructions a request).
    @inline(__always) static func writeHex(_ value: UInt64, to digits: UnsafeMutablePointer<UInt8>) {
        @inline(__always) func eightDigits(_ half: UInt64) -> UInt64 {
            var spread = (half | half << 16) & 0x0000_FFFF_0000_FFFF
            spread = (spread | spread << 8) & 0x00FF_00FF_00FF_00FF
            spread = (spread | spread << 4) & 0x0F0F_0F0F_0F0F_0F0F   // byte k: nibble k, the lowest first
            // 0x01 in each byte whose nibble is 10 or more: there, 'a' - 10 rather than '0'.
            let letters = ((spread &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
            return spread &+ 0x3030_3030_3030_3030 &+ letters &* 39
        }
        // Big-endian: the most significant nibble's digit (the word's top byte) goes first in memory.
        let raw = UnsafeMutableRawPointer(digits)
        raw.storeBytes(of: eightDigits(value >> 32).bigEndian, as: UInt64.self)
        raw.storeBytes(of: eightDigits(value & 0xFFFF_FFFF).bigEndian, toByteOffset: 8, as: UInt64.self)
    }
}
