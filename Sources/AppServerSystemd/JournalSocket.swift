#if canImport(Glibc)
import Glibc
#endif

/// journald's native protocol on a socket that never waits. sd_journal_sendv blocks while journald's
/// socket queue is full, and that queue holds only `net.unix.max_dgram_qlen` (10) datagrams of every
/// sender on the machine: a journald that stalls for a moment (a flood, a slow disk) stalled the
/// arbiter (no reaping, no watchdog pings) and every worker that logged (its event loop with it). An
/// entry the queue cannot take now is refused at once here, and the caller writes it to the journal
/// stream (stderr) instead, which buffers some 200 KB, as Gunicorn's stderr does.
public final class JournalSocket: Sendable {
    public static let defaultPath = "/run/systemd/journal/socket"
    private let descriptor: CInt

    /// Nil when journald's socket is not there (or cannot be reached).
    public init?(path: String = JournalSocket.defaultPath) {
        let fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return nil }
        guard let address = UnixSocketAddress(path: path), address.withSockaddr({ connect(fd, $0, $1) }) == 0 else {
            close(fd)
            return nil
        }
        // Room for a long traceback in one datagram (the kernel caps it at wmem_max).
        var size: CInt = 8 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// One entry of `KEY=value` fields; false if journald cannot take it now (its queue is full, or
    /// the entry is larger than a datagram may be).
    public func send(_ fields: [(String, String)]) -> Bool {
        let datagram = Self.datagram(fields)
        let sent = datagram.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL) | CInt(MSG_DONTWAIT)) }
        return sent == datagram.count
    }

    /// The native protocol: `KEY=value\n`, or for a value holding a newline `KEY\n`, its length as
    /// 64-bit little-endian, the value, `\n`.
    public static func datagram(_ fields: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (key, value) in fields {
            out += key.utf8
            let bytes = Array(value.utf8)
            if bytes.contains(UInt8(ascii: "\n")) {
                out.append(UInt8(ascii: "\n"))
                withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out += $0 }
            } else {
                out.append(UInt8(ascii: "="))
            }
            out += bytes
            out.append(UInt8(ascii: "\n"))
        }
        return out
    }
}
