#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Testing
@testable import AppServerHTTP

/// ForeignBuffer lends memory to ByteBuffers without copying it, and gives it back exactly once per
/// wrap, whatever is done with the buffers. The tests run one at a time: the registry is global.
@Suite(.serialized) struct ForeignBufferTests {
    /// Memory of `count` bytes counting up from `seed`, and the owner token naming it.
    private func memory(_ count: Int, seed: UInt8 = 1) -> (UnsafeMutableRawBufferPointer, UInt) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        for i in 0..<count { memory[i] = seed &+ UInt8(truncatingIfNeeded: i) }
        return (memory, UInt(bitPattern: memory.baseAddress))
    }

    private func released() -> [UInt] {
        var owners: [UInt] = []
        ForeignBuffer.drainReleased { owners.append($0) }
        return owners
    }

    @Test func theBufferIsTheMemoryAndGivesItBackWhenDropped() {
        _ = released()
        let (bytes, owner) = memory(20_000)
        defer { bytes.deallocate() }
        do {
            let buffer = ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner)
            #expect(buffer.readableBytes == 20_000)
            buffer.withUnsafeReadableBytes { #expect($0.baseAddress == UnsafeRawPointer(bytes.baseAddress)) }
            #expect(ForeignBuffer.lentCount == 1)
            #expect(!ForeignBuffer.hasReleased)
            let copy = buffer   // another reference to the same storage: no second give-back
            #expect(copy.readableBytes == buffer.readableBytes)
        }
        #expect(ForeignBuffer.hasReleased)
        #expect(released() == [owner])
        #expect(ForeignBuffer.lentCount == 0)
        #expect(released() == [])
    }

    @Test func twoWrapsOfTheSameMemoryComeBackTwice() {
        _ = released()
        let (bytes, owner) = memory(16_384)
        defer { bytes.deallocate() }
        var first: ByteBuffer? = ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner)
        var second: ByteBuffer? = ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner)
        #expect(first?.readableBytes == 16_384 && second?.readableBytes == 16_384)
        first = nil
        #expect(released() == [owner])
        #expect(ForeignBuffer.lentCount == 1)
        second = nil
        #expect(released() == [owner])
        #expect(ForeignBuffer.lentCount == 0)
    }

    /// Appending to a wrapped buffer must never reach past the lent memory (NIO rounds storage up to a
    /// power of two, and a unique buffer grows into its storage's spare room): it copies instead.
    @Test(arguments: [20_000, 65_536])
    func appendingCopiesAndLeavesTheMemoryAlone(count: Int) {
        _ = released()
        let (bytes, owner) = memory(count + 64, seed: 7)   // 64 guard bytes after the lent part
        defer { bytes.deallocate() }
        let before = Array(bytes)
        var buffer = ForeignBuffer.wrap(UnsafeRawBufferPointer(rebasing: bytes[0..<count]), owner: owner)
        buffer.writeString("appended")
        #expect(Array(bytes) == before)
        #expect(buffer.readableBytes == count + 8)
        #expect(buffer.getBytes(at: buffer.readerIndex, length: count) == Array(before[0..<count]))
        #expect(buffer.getString(at: buffer.readerIndex + count, length: 8) == "appended")
        #expect(released() == [owner])   // the copy made the lent memory free
        _ = consume buffer
        #expect(released() == [] && ForeignBuffer.lentCount == 0)
    }

    /// A storage starts a power of two before its lent memory ends, so a 20,000-byte memory and a
    /// 70,000-byte one that ends 98,304 bytes after it would share a start: the second gets a larger
    /// capacity, and each comes back to its own owner (shared, the 20,000-byte owner came back twice,
    /// the other never: the refleak test's crash).
    @Test func memoriesWhoseStoragesWouldStartTogetherComeBackApart() {
        _ = released()
        let (region, _) = memory(150_000, seed: 3)
        defer { region.deallocate() }
        let small = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(region)[0..<20_000])
        let large = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(region)[48_304..<118_304])
        #expect(small.baseAddress! + 20_000 - 32_768 == large.baseAddress! + 70_000 - 131_072)
        var first: ByteBuffer? = ForeignBuffer.wrap(small, owner: 11)
        var second: ByteBuffer? = ForeignBuffer.wrap(large, owner: 22)
        #expect(first?.readableBytesView.elementsEqual(small) == true)
        #expect(second?.readableBytesView.elementsEqual(large) == true)
        second?.withUnsafeReadableBytes { #expect($0.baseAddress == large.baseAddress) }   // lent, not copied
        #expect(ForeignBuffer.lentCount == 2)
        second = nil
        #expect(released() == [22])
        first = nil
        #expect(released() == [11])
        #expect(ForeignBuffer.lentCount == 0)
    }

    /// When every start a memory could take is held by other lent memory, the chunk is copied and its
    /// owner comes back at once; the others stay lent.
    @Test func aMemoryWithNoFreeStartIsCopied() {
        _ = released()
        let size = 16_384
        let (region, _) = memory(size << ForeignBuffer.capacityTries, seed: 5)
        defer { region.deallocate() }
        let whole = UnsafeRawBufferPointer(region)
        let end = whole.count
        // Memory k (its own capacity 16 KiB) starts where the last 16 KiB's k-th larger storage would.
        var holders: [ByteBuffer] = (0..<ForeignBuffer.capacityTries).map { k in
            let start = end - (size << k)
            return ForeignBuffer.wrap(UnsafeRawBufferPointer(rebasing: whole[start..<start + size]), owner: UInt(100 + k))
        }
        let last = UnsafeRawBufferPointer(rebasing: whole[(end - size)..<end])
        let copied = ForeignBuffer.wrap(last, owner: 99)
        #expect(copied.readableBytesView.elementsEqual(last))
        copied.withUnsafeReadableBytes { #expect($0.baseAddress != last.baseAddress) }
        #expect(released() == [99])
        #expect(ForeignBuffer.lentCount == ForeignBuffer.capacityTries)
        holders.removeAll()
        #expect(released().sorted() == (0..<ForeignBuffer.capacityTries).map { UInt(100 + $0) })
        #expect(ForeignBuffer.lentCount == 0)
    }

    @Test func otherAllocationsOfItsAllocatorAreItsOwn() {
        _ = released()
        let (bytes, owner) = memory(32_768)
        defer { bytes.deallocate() }
        let buffer = ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner)
        var tail = buffer.getSlice(at: 100, length: 50)!
        tail.writeBytes([1, 2, 3])   // a copy through the same allocator: malloc'd, freed by it
        #expect(tail.readableBytes == 53)
        _ = consume tail
        #expect(released() == [])
        _ = consume buffer
        #expect(released() == [owner])
    }

    /// A 200 response to a GET, its head finished with the body's length `known` (nil: chunked).
    private func headSent(knownLength known: Int64?) throws -> (ResponseWriter, ByteBuffer) {
        let head = try RequestHead(parsing: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let info = RequestInfo(head: head, keepAlive: true, hasBody: false, contentLength: nil, remoteAddress: nil, localAddress: nil)
        var writer = ResponseWriter(request: info, allocator: ByteBufferAllocator(), drain: false)
        var status = "200 OK"
        try status.withUTF8 { try writer.begin(status: UnsafeRawBufferPointer($0)) }
        let out = writer.finishHead(knownLength: known)
        return (writer, out)
    }

    @Test func theSocketGetsTheMemoryBetweenItsFraming() throws {
        _ = released()
        let (bytes, owner) = memory(20_000)
        defer { bytes.deallocate() }
        for known in [Int64?.none, 20_000, 15_000] {
            var (writer, out) = try headSent(knownLength: known)
            var pieces: [ByteBuffer] = []
            writer.appendBody(uncopied: ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner), after: &out, into: &pieces)
            writer.appendBody(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[0..<10]), to: &out)
            writer.finishBody(into: &out)
            var wire = ByteBuffer()
            for piece in pieces + [out] { var piece = piece; wire.writeBuffer(&piece) }
            let text = String(buffer: wire)
            let body = Array(wire.readableBytesView[wire.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8))!.upperBound...])
            switch known {
            case nil:
                #expect(text.contains("Transfer-Encoding: chunked\r\n"))
                #expect(body == Array("4e20\r\n".utf8) + Array(bytes) + Array("\r\na\r\n".utf8) + Array(bytes[0..<10])
                        + Array("\r\n0\r\n\r\n".utf8))
                #expect(pieces.count == 2)
            case 20_000:
                #expect(body == Array(bytes))   // the 10 more are past the Content-Length: cut
                #expect(!writer.closeConnection)
            default:
                #expect(body == Array(bytes[0..<15_000]))
                #expect(pieces[1].readableBytes == 15_000)
            }
        }
        #expect(released().count == 3)
    }

    /// Each piece is a write through the channel: framing that is empty (every chunk after the head
    /// under a Content-Length) is not one.
    @Test func emptyFramingIsNoPiece() throws {
        _ = released()
        let (bytes, owner) = memory(20_000)
        defer { bytes.deallocate() }
        for known in [Int64?.none, 40_000] {
            var (writer, out) = try headSent(knownLength: known)
            var pieces: [ByteBuffer] = []
            for _ in 0..<2 {
                writer.appendBody(uncopied: ForeignBuffer.wrap(UnsafeRawBufferPointer(bytes), owner: owner), after: &out, into: &pieces)
            }
            writer.finishBody(into: &out)
            #expect(pieces.allSatisfy { $0.readableBytes > 0 })
            let sizes = pieces.map(\.readableBytes)
            if known == nil {
                // head + size line, chunk, CRLF + size line, chunk; `out` keeps the CRLF and the last chunk.
                #expect(sizes.count == 4 && sizes[1] == 20_000 && sizes[3] == 20_000 && String(buffer: pieces[2]) == "\r\n4e20\r\n")
                #expect(String(buffer: out) == "\r\n0\r\n\r\n")
            } else {
                #expect(sizes.count == 3 && sizes[1] == 20_000 && sizes[2] == 20_000)
                #expect(out.readableBytes == 0)
            }
        }
        #expect(released().count == 4)
    }
}
