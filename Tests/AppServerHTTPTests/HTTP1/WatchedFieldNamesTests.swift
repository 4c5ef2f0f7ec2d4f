import NIOCore
import Testing
@testable import AppServerHTTP

@Suite struct WatchedFieldNamesTests {
    private static let proxyNames = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-protocol", "x-forwarded-ssl", "x-request-id"]
    private static let watched = WatchedFieldNames(proxyNames.map { Array($0.utf8) })

    /// Names a browser or a proxy sends, none of them watched.
    private static let usual = """
        host user-agent accept accept-language accept-encoding cookie referer cache-control pragma dnt upgrade-insecure-requests
        sec-fetch-dest sec-fetch-mode sec-fetch-site sec-fetch-user authorization connection content-type content-length origin
        if-none-match if-modified-since sec-ch-ua sec-ch-ua-mobile sec-ch-ua-platform x-real-ip x-requested-with x-csrftoken priority
        te range forwarded via traceparent tracestate baggage x-amzn-trace-id x-forwarded-host x-forwarded-port sentry-trace
        keep-alive transfer-encoding expect upgrade
        """.split(whereSeparator: \.isWhitespace).map(String.init)

    /// Names whose values the parser checks itself (the generated heads' values would be refused).
    private static let framing: Set = ["host", "content-length", "transfer-encoding", "expect", "connection", "upgrade"]

    private static func mayContain(_ set: WatchedFieldNames, _ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return set.mayContain(length: bytes.count, first: bytes[0], last: bytes[bytes.count - 1])
    }

    @Test func aNameInAnyCaseIsInItsSet() {
        var generator = SplitMix64(seed: 7)
        for name in Self.proxyNames + ["X-Scheme", "Front-End-Https", "A", "x-" + String(repeating: "z", count: 80)] {
            let set = WatchedFieldNames([Array(name.utf8)])
            for _ in 0..<20 {
                let spelled = String(name.map { generator.next() % 2 == 0 ? Character($0.uppercased()) : Character($0.lowercased()) })
                #expect(Self.mayContain(set, spelled), "\(spelled)")
            }
        }
        #expect(Self.mayContain(.all, "anything"))
        #expect(!Self.mayContain(WatchedFieldNames([]), "x-request-id"))
    }

    /// The set's use is to pass over most fields: of the usual names, few share a bit with the proxy's.
    @Test func mostUsualNamesAreNotTaken() {
        let taken = Self.usual.filter { Self.mayContain(Self.watched, $0) }
        #expect(taken.count <= 2, "\(taken)")
    }

    /// The parser's note of the fields: every field with a watched name is visited, in order, wherever it
    /// is (past the 63rd field too), and most others are not.
    @Test func theParserNotesEveryFieldWithAWatchedName() throws {
        var limits = HTTP1ParserLimits()
        limits.watchedNames = Self.watched
        var generator = SplitMix64(seed: 0xF1E1D)
        var visitedOthers = 0, others = 0
        for _ in 0..<300 {
            let count = Int(generator.next() % 90)
            var lines: [(String, String)] = []
            for index in 0..<count {
                let pool = generator.next() % 4 == 0 ? Self.proxyNames : Self.usual.filter { !Self.framing.contains($0) }
                var name = pool[Int(generator.next() % UInt64(pool.count))]
                if generator.next() % 2 == 0 { name = name.uppercased() }
                lines.append((name, "v\(index)"))
            }
            let text = "GET / HTTP/1.1\r\nHost: h\r\n" + lines.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
            let head = try RequestHead(parsing: text, limits: limits)
            var all: [String] = [], visited: [String] = []
            var index = 0
            head.headers.forEach { name, value in
                if Self.proxyNames.contains(String(decoding: name, as: UTF8.self).lowercased()) { all.append("\(index) " + String(decoding: value, as: UTF8.self)) }
                index += 1
            }
            head.headers.forEachWatched { index, name, value in
                if Self.proxyNames.contains(String(decoding: name, as: UTF8.self).lowercased()) {
                    visited.append("\(index) " + String(decoding: value, as: UTF8.self))
                    #expect(head.headers.withValue(ofField: index) { Array($0) } == Array(value))
                } else {
                    visitedOthers += 1
                }
            }
            #expect(visited == all, "\(text)")
            others += lines.count + 1 - all.count
        }
        #expect(visitedOthers < others / 5, "\(visitedOthers) of \(others) other fields visited")
    }

    /// A parser told of no names notes every field (as a head made without the parser, uwsgi's, is).
    @Test func aParserToldNothingNotesEveryField() throws {
        let head = try RequestHead(parsing: "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nX-Request-ID: abc\r\n\r\n")
        var names: [String] = []
        head.headers.forEachWatched { _, name, _ in names.append(String(decoding: name, as: UTF8.self)) }
        #expect(names == ["Host", "A", "X-Request-ID"])
        #expect(RequestID.carried(in: head.headers, lowercasedName: Array("x-request-id".utf8)) == "abc")
    }
}
