#if canImport(Glibc)
import Glibc
#endif
import NIOCore

extension SocketAddress {
    /// Writes the IP address as text (`203.0.113.7`, `::1`) into `buffer` (at least 46 bytes) and returns
    /// its length; 0 for a unix socket. IPv4 is formatted here: NIO's `ipAddress` goes through inet_ntop,
    /// whose sprintf cost more than the rest of the environ's address keys together.
    public func writeIPText(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        switch self {
        case .v4(let address):
            var written = 0
            withUnsafeBytes(of: address.address.sin_addr) { octets in
                for (index, octet) in octets.enumerated() {
                    if index > 0 {
                        buffer[written] = UInt8(ascii: ".")
                        written += 1
                    }
                    written += writeDecimal(Int(octet), into: UnsafeMutableRawBufferPointer(rebasing: buffer[written...]))
                }
            }
            return written
        case .v6(let address):
            var bytes = address.address.sin6_addr
            let base = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
            guard inet_ntop(AF_INET6, &bytes, base, socklen_t(buffer.count)) != nil else { return 0 }
            return strlen(base)
        case .unixDomainSocket:
            return 0
        }
    }
}

/// Writes a non-negative number in decimal into `buffer` (20 bytes hold any Int); returns its length.
public func writeDecimal(_ value: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
    // Most numbers written are short (an address's octets, a status, a small body's length, a version):
    // no loop for those.
    let zero = UInt8(ascii: "0")
    if value < 10 {
        buffer[0] = zero + UInt8(truncatingIfNeeded: value)
        return 1
    }
    if value < 100 {
        buffer[0] = zero + UInt8(truncatingIfNeeded: value / 10)
        buffer[1] = zero + UInt8(truncatingIfNeeded: value % 10)
        return 2
    }
    if value < 1000 {
        buffer[0] = zero + UInt8(truncatingIfNeeded: value / 100)
        buffer[1] = zero + UInt8(truncatingIfNeeded: value / 10 % 10)
        buffer[2] = zero + UInt8(truncatingIfNeeded: value % 10)
        return 3
    }
    var digits = 1
    var rest = value / 10
    while rest > 0 {
        digits += 1
        rest /= 10
    }
    var remaining = value
    for index in stride(from: digits - 1, through: 0, by: -1) {
        buffer[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
        remaining /= 10
    }
    return digits
}
