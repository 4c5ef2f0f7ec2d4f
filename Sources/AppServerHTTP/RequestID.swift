import Synchronization

/// The request id (`request_id_header`, X-Request-ID by default): the one a front end or client sent,
/// when it is a plausible id, or one made here. It is in the access log, in error-log entries about
/// the request, and in the environ or scope as that header, so that the app's logs and the server's
/// name the same request the same way.
public enum RequestID {
    /// Longest id taken from a request; a longer value is replaced by one made here.
    static let maxLength = 200

    /// The id a request carries in `headerName` (lower case), if it is 1 to 200 visible ASCII characters.
    static func carried(in headers: RequestHeaders, headerName: String) -> String? {
        guard let value = headers.first(name: headerName), !value.isEmpty, value.utf8.count <= maxLength,
              value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        return value
    }

    /// A new id: this process's random 64-bit prefix and a counter, 32 hex digits, unique without a
    /// random draw per request.
    static func make() -> String {
        let serial = counter.add(1, ordering: .relaxed).newValue
        return prefix + hex(UInt64(bitPattern: Int64(serial)))
    }

    // Made on first use, after fork: each worker has its own.
    nonisolated(unsafe) private static let prefix = hex(UInt64.random(in: 0...UInt64.max))
    private static let counter = Atomic<Int>(0)

    private static func hex(_ value: UInt64) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes = [UInt8](repeating: 0, count: 16)
        var rest = value
        for index in stride(from: 15, through: 0, by: -1) {
            bytes[index] = digits[Int(rest & 15)]
            rest >>= 4
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
