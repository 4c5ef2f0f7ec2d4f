import AppServerConfig
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

@Suite struct AccessLogFormatterTests {
    func record(status: Int = 200, bytes: Int64 = 13, extraHeader: String = "", requestIDHeader: String? = nil) throws -> AccessLogRecord {
        let head = try RequestHead(parsing: "POST /path?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8 \"quoted\"\r\n"
            + "Authorization: Basic dXNlcjpwYXNz\r\nX-Trace: t-1\r\n\(extraHeader)\r\n")   // user:pass
        let info = RequestInfo(head: head,
                               keepAlive: true, hasBody: false, contentLength: nil,
                               remoteAddress: try SocketAddress(ipAddress: "10.1.2.3", port: 5555), localAddress: nil,
                               requestIDHeader: requestIDHeader.map { Array($0.utf8) })
        info.started = Monotonic(nanoseconds: 1_000_000_000)
        return AccessLogRecord(request: info, status: status, responseBytes: bytes,
                               responseHeaders: [("Content-Type", "text/plain")], finished: Monotonic(nanoseconds: 1_250_000_000))
    }

    @Test func defaultFormatMatchesGunicorn() throws {
        let line = AccessLogFormatter(format: #"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#).format(try record())
        #expect(line.hasPrefix(#"10.1.2.3 - user ["#))
        #expect(line.hasSuffix(#"] "POST /path?q=1 HTTP/1.1" 200 13 "-" "curl/8 "quoted"""#))
    }

    @Test func everyAtom() throws {
        let formatter = AccessLogFormatter(format: "%(m)s|%(U)s|%(q)s|%(H)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({x-trace}i)s|%({content-type}o)s|%(zz)s|100%%")
        #expect(formatter.needsResponseHeaders)
        #expect(formatter.format(try record()) == "POST|/path|q=1|HTTP/1.1|13|0|250|250000|0.250000|t-1|text/plain|-|100%")
        #expect(AccessLogFormatter(format: "%(b)s").format(try record(bytes: 0)) == "-")
        #expect(AccessLogFormatter(format: "50%% %(s)s 100%%").format(try record()) == "50% 200 100%")
    }

    /// A line is made in a stack buffer of `AccessLineBuilder.stagingBytes`: what does not fit goes on
    /// after it, in order, whichever piece crosses the edge (a literal, a header value, a number).
    @Test func linesLongerThanTheStackBufferKeepEveryByteInOrder() throws {
        let staging = AccessLineBuilder.stagingBytes
        for agentLength in Array(staging - 40...staging + 2) + [3 * staging] {
            let agent = String((0..<agentLength).map { Character(UnicodeScalar(UInt8(ascii: "a") + UInt8($0 % 26))) })
            let format = #"%(h)s "%({x-agent}i)s" %(s)s %(b)s %(m)s tail"#
            let line = AccessLogFormatter(format: format).format(try record(status: 503, bytes: 1_234_567, extraHeader: "X-Agent: \(agent)\r\n"))
            #expect(line == #"10.1.2.3 ""# + agent + #"" 503 1234567 POST tail"#, "user agent of \(agentLength) bytes")
        }
        var batch = Array("before\n".utf8)
        let long = try record(extraHeader: "X-Agent: \(String(repeating: "z", count: 2 * staging))\r\n")
        AccessLogFormatter(format: "%({x-agent}i)s %(s)s").append(long, to: &batch)
        #expect(batch == Array(("before\n" + String(repeating: "z", count: 2 * staging) + " 200").utf8), "appended after what the batch held")
    }

    @Test func addressesTimesAndFractionsAreWrittenAsGunicornWritesThem() throws {
        let head = try RequestHead(parsing: "GET /a%20b?x=%41 HTTP/1.0\r\nHost: x\r\n\r\n")
        func line(_ format: String, remote: SocketAddress?, micros: Int64 = 120, wall: Int? = nil) -> String {
            let info = RequestInfo(head: head, keepAlive: false, hasBody: false, contentLength: nil, remoteAddress: remote, localAddress: nil)
            info.started = Monotonic(nanoseconds: 5_000_000_000)
            var record = AccessLogRecord(request: info, status: 404, responseBytes: 0, responseHeaders: [],
                                         finished: Monotonic(nanoseconds: 5_000_000_000 + micros * 1_000))
            if let wall { record.startedWallClock = timespec(tv_sec: wall, tv_nsec: 0) }
            return AccessLogFormatter(format: format).format(record)
        }
        #expect(line("%(h)s|%(r)s|%(U)s|%(q)s|%(H)s|%(s)s|%(b)s|%(B)s|%(L)s|%(u)s|%(f)s", remote: try SocketAddress(ipAddress: "2001:db8::7", port: 1))
                == "2001:db8::7|GET /a%20b?x=%41 HTTP/1.0|/a%20b|x=%41|HTTP/1.0|404|-|0|0.000120|-|-")
        #expect(line("%(h)s %(L)s", remote: try SocketAddress(unixDomainSocketPath: "/tmp/x.sock"), micros: 1_500_000) == "- 1.500000")
        #expect(line("%(h)s %(T)s %(M)s %(D)s", remote: nil, micros: 2_345_678) == "- 2 2345 2345678")
        // %(t)s is made once a second: two seconds apart, two texts; the same second, the same text.
        let first = line("%(t)s", remote: nil, wall: 1_800_000_000), again = line("%(t)s", remote: nil, wall: 1_800_000_000)
        let next = line("%(t)s", remote: nil, wall: 1_800_000_001)
        #expect(first == again && first != next)
        #expect(first.range(of: #"^\[\d{2}/\w{3}/2027:\d{2}:\d{2}:00 [+-]\d{4}\]$"#, options: .regularExpression) != nil, "\(first)")
        #expect(next.contains(":01 "))
    }

    @Test func jsonHasTheAtomsAsKeysAndNumbersAsNumbers() throws {
        let line = AccessLogFormatter(format: "json", requestIDHeader: "X-Request-ID")
            .format(try record(extraHeader: "X-Request-ID: abc-123\r\n", requestIDHeader: "x-request-id"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["h"] as? String == "10.1.2.3")
        #expect(object["u"] as? String == "user")
        #expect(object["r"] as? String == "POST /path?q=1 HTTP/1.1")
        #expect(object["a"] as? String == "curl/8 \"quoted\"")
        #expect(object["s"] as? Int == 200 && object["B"] as? Int == 13 && object["b"] as? Int == 13 && object["D"] as? Int == 250000)
        #expect(object["L"] as? Double == 0.25)
        #expect(object["request_id"] as? String == "abc-123")
        #expect((object["time"] as? String)?.hasSuffix("Z") == true)
        let empty = AccessLogFormatter(format: "json").format(try record(bytes: 0))
        let emptyObject = try #require(try JSONSerialization.jsonObject(with: Data(empty.utf8)) as? [String: Any])
        #expect(emptyObject["b"] is NSNull && emptyObject["request_id"] is NSNull)
    }

    @Test func requestIDsArePassedThroughOrMade() throws {
        let carried = try record(extraHeader: "X-Request-ID: from-nginx-1\r\n", requestIDHeader: "x-request-id").request
        #expect(carried.requestID == "from-nginx-1" && !carried.requestIDMade)
        let made = try record(requestIDHeader: "x-request-id").request
        let other = try record(requestIDHeader: "x-request-id").request
        #expect(made.requestIDMade && made.requestID?.count == 32 && made.requestID != other.requestID)
        let tooLong = try record(extraHeader: "X-Request-ID: \(String(repeating: "a", count: 201))\r\n", requestIDHeader: "x-request-id").request
        #expect(tooLong.requestIDMade && tooLong.requestID?.count == 32)
        #expect(try record().request.requestID == nil)
        // The access log's header atom shows a made id too.
        let formatter = AccessLogFormatter(format: "%({x-request-id}i)s", requestIDHeader: "X-Request-ID")
        #expect(formatter.format(AccessLogRecord(request: made, status: 200, responseBytes: 0, responseHeaders: [], finished: .now())) == made.requestID)
    }

    @Test func theStartTimeIsTheWallClockLessTheRequestTime() throws {
        let head = try RequestHead(parsing: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let info = RequestInfo(head: head, keepAlive: true, hasBody: false, contentLength: nil, remoteAddress: nil, localAddress: nil)
        let finished = Monotonic.now()
        info.started = Monotonic(nanoseconds: finished.nanoseconds - 90 * 1_000_000_000)   // a 90-second request
        var before = timespec()
        clock_gettime(CLOCK_REALTIME, &before)
        let record = AccessLogRecord(request: info, status: 200, responseBytes: 0, responseHeaders: [], finished: finished)
        var after = timespec()
        clock_gettime(CLOCK_REALTIME, &after)
        let started = record.startedWallClock
        #expect(started.tv_nsec >= 0 && started.tv_nsec < 1_000_000_000)
        #expect(started.tv_sec >= before.tv_sec - 90 - 1 && started.tv_sec <= after.tv_sec - 90)
    }
}

@Suite struct AccessLogWriterTests {
    func writer(_ path: String) throws -> AccessLogWriter {
        AccessLogWriter(format: "%(m)s %(U)s %(s)s", requestIDHeader: "", file: try LogFile(path: path))
    }

    static func record(_ path: String) throws -> AccessLogRecord {
        let info = RequestInfo(head: try RequestHead(parsing: "GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n"), keepAlive: true, hasBody: false,
                               contentLength: nil, remoteAddress: nil, localAddress: nil)
        return AccessLogRecord(request: info, status: 200, responseBytes: 1, responseHeaders: [], finished: .now())
    }

    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("access-\(UUID().uuidString).log").path
    }

    @Test func linesWaitForTheFlushAndGoOutInOrderWhole() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try writer(path)
        log.add(try Self.record("/a"))
        log.add(line: Array("made elsewhere".utf8))
        log.add(try Self.record("/b"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "")
        log.flush()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "GET /a 200\nmade elsewhere\nGET /b 200\n")
        log.flush()
        log.flushUnlessBusy()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "GET /a 200\nmade elsewhere\nGET /b 200\n")
    }

    @Test func aFullBatchIsWrittenAtOnce() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try writer(path)
        let line = "GET /\(String(repeating: "x", count: 95)) 200\n"   // 106 bytes with its newline
        var added = 0
        while added * line.utf8.count < AccessLogWriter.batchBytes - line.utf8.count {
            log.add(try Self.record("/" + String(repeating: "x", count: 95)))
            added += 1
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "")
        log.add(try Self.record("/" + String(repeating: "x", count: 95)))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == String(repeating: line, count: added + 1))
    }

    @Test func linesAddedFromManyThreadsAreAllWrittenWhole() async throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = try writer(path)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for thread in 0..<4 {
                group.addTask {
                    for n in 0..<2000 {
                        log.add(try Self.record("/\(thread)-\(n)"))
                        if n % 97 == 0 { log.flush() }
                    }
                }
            }
            try await group.waitForAll()
        }
        log.flush()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(Set(lines) == Set((0..<4).flatMap { thread in (0..<2000).map { "GET /\(thread)-\($0) 200" } }))
        #expect(lines.count == 8000)
    }
}
