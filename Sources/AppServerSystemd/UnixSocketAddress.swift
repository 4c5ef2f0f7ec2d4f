#if canImport(Glibc)
import Glibc
#endif

/// A unix socket's address, for `bind` and `connect`: a file's path, or an abstract name (a leading
/// NUL, no file, gone with the socket). One place fills `sockaddr_un`, so each caller gets the same
/// length check: a path as long as `sun_path` would lose its terminating NUL and name another file.
public struct UnixSocketAddress: Sendable {
    /// The longest path or abstract name, in bytes (107 on Linux).
    public static let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    private var storage = sockaddr_un()
    private let length: socklen_t

    /// Nil when the path is longer than `capacity` bytes or empty.
    public init?(path: String) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.capacity else { return nil }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: bytes) }
        length = socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    /// An abstract address: its length, not a NUL, ends the name, so none is stored after it.
    /// Nil when the name is longer than `capacity` bytes.
    public init?(abstract name: String) {
        let bytes = Array(name.utf8)
        guard bytes.count <= Self.capacity else { return nil }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { $0[1...].copyBytes(from: bytes) }
        length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
    }

    /// Calls `body` with the address as `bind` and `connect` take it.
    public func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafePointer(to: storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}
