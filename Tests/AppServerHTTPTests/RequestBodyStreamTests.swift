import NIOCore
import Synchronization
import Testing
@testable import AppServerHTTP

@Suite struct RequestBodyStreamTests {
    let allocator = ByteBufferAllocator()

    @Test func readsExactSizesAcrossChunksAndLines() throws {
        let stream = RequestBodyStream(highWater: 1 << 20, lowWater: 0, expectsContinue: false, resume: {}, sendContinue: {})
        _ = stream.append(ByteBuffer(string: "line one\nli"))
        _ = stream.append(ByteBuffer(string: "ne two\nrest"))
        stream.finish()
        #expect(String(buffer: try stream.readLine(max: nil, timeout: 1, allocator: allocator)) == "line one\n")
        #expect(String(buffer: try stream.read(max: 3, timeout: 1, allocator: allocator)) == "lin")
        #expect(String(buffer: try stream.readLine(max: 2, timeout: 1, allocator: allocator)) == "e ")
        #expect(String(buffer: try stream.readLine(max: nil, timeout: 1, allocator: allocator)) == "two\n")
        #expect(String(buffer: try stream.read(max: nil, timeout: 1, allocator: allocator)) == "rest")
        #expect(try stream.read(max: 10, timeout: 1, allocator: allocator).readableBytes == 0)
    }

    @Test func pausesAtHighWaterAndResumesBelowLowWater() throws {
        let resumed = Atomic<Int>(0)
        let stream = RequestBodyStream(highWater: 10, lowWater: 4, expectsContinue: false,
                                       resume: { resumed.add(1, ordering: .relaxed) }, sendContinue: {})
        #expect(stream.append(ByteBuffer(string: "12345")) == false)
        #expect(stream.append(ByteBuffer(string: "67890")) == true, "10 bytes buffered: stop reading the socket")
        _ = try stream.read(max: 3, timeout: 1, allocator: allocator)
        #expect(resumed.load(ordering: .relaxed) == 0, "7 left is above the low-water mark")
        _ = try stream.read(max: 4, timeout: 1, allocator: allocator)
        #expect(resumed.load(ordering: .relaxed) == 1)
    }

    @Test func failuresReachTheReader() {
        let stream = RequestBodyStream(highWater: 10, lowWater: 4, expectsContinue: false, resume: {}, sendContinue: {})
        stream.fail(.disconnected)
        #expect(throws: RequestBodyError.disconnected) { try stream.read(max: 1, timeout: 1, allocator: allocator) }
        let slow = RequestBodyStream(highWater: 10, lowWater: 4, expectsContinue: false, resume: {}, sendContinue: {})
        #expect(throws: RequestBodyError.timedOut(seconds: 1)) { try slow.read(max: 1, timeout: 1, allocator: allocator) }
    }

    @Test func asksForContinueOnFirstReadOnly() throws {
        let continues = Atomic<Int>(0)
        let stream = RequestBodyStream(highWater: 10, lowWater: 4, expectsContinue: true, resume: {},
                                       sendContinue: { continues.add(1, ordering: .relaxed) })
        _ = stream.append(ByteBuffer(string: "ab"))
        stream.finish()
        _ = try stream.read(max: 1, timeout: 1, allocator: allocator)
        _ = try stream.read(max: 1, timeout: 1, allocator: allocator)
        #expect(continues.load(ordering: .relaxed) == 1)
    }
}

/// ArrayQueue as a body's chunks (BodyChunks); a connection's pipelined parts use it the same way.
@Suite struct BodyChunksTests {
    /// Random appends, reads of the first buffer (whole or in part) and walks, against an array.
    @Test func keepsBuffersInOrderAsAnArrayWould() {
        var generator = SystemRandomNumberGenerator()
        var chunks = BodyChunks()
        var model: [String] = []
        for step in 0..<20_000 {
            switch Int.random(in: 0..<3, using: &generator) {
            case 0:
                chunks.append(ByteBuffer(string: "b\(step)"))
                model.append("b\(step)")
            case 1 where !model.isEmpty:
                var first = chunks.first!
                first.moveReaderIndex(forwardBy: 1)
                if first.readableBytes == 0 {
                    chunks.removeFirst()
                    model.removeFirst()
                } else {
                    chunks.replaceFirst(with: first)
                    model[0].removeFirst()
                }
            default:
                break
            }
            #expect(chunks.isEmpty == model.isEmpty)
            #expect(chunks.first.map { String(buffer: $0) } == model.first)
            if step % 97 == 0 { #expect(chunks.map { String(buffer: $0) } == model) }
        }
    }

    /// A body read as it arrives never empties the queue; what was read must not pile up in it.
    @Test func readBuffersDoNotPileUpWhileTheQueueNeverEmpties() {
        var chunks = BodyChunks()
        chunks.append(ByteBuffer(string: "first"))
        for step in 0..<10_000 {
            chunks.append(ByteBuffer(string: "\(step)"))
            chunks.removeFirst()
            #expect(chunks.slots <= 2 * 1 + 32)
        }
        #expect(chunks.first.map { String(buffer: $0) } == "9999")
    }
}
