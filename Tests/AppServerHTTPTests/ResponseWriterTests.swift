import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

private func request(_ method: String = "GET", version: HTTPVersion = .http1_1, keepAlive: Bool = true) -> RequestInfo {
    let head = try! RequestHead(parsing: "\(method) / HTTP/1.\(version.minor)\r\nHost: x\r\n\r\n")
    return RequestInfo(head: head, keepAlive: keepAlive,
                hasBody: false, contentLength: nil, remoteAddress: nil, localAddress: nil)
}

private func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

private extension ResponseWriter {
    mutating func begin(_ status: String) throws { var s = status; try s.withUTF8 { try begin(status: UnsafeRawBufferPointer($0)) } }
    mutating func add(_ name: String, _ value: String) throws {
        var n = name, v = value
        try n.withUTF8 { nb in try v.withUTF8 { vb in try addHeader(name: UnsafeRawBufferPointer(nb), value: UnsafeRawBufferPointer(vb)) } }
    }
    mutating func body(_ chunk: String, into buffer: inout ByteBuffer) {
        var c = chunk
        c.withUTF8 { _ = appendBody(UnsafeRawBufferPointer($0), to: &buffer) }
    }
}

@Suite struct ResponseWriterTests {
    let allocator = ByteBufferAllocator()

    @Test func knownLengthGetsContentLength() throws {
        var writer = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try writer.begin("200 OK")
        try writer.add("Content-Type", "text/plain")
        var head = writer.finishHead(knownLength: 5)
        writer.body("hello", into: &head)
        writer.finishBody(into: &head)
        let out = text(head)
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: appserver\r\nDate: "))
        #expect(out.hasSuffix(" GMT\r\n\r\nhello"))
        #expect(writer.framing == .contentLength(5) && !writer.closeConnection)
    }

    @Test func unknownLengthIsChunkedOnHTTP11AndCloseDelimitedOnHTTP10() throws {
        var writer = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try writer.begin("200 OK")
        var out = writer.finishHead(knownLength: nil)
        writer.body("abc", into: &out)
        writer.finishBody(into: &out)
        #expect(text(out).contains("Transfer-Encoding: chunked\r\n"))
        #expect(text(out).hasSuffix("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))

        var old = ResponseWriter(request: request(version: .http1_0), allocator: allocator, drain: false)
        try old.begin("200 OK")
        var out10 = old.finishHead(knownLength: nil)
        old.body("abc", into: &out10)
        old.finishBody(into: &out10)
        #expect(text(out10).hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(text(out10).contains("Connection: close\r\n"))
        #expect(old.framing == .closeDelimited && old.closeConnection)
    }

    @Test func bodyBeyondContentLengthIsCutAndShortBodyCloses() throws {
        var writer = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try writer.begin("200 OK")
        try writer.add("Content-Length", "4")
        var out = writer.finishHead(knownLength: nil)
        writer.body("abcdef", into: &out)
        #expect(text(out).hasSuffix("\r\n\r\nabcd"))
        #expect(writer.bodyBytesSent == 4 && !writer.closeConnection)

        var short = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try short.begin("200 OK")
        try short.add("content-length", "10")
        var out2 = short.finishHead(knownLength: nil)
        short.body("abc", into: &out2)
        short.finishBody(into: &out2)
        #expect(short.closeConnection, "a body shorter than its Content-Length must close the connection")
    }

    @Test func aFileBodyIsFramedByItsOrTheAppsContentLength() throws {
        // The file's size when the app gave no length, on HTTP/1.1 and 1.0 alike: never chunked.
        for version in [HTTPVersion.http1_1, .http1_0] {
            var writer = ResponseWriter(request: request(version: version), allocator: allocator, drain: false)
            try writer.begin("200 OK")
            let (head, length) = writer.finishFileResponse(available: 100)
            #expect(length == 100 && text(head).contains("Content-Length: 100\r\n") && !text(head).contains("chunked"))
            #expect(writer.framing == .contentLength(100) && !writer.closeConnection)
        }
        // The app's shorter length cuts the file; a longer one sends it all, then closes.
        var cut = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try cut.begin("200 OK")
        try cut.add("Content-Length", "40")
        let (cutHead, cutLength) = cut.finishFileResponse(available: 100)
        #expect(cutLength == 40 && text(cutHead).contains("Content-Length: 40\r\n") && !cut.closeConnection)
        var long = ResponseWriter(request: request(), allocator: allocator, drain: false)
        try long.begin("200 OK")
        try long.add("Content-Length", "200")
        #expect(long.finishFileResponse(available: 100).length == 100 && long.closeConnection)
        // HEAD: the file's length in the head, none of its bytes.
        var head = ResponseWriter(request: request("HEAD"), allocator: allocator, drain: false)
        try head.begin("200 OK")
        let (headOnly, none) = head.finishFileResponse(available: 100)
        #expect(none == 0 && text(headOnly).contains("Content-Length: 100\r\n") && text(headOnly).hasSuffix("\r\n\r\n"))
    }

    @Test func headAnd204And304HaveNoBody() throws {
        var head = ResponseWriter(request: request("HEAD"), allocator: allocator, drain: false)
        try head.begin("200 OK")
        var out = head.finishHead(knownLength: 13)
        head.body("Hello, World!", into: &out)
        #expect(text(out).contains("Content-Length: 13\r\n") && text(out).hasSuffix("\r\n\r\n"))
        for status in ["204 No Content", "304 Not Modified"] {
            var writer = ResponseWriter(request: request(), allocator: allocator, drain: false)
            try writer.begin(status)
            var out = writer.finishHead(knownLength: nil)
            writer.body("ignored", into: &out)
            #expect(writer.framing == .noBody && !text(out).contains("ignored") && !text(out).contains("chunked"))
        }
    }

    @Test func serverOwnsConnectionHeadersAndDrainCloses() throws {
        var writer = ResponseWriter(request: request(), allocator: allocator, drain: true)
        try writer.begin("200 OK")
        try writer.add("Connection", "keep-alive")
        try writer.add("Transfer-Encoding", "chunked")
        try writer.add("Server", "custom")
        let out = text(writer.finishHead(knownLength: 0))
        #expect(!out.contains("keep-alive") && out.contains("Server: custom\r\n") && !out.contains("Server: appserver"))
        #expect(out.contains("Connection: close\r\n"))
    }

    @Test func rejectsInjectionAndBadStatus() throws {
        var writer = ResponseWriter(request: request(), allocator: allocator, drain: false)
        #expect(throws: ResponseHeadError.self) { try writer.begin("OK") }
        #expect(throws: ResponseHeadError.self) { try writer.begin("20x OK") }
        try writer.begin("200 OK")
        #expect(throws: ResponseHeadError.self) { try writer.add("X-A", "a\r\nSet-Cookie: x") }
        #expect(throws: ResponseHeadError.self) { try writer.add("Bad Name", "v") }
        #expect(throws: ResponseHeadError.self) { try writer.add("Content-Length", "abc") }
    }
}

/// Written responses' buffers reused for later heads (ResponseBufferPool): the storage is reused only
/// when nothing else holds it, so the bytes of a buffer still being written never change.
@Suite struct ResponseBufferPoolTests {
    let allocator = ByteBufferAllocator()

    /// Where a buffer's bytes live.
    private func address(_ buffer: ByteBuffer) -> UnsafeRawPointer {
        buffer.withVeryUnsafeBytes { UnsafeRawPointer($0.baseAddress!) }
    }

    private func response(_ writer: inout ResponseWriter, _ body: String) throws -> ByteBuffer {
        try writer.begin("200 OK")
        try writer.add("Content-Type", "text/plain")
        var out = writer.finishHead(knownLength: Int64(body.utf8.count))
        writer.body(body, into: &out)
        writer.finishBody(into: &out)
        return out
    }

    @Test func aWrittenBufferThatNoOneHoldsIsTheNextHeadsStorage() throws {
        let pool = ResponseBufferPool()
        var first = ResponseWriter(request: request(), allocator: allocator, drain: false)
        var written = try response(&first, "first")
        let storage = address(written)
        pool.give(written)
        written = ByteBuffer()   // the write let it go: the pool's copy is the only one
        var second = ResponseWriter(request: request(), recycling: try #require(pool.take()), drain: false)
        let out = try response(&second, "second")
        #expect(address(out) == storage)
        #expect(text(out).hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"))
        #expect(text(out).hasSuffix("\r\n\r\nsecond"))
        #expect(pool.take() == nil)
    }

    @Test func aBufferStillHeldElsewhereIsNeitherOverwrittenNorReused() throws {
        let pool = ResponseBufferPool()
        var first = ResponseWriter(request: request(), allocator: allocator, drain: false)
        let inFlight = try response(&first, "first")   // NIO still writing it
        let before = text(inFlight)
        pool.give(inFlight)
        var second = ResponseWriter(request: request(), recycling: try #require(pool.take()), drain: false)
        let out = try response(&second, "second")
        #expect(text(inFlight) == before)
        #expect(address(out) != address(inFlight))
        #expect(text(out).hasSuffix("\r\n\r\nsecond"))
    }

    @Test func keepsOnlyBuffersOfAHeadsSizeAndAtMostItsCount() {
        let pool = ResponseBufferPool()
        pool.give(allocator.buffer(capacity: 64))                       // too small to hold a head
        pool.give(allocator.buffer(capacity: ForeignBuffer.minimumSize)) // a lent chunk's size
        #expect(pool.count == 0)
        for _ in 0..<(ResponseBufferPool.maximumCount + 5) { pool.give(allocator.buffer(capacity: 512)) }
        #expect(pool.count == ResponseBufferPool.maximumCount)
        #expect(ResponseBufferPool.keptCapacities.upperBound < ForeignBuffer.minimumSize)
    }
}
