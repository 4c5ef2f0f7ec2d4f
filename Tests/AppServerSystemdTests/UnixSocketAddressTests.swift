import Foundation
import Testing
import AppServerSystemd

@Suite struct UnixSocketAddressTests {
    private func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString).sock").path
    }

    @Test func aPathUpToTheCapacityIsTakenAndOneByteMoreIsNot() {
        #expect(UnixSocketAddress.capacity == 107)
        #expect(UnixSocketAddress(path: "/" + String(repeating: "a", count: 106)) != nil)
        #expect(UnixSocketAddress(path: "/" + String(repeating: "a", count: 107)) == nil, "its NUL would not fit")
        #expect(UnixSocketAddress(path: "") == nil)
        #expect(UnixSocketAddress(abstract: String(repeating: "a", count: 107)) != nil)
        #expect(UnixSocketAddress(abstract: String(repeating: "a", count: 108)) == nil)
    }

    /// A path address binds the file, and a client connects to it by the same address.
    @Test func aPathAddressBindsAndConnects() throws {
        let path = temporaryPath("address")
        defer { unlink(path) }
        let address = try #require(UnixSocketAddress(path: path))
        let server = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0), client = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(server); close(client) }
        #expect(address.withSockaddr { bind(server, $0, $1) } == 0)
        #expect(listen(server, 1) == 0)
        #expect(access(path, F_OK) == 0, "the socket file is there")
        #expect(address.withSockaddr { connect(client, $0, $1) } == 0)
    }

    /// An abstract address has no file, and its name is exactly the given bytes: the kernel reports
    /// it back with its leading NUL and no trailing one, and a name one byte longer is another socket.
    @Test func anAbstractAddressIsItsNameWithoutATrailingNul() throws {
        let name = "appserver-test-\(UUID().uuidString)"
        let server = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0), client = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(server); close(client) }
        #expect(try #require(UnixSocketAddress(abstract: name)).withSockaddr { bind(server, $0, $1) } == 0)
        #expect(listen(server, 1) == 0)
        var bound = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(server, $0, &length) } }
        let reported = withUnsafeBytes(of: &bound.sun_path) { Array($0.prefix(Int(length) - MemoryLayout<sa_family_t>.size)) }
        #expect(reported == [0] + Array(name.utf8))
        #expect(try #require(UnixSocketAddress(abstract: name + "x")).withSockaddr { connect(client, $0, $1) } != 0)
        #expect(try #require(UnixSocketAddress(abstract: name)).withSockaddr { connect(client, $0, $1) } == 0)
    }
}
