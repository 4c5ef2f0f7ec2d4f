import NIOCore
import Testing
@testable import AppServerHTTP

@Suite struct AddressTextTests {
    func text(_ address: SocketAddress) -> String {
        var storage = [UInt8](repeating: 0xEE, count: 48)
        let length = storage.withUnsafeMutableBytes { address.writeIPText(into: $0) }
        return String(decoding: storage[..<length], as: UTF8.self)
    }

    @Test(arguments: ["0.0.0.0", "255.255.255.255", "10.0.100.1", "127.0.0.1", "192.168.9.99", "::1", "2001:db8::1",
                      "::ffff:192.0.2.5", "fe80::1:2:3:4"])
    func ipTextIsWhatInetNtopWrites(ip: String) throws {
        let address = try SocketAddress(ipAddress: ip, port: 8000)
        #expect(text(address) == address.ipAddress)
    }

    @Test func decimals() {
        for value in Array(0...1_100) + [8000, 9999, 10_000, 65535, 1_000_000_007, Int.max] {
            var storage = [UInt8](repeating: 0, count: 20)
            let length = storage.withUnsafeMutableBytes { writeDecimal(value, into: $0) }
            #expect(String(decoding: storage[..<length], as: UTF8.self) == String(value))
        }
    }
}
