import Foundation
import Testing
import AppServerSystemd

@Suite struct JournalSocketTests {
    @Test func fieldsAreInJournaldsNativeFormat() {
        let datagram = JournalSocket.datagram([("MESSAGE", "boom\nTraceback"), ("PRIORITY", "3")])
        let expected = Array("MESSAGE\n".utf8) + [14, 0, 0, 0, 0, 0, 0, 0] + Array("boom\nTraceback\nPRIORITY=3\n".utf8)
        #expect(datagram == expected)
    }

    /// A journald that does not read: its socket queue fills (net.unix.max_dgram_qlen datagrams) and
    /// each entry after is refused at once, where sd_journal_sendv would wait for journald.
    @Test func aFullQueueRefusesAnEntryInsteadOfWaiting() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).sock").path
        let journald = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        #expect(journald >= 0)
        defer { close(journald); unlink(path) }
        let address = try #require(UnixSocketAddress(path: path))
        #expect(address.withSockaddr { bind(journald, $0, $1) } == 0)
        let journal = try #require(JournalSocket(path: path))
        let taken = (0..<200).map { journal.send([("MESSAGE", "entry \($0)")]) }
        #expect(taken.first == true && taken.contains(false), "some taken, then refused without waiting")
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = recv(journald, &buffer, buffer.count, 0)
        #expect(Array(buffer[0..<max(0, count)]) == Array("MESSAGE=entry 0\n".utf8))
        #expect(journal.send([("MESSAGE", "after a read")]), "taken again once journald reads")
        #expect(JournalSocket(path: path + ".absent") == nil)
    }
}
