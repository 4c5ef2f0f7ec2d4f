import Testing
@testable import AppServerHTTP

/// Feeds `text` to a parser, whole or in pieces of `piece` bytes, and describes what came out:
/// `head METHOD TARGET 1.x`, `body TEXT` (joined), `end`, `error STATUS`.
func parse(_ text: String, piece: Int = 0, limits: HTTP1ParserLimits = HTTP1ParserLimits()) -> [String] {
    parse(Array(text.utf8), piece: piece, limits: limits)
}

func parse(_ input: [UInt8], piece: Int = 0, limits: HTTP1ParserLimits = HTTP1ParserLimits()) -> [String] {
    var parser = HTTP1Parser(limits: limits)
    var out: [String] = []
    var pending: [UInt8] = []
    var offered = 0
    var body: [UInt8] = []
    func flushBody() {
        if !body.isEmpty { out.append("body " + String(decoding: body, as: UTF8.self)); body = [] }
    }
    while true {
        let (event, consumed) = pending.withUnsafeBytes { parser.next($0) }
        switch event {
        case .needMore:
            pending.removeFirst(consumed)
            guard offered < input.count else { flushBody(); return out }
            let n = piece > 0 ? min(piece, input.count - offered) : input.count - offered
            pending += input[offered..<(offered + n)]
            offered += n
            continue
        case .head(let head):
            flushBody()
            pending.withUnsafeBytes { raw in
                out.append("head \(String(decoding: raw[head.method], as: UTF8.self)) \(String(decoding: raw[head.target], as: UTF8.self)) 1.\(head.minorVersion)"
                           + (head.keepAlive ? "" : " close") + (head.expectsContinue ? " continue" : "") + (head.upgrade ? " upgrade" : ""))
            }
        case .body(let range):
            body += pending[range]
        case .end:
            flushBody()
            out.append("end")
        case .error(let error):
            flushBody()
            out.append("error \(error.status)")
            return out
        }
        pending.removeFirst(consumed)
    }
}

@Suite struct HTTP1ParserTests {
    /// The value of the last field of a head made with `field`, as the parser cut it, or the error status.
    func lastFieldValue(_ field: [UInt8]) -> Result<[UInt8], HTTP1ParseError> {
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8) + field + Array("\r\n\r\n".utf8)
        var parser = HTTP1Parser(limits: HTTP1ParserLimits())
        let (event, _) = request.withUnsafeBytes { parser.next($0) }
        switch event {
        case .head(let head):
            let last = head.fields.last!
            return .success(Array(request[Int(last.valueStart)..<Int(last.valueEnd)]))
        case .error(let error): return .failure(error)
        default: Issue.record("a whole head gives a head or an error: \(event)"); return .success([])
        }
    }

    /// A Host's reg-name takes exactly RFC 3986's bytes (unreserved, '%', sub-delims), each of the 256
    /// tried before and after a port; a Host of anything else is a 400.
    @Test func everyByteOfAHostNameIsCheckedAgainstTheRFC() throws {
        let allowed = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=".utf8))
        for byte in UInt8(0)...UInt8(255) where byte != UInt8(ascii: ":") {
            for (before, after) in [("a", "b"), ("", ":80")] {
                // A space or tab first is the field's leading whitespace, not part of the Host.
                if before.isEmpty && (byte == 0x20 || byte == 0x09) { continue }
                let request = Array("GET / HTTP/1.1\r\nHost: \(before)".utf8) + [byte] + Array("\(after)\r\n\r\n".utf8)
                var parser = HTTP1Parser(limits: HTTP1ParserLimits())
                let (event, _) = request.withUnsafeBytes { parser.next($0) }
                switch event {
                case .head: #expect(allowed.contains(byte), "byte \(byte) was taken in a Host")
                case .error(let error):
                    // A control byte or a space may be refused as a bad field value before the Host check.
                    #expect(!allowed.contains(byte), "byte \(byte) was refused in a Host")
                    #expect(error.status == 400)
                default: Issue.record("a whole head gives a head or an error: \(event)")
                }
            }
        }
    }

    /// Values are checked eight bytes at a time: every control byte at every position of a long value
    /// is still refused, and what is allowed (tab, obs-text) is kept, with the whitespace around cut.
    @Test func everyControlByteAnywhereInAValueIsRefused() throws {
        let plain = Array("abcdefghijklmnopqrstuvwxyz0123456789-_.ABCDE".utf8)
        for position in 0..<plain.count {
            for control in Array(0x00...0x1F).filter({ $0 != 0x09 }) + [0x7F] {
                var value = plain
                value[position] = UInt8(control)
                guard case .failure(let error) = lastFieldValue(Array("X-Long: ".utf8) + value) else {
                    Issue.record("0x\(String(control, radix: 16)) at \(position) was accepted"); return
                }
                #expect(error.status == 400)
            }
        }
        for allowed: UInt8 in [0x09, 0x20, 0x7E, 0x80, 0xA9, 0xFF] {
            for position in [0, 7, 8, 15, 16, 30] {
                var value = plain
                value[position] = allowed
                let trimmed = Array(value.drop { $0 == 0x09 || $0 == 0x20 }.reversed().drop { $0 == 0x09 || $0 == 0x20 }.reversed())
                #expect(try lastFieldValue(Array("X-Long:\t ".utf8) + value + Array(" \t  ".utf8)).get() == trimmed,
                        "0x\(String(allowed, radix: 16)) at \(position)")
            }
        }
        #expect(try lastFieldValue(Array("X-Empty:    \t  ".utf8)).get() == [])
    }

    /// Names are read eight bytes at a time, the word with the colon at once: every byte value at every
    /// position of names of 1 to 19 bytes gives what the byte-by-byte rule gives (a token's field, a
    /// shorter name where the byte is a colon, else a 400).
    @Test func everyByteAnywhereInANameIsJudgedAsTheTokenRuleSays() {
        for length in 1...19 {
            for position in 0..<length {
                for byte in 0...255 {
                    var name = [UInt8](repeating: UInt8(ascii: "n"), count: length)
                    name[position] = UInt8(byte)
                    let request = Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8) + name + Array(": v\r\n\r\n".utf8)
                    var parser = HTTP1Parser(limits: HTTP1ParserLimits())
                    let (event, _) = request.withUnsafeBytes { parser.next($0) }
                    let expectedName: [UInt8]? = name.allSatisfy(isTokenByte) ? name
                        : byte == 0x3A && position > 0 ? Array(name[..<position]) : nil
                    switch event {
                    case .head(let head):
                        let field = head.fields.last!
                        let got = Array(request[Int(field.nameStart)..<Int(field.nameEnd)])
                        if got != expectedName { Issue.record("byte \(byte) at \(position) of \(length): name \(got)") }
                    case .error(let error):
                        if expectedName != nil || error.status != 400 { Issue.record("byte \(byte) at \(position) of \(length): \(error)") }
                    default:
                        Issue.record("a whole head gives a head or an error: \(event)")
                    }
                }
            }
        }
    }

    @Test func tokenBytesAreExactlyRFC9110s() {
        let tchar = Set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&'*+-.^_`|~".utf8)
        for byte in 0...255 {
            #expect(isTokenByte(UInt8(byte)) == tchar.contains(UInt8(byte)), "0x\(String(byte, radix: 16))")
        }
    }

    @Test func theWordCheckFindsExactlyTheControlBytes() {
        for byte in 0...255 {
            for lane in 0..<8 {
                let word = (UInt64(0x41) * 0x0101_0101_0101_0101) & ~(UInt64(0xFF) << (lane * 8)) | (UInt64(byte) << (lane * 8))
                #expect(mayHoldControlByte(word) == (byte < 0x20 || byte == 0x7F), "0x\(String(byte, radix: 16)) in lane \(lane)")
            }
        }
    }

    @Test func simpleRequestsAndPipelining() {
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n") == ["head GET / 1.1", "end"])
        #expect(parse("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n") == ["head GET /a 1.1", "end", "head GET /b 1.1", "end"])
        // A complete HTTP/1.0 request followed at once by a second one: both come out.
        #expect(parse("GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n") == ["head GET /a 1.0 close", "end", "head GET /b 1.0 close", "end"])
        #expect(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == ["head GET / 1.0", "end"])
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == ["head GET / 1.1 close", "end"])
        // Empty lines before a request line are skipped (RFC 9112 2.2).
        #expect(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n") == ["head GET / 1.1", "end"])
    }

    /// The end of a head is found however its bytes arrive: in pieces of every size, so with the CRLF CRLF
    /// split anywhere between two reads, after empty lines that are skipped, and with a bare CR LF CR
    /// inside a value's line that is not an end.
    @Test func theHeadsEndIsFoundInPiecesOfEverySize() {
        let text = "\r\nGET /p HTTP/1.1\r\nHost: x\r\nUser-Agent: a value long enough to span words\r\nX: \r\n\r\n"
            + "GET /q HTTP/1.1\r\nHost: y\r\n\r\n"
        let whole = parse(text)
        #expect(whole == ["head GET /p 1.1", "end", "head GET /q 1.1", "end"])
        for piece in 1...text.utf8.count { #expect(parse(text, piece: piece) == whole, "pieces of \(piece)") }
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n") == ["error 400"])
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\n\n\r\n\r\n") == ["error 400"], "a bare LF before the end")
    }

    @Test func contentLengthWithWhitespaceKeepsItsBody() {
        for value in ["5", "5 ", " 5", "\t5\t", " \t5 \t"] {
            #expect(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\(value)\r\n\r\nhello") == ["head POST / 1.1", "body hello", "end"], "\(value.debugDescription)")
        }
    }

    @Test(arguments: [
        ("Content-Length: 5\r\nContent-Length: 5", 400),
        ("Content-Length: 5, 5", 400),
        ("Content-Length: +5", 400),
        ("Content-Length: 0x5", 400),
        ("Content-Length: 1234567890123456789", 400),
        ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
        ("Transfer-Encoding: gzip", 400),
        ("Transfer-Encoding: chunked, gzip", 400),
        ("Transfer-Encoding: gzip, chunked", 501),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400),
        ("Transfer-Encoding: identity", 400),
        // A Transfer-Encoding field without codings frames nothing: refused, not read as no field.
        ("Transfer-Encoding: ", 400),
        ("Transfer-Encoding: ,", 400),
        ("Content-Length: 5\r\nTransfer-Encoding: ", 400),
    ])
    func framingRefusals(fields: String, status: Int) {
        #expect(parse("POST / HTTP/1.1\r\nHost: x\r\n\(fields)\r\n\r\nhello").last == "error \(status)")
    }

    @Test func transferEncodingInHTTP10IsRefused() {
        #expect(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == ["error 400"])
    }

    @Test func chunkedBodiesWithExtensionsAndTrailers() {
        let request = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5; name=value\r\nhello\r\n6 ; a ; b=\"c d\"\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n"
        let expected = ["head POST / 1.1", "body hello world", "end"]
        #expect(parse(request) == expected)
        // The same, byte by byte and in odd pieces: parsing does not depend on how bytes arrive.
        for piece in [1, 2, 3, 7, 13] { #expect(parse(request, piece: piece) == expected, "piece \(piece)") }
        #expect(parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
                == ["head POST / 1.1", "body 0123456789", "end", "head GET / 1.1", "end"])
    }

    @Test(arguments: [
        "5\r\nhelloX\r\n0\r\n\r\n",                 // data longer than its size
        "5 \r\nhello\r\n0\r\n\r\n",                 // whitespace after the size, no extension
        "x\r\n",                                    // not a size
        "FFFFFFFFFFFFFFFFF\r\n",                    // overflows
        "5\nhello\r\n0\r\n\r\n",                    // bare LF
        "5;\u{1}\r\nhello\r\n0\r\n\r\n",             // a control byte in an extension
        "0\r\nContent-Length: 5\r\n\r\n",           // forbidden trailers
        "0\r\nHost: y\r\n\r\n",
        "0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0\r\n folded: x\r\n\r\n",
    ])
    func chunkedRefusals(body: String) {
        #expect(parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body).last == "error 400")
    }

    @Test func chunkExtensionsAreBounded() {
        var limits = HTTP1ParserLimits()
        limits.chunkExtensions = 100
        let long = "5;" + String(repeating: "a", count: 200) + "\r\nhello\r\n0\r\n\r\n"
        #expect(parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + long, limits: limits).last == "error 400")
        // Unbounded input with no line end is refused as soon as it passes the limit.
        let endless = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;" + String(repeating: "a", count: 1 << 20)
        #expect(parse(endless, piece: 4096, limits: limits).last == "error 400")
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\n\r\n", 400),                                        // no Host in 1.1
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),                  // two Hosts
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),                           // a Host with a space
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),                             // asterisk-form is for OPTIONS
        ("GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("CONNECT /a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
        ("GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400),
        ("GET / http/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),                            // two spaces
        ("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /a\u{1}b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: x\n\n", 400),                                   // bare LF
        ("GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),                      // bare CR
        ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),                 // obs-fold
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),                            // space before the colon
        ("GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\u{0}b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
    ])
    func headRefusals(request: String, status: Int) {
        #expect(parse(request) == ["error \(status)"])
    }

    @Test func versionsAndTargets() {
        #expect(parse("GET / HTTP/1.2\r\nHost: x\r\n\r\n") == ["head GET / 1.1", "end"])
        #expect(parse("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n") == ["head OPTIONS * 1.1", "end"])
        #expect(parse("GET http://x/a?b HTTP/1.1\r\nHost: x\r\n\r\n") == ["head GET http://x/a?b 1.1", "end"])
        #expect(parse("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n") == ["head CONNECT x:443 1.1", "end"])
        #expect(parse("GET /caf\u{e9} HTTP/1.1\r\nHost: [::1]:80\r\n\r\n") == ["head GET /café 1.1", "end"])
        #expect(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n") == ["head GET / 1.1", "end"])
    }

    @Test func expectationsWithoutCaseOrWhitespace() {
        #expect(parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue \r\nContent-Length: 1\r\n\r\na") == ["head POST / 1.1 continue", "body a", "end"])
        #expect(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na") == ["head POST / 1.0 close", "body a", "end"])
    }

    @Test func upgradeNeedsBothFields() {
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") == ["head GET / 1.1 upgrade", "end"])
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, upgrade\r\n\r\n") == ["head GET / 1.1", "end"])
    }

    @Test func limits() {
        var limits = HTTP1ParserLimits()
        limits.requestLine = 20
        limits.fieldCount = 2
        limits.fieldSize = 20
        #expect(parse("GET /" + String(repeating: "a", count: 30) + " HTTP/1.1\r\nHost: x\r\n\r\n", limits: limits) == ["error 414"])
        // Refused before the head ends, when the line alone is too long.
        #expect(parse("GET /" + String(repeating: "a", count: 3000), piece: 100, limits: limits) == ["error 414"])
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits) == ["error 431"])
        #expect(parse("GET / HTTP/1.1\r\nHost: " + String(repeating: "x", count: 30) + "\r\n\r\n", limits: limits) == ["error 431"])
        limits.headSize = 100
        limits.fieldCount = 0
        #expect(parse("GET / HTTP/1.1\r\n" + String(repeating: "A: 1\r\n", count: 50), piece: 10, limits: limits) == ["error 431"])
    }

    @Test func headFieldsAreByteExact() throws {
        let text: [UInt8] = Array("GET / HTTP/1.1\r\nHost: x\r\nX-Name:  caf".utf8) + [0xE9] + Array(" \t\r\nX-Empty:\r\n\r\n".utf8)
        var parser = HTTP1Parser()
        let (event, consumed) = text.withUnsafeBytes { parser.next($0) }
        guard case .head(let head) = event else { Issue.record("no head"); return }
        #expect(consumed == text.count)
        let values = head.fields.map { Array(text[Int($0.valueStart)..<Int($0.valueEnd)]) }
        #expect(values == [Array("x".utf8), Array("caf".utf8) + [0xE9], []])
    }
}

extension HTTP1ParserTests {
    @Test func bytesThatCannotStartARequestAreRefusedAtOnce() {
        // A TLS ClientHello and a uwsgi packet, incomplete: refused without waiting for a line end.
        #expect(parse([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) == ["error 400"])
        #expect(parse([0x00, 0x10, 0x00, 0x00, 0x0E, 0x00]) == ["error 400"])
        #expect(parse(" GET / HTTP/1.1") == ["error 400"])
        #expect(parse("GET") == [])   // a method on its way: wait
    }
}

@Suite struct CaseInsensitiveNameTests {
    private func same(_ text: String, _ lower: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { RequestHeaders.equalsLowercased($0, Array(lower.utf8)) }
    }

    @Test func lettersFoldAndNothingElseDoes() {
        #expect(same("Content-Length", "content-length"))
        #expect(same("CONTENT-LENGTH", "content-length"))
        #expect(same("content-length", "content-length"))
        #expect(!same("content-lengt", "content-length"))
        #expect(!same("content_length", "content-length"))
        // 0x0D | 0x20 is '-', '@' | 0x20 is '`' and 0x10 | 0x20 is '0': only A-Z may differ by 0x20.
        #expect(!same("content\rlength", "content-length"))
        #expect(!same("@", "`"))
        #expect(!same("1\u{10}0-continue", "100-continue"))
        #expect(!same("[", "{"))
    }
}

/// A head that came whole is read in one pass (each line's end found by reading it); any other goes
/// the way that finds the head's end first. The two must read every head alike: the one-pass way
/// accepts exactly the heads the other accepts, and reads them to the same offsets.
@Suite struct OnePassHeadTests {
    /// The two ways on one head: nil for a refusal (the one-pass way's refusals only send the parser
    /// the other way, so their reasons do not count), else the head read.
    private func bothWays(_ bytes: [UInt8], limits: HTTP1ParserLimits = HTTP1ParserLimits()) -> (onePass: HTTP1Head?, twoPass: HTTP1Head?) {
        let parser = HTTP1Parser(limits: limits)
        return bytes.withUnsafeBytes { raw in
            // The end as the other way finds it: the first CRLF CRLF.
            let end = (0..<max(0, raw.count - 3)).first { raw[$0] == 13 && raw[$0 + 1] == 10 && raw[$0 + 2] == 13 && raw[$0 + 3] == 10 }.map { $0 + 4 }
            let twoPass = end.flatMap { try? parser.readHead(raw, from: 0, end: $0).get() }
            return (try? parser.readHead(raw, from: 0, end: nil).get(), twoPass)
        }
    }

    /// Field lines that together hold what each way looks at: names a word long and longer, a colon in
    /// and past the first word, values a word long and not, whitespace either side, tabs, bytes above
    /// 0x7F; and lines either way refuses (control bytes, a bare CR or LF, no colon, a space before it,
    /// obs-fold, a name that is not a token).
    private static let lines: [[UInt8]] = [
        "Host: example.com", "X: y", "Accept: text/html,application/xhtml+xml;q=0.9", "A-Longer-Name-Here: v",
        "Abcdefg: 12345678", "Abcdefgh: 1234567", "Abcdefghi:12345678", "Cookie:   a=b; c=d   ", "Empty:", "Empty2:   ",
        "Tabbed:\tx\ty\t", "Content-Length: 5", "Transfer-Encoding: chunked", "Connection: close", "Connection: keep-alive",
        "Expect: 100-continue", "Upgrade: websocket", "Name_With_Underscore: v", "!#$%&'*+-.^_`|~: odd but a token",
        "Bad Name: v", "Bad: a\u{7F}b", "Bad: a\u{01}b", "NoColon", " folded", "\tfolded", "Name :v", ": no name",
        "Dots.And.More.Dots.Here: 1", "Exactly-8:", "Seven-7: abcdefg",
    ].map { Array($0.utf8) } + [
        Array("Latin: caf".utf8) + [0xE9], Array("High: ".utf8) + [0xFF, 0x80, 0xC3, 0xA9], Array("BareCR: a".utf8) + [13] + Array("b".utf8),
        Array("BareLF: a".utf8) + [10] + Array("b".utf8), Array("CRCR: a".utf8) + [13],
    ]

    @Test func everyHeadOfTheseLinesIsReadAlikeBothWays() {
        var generator = SplitMix64(seed: 0x5EED)
        var accepted = 0, total = 0
        for _ in 0..<4000 {
            var head = Array((generator.next() % 8 == 0 ? "GET / HTTP/1.0\r\n" : "GET /path?q=1 HTTP/1.1\r\nHost: h\r\n").utf8)
            for _ in 0..<Int(generator.next() % 6) {
                head += Self.lines[Int(generator.next() % UInt64(Self.lines.count))] + [13, 10]
            }
            head += [13, 10]
            // Sometimes cut short, sometimes with the next request's bytes after it.
            switch generator.next() % 8 {
            case 0: head.removeLast(Int(generator.next() % UInt64(head.count)))
            case 1: head += Array("POST / HTTP/1.1\r\n".utf8)
            default: break
            }
            let (onePass, twoPass) = bothWays(head)
            #expect(onePass == twoPass, "\(String(decoding: head, as: UTF8.self).debugDescription)")
            total += 1
            if twoPass != nil { accepted += 1 }
        }
        // Both kinds were there: heads each way accepts and heads it refuses.
        #expect(accepted > total / 10 && accepted < total * 9 / 10)
    }

    @Test func aHeadReadInOnePassHasItsLengthAndFields() throws {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nX-Long-Header-Name: a value longer than a word\t \r\n\r\nNEXT"
        let head = try #require(bothWays(Array(text.utf8)).onePass)
        #expect(head.length == text.utf8.count - 4)
        #expect(head.fields.count == 2)
        #expect(head.fields[1].valueEnd - head.fields[1].valueStart == Int32("a value longer than a word".utf8.count))
    }

    @Test func aFieldPastItsSizeLimitIsLeftToTheOtherWay() {
        var limits = HTTP1ParserLimits()
        limits.fieldSize = 10
        let (onePass, twoPass) = bothWays(Array("GET / HTTP/1.1\r\nHost: a-long-host\r\n\r\n".utf8), limits: limits)
        #expect(onePass == nil && twoPass == nil)
        #expect(parse("GET / HTTP/1.1\r\nHost: a-long-host\r\n\r\n", limits: limits) == ["error 431"])
    }
}

/// A small seeded generator (SplitMix64), so the generated heads are the same on every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct RequestHeadersTests {
    struct Stop: Error, Equatable { var at: String }

    /// A body's error ends the walk and comes out as it was thrown (its type kept: no `any Error`).
    @Test func aThrownErrorEndsTheWalk() throws {
        let head = try RequestHead(parsing: "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        var seen: [String] = []
        #expect(throws: Stop(at: "B")) {
            try head.headers.forEach { (name, _) throws(Stop) in
                let text = String(decoding: name, as: UTF8.self)
                seen.append(text)
                if text == "B" { throw Stop(at: text) }
            }
        }
        #expect(seen == ["Host", "A", "B"])
        var all: [String] = []
        head.headers.forEach { name, value in all.append(String(decoding: name, as: UTF8.self) + "=" + String(decoding: value, as: UTF8.self)) }
        #expect(all == ["Host=h", "A=1", "B=2", "C=3"])
    }
}
