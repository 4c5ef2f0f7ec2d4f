import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

@Suite struct AccessLogFormatterTests {
    func record(status: Int = 200, bytes: Int64 = 13) throws -> AccessLogRecord {
        let head = try RequestHead(parsing: "POST /path?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n"
            + "Authorization: Basic dXNlcjpwYXNz\r\nX-Trace: t-1\r\n\r\n")   // user:pass
        let info = RequestInfo(head: head,
                               keepAlive: true, hasBody: false, contentLength: nil,
                               remoteAddress: try SocketAddress(ipAddress: "10.1.2.3", port: 5555), localAddress: nil)
        info.started = Monotonic(nanoseconds: 1_000_000_000)
        return AccessLogRecord(request: info, status: status, responseBytes: bytes,
                               responseHeaders: [("Content-Type", "text/plain")], finished: Monotonic(nanoseconds: 1_250_000_000))
    }

    @Test func defaultFormatMatchesGunicorn() throws {
        let line = AccessLogFormatter(format: #"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#).format(try record())
        #expect(line.hasPrefix(#"10.1.2.3 - user ["#))
        #expect(line.hasSuffix(#"] "POST /path?q=1 HTTP/1.1" 200 13 "-" "curl/8""#))
    }

    @Test func everyAtom() throws {
        let formatter = AccessLogFormatter(format: "%(m)s|%(U)s|%(q)s|%(H)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({x-trace}i)s|%({content-type}o)s|%(zz)s|100%%")
        #expect(formatter.needsResponseHeaders)
        #expect(formatter.format(try record()) == "POST|/path|q=1|HTTP/1.1|13|0|250|250000|0.250000|t-1|text/plain|-|100%")
        #expect(AccessLogFormatter(format: "%(b)s").format(try record(bytes: 0)) == "-")
    }
}
