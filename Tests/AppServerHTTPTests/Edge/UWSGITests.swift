import AppServerConfig
import NIOCore
import NIOHTTP1
import Testing
@testable import AppServerHTTP

/// A uwsgi packet as nginx's uwsgi_pass writes it.
func uwsgiPacket(_ variables: [(String, String)], modifier1: UInt8 = 0, body: String = "") -> [UInt8] {
    var block: [UInt8] = []
    for (name, value) in variables {
        for field in [Array(name.utf8), Array(value.utf8)] {
            block += [UInt8(field.count & 0xff), UInt8(field.count >> 8)] + field
        }
    }
    return [modifier1, UInt8(block.count & 0xff), UInt8(block.count >> 8), 0] + block + Array(body.utf8)
}

/// A uwsgi origin's CGI variables, in order, as text (names) and bytes (values).
func gatewayVariables(_ origin: RequestOrigin) -> [(name: String, value: [UInt8])] {
    var variables: [(name: String, value: [UInt8])] = []
    origin.gatewayVariables?.forEach { name, value in variables.append((String(decoding: name, as: UTF8.self), Array(value))) }
    return variables
}

@Suite struct UWSGIPacketTests {
    let nginx: [(String, String)] = [
        ("QUERY_STRING", "a=1"), ("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", "application/json"), ("CONTENT_LENGTH", "2"),
        ("REQUEST_URI", "/p%20q?a=1"), ("PATH_INFO", "/p q"), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "https"), ("HTTPS", "on"), ("REMOTE_ADDR", "198.51.100.4"),
        ("REMOTE_PORT", "40312"), ("SERVER_PORT", "443"), ("SERVER_NAME", "shop.example"), ("HTTP_HOST", "shop.example"),
        ("HTTP_X_FORWARDED_FOR", "198.51.100.4"), ("HTTP_CONNECTION", "keep-alive"), ("HTTP_TRANSFER_ENCODING", "chunked"),
    ]

    func parse(_ bytes: [UInt8]) -> UWSGIPacketParser.Outcome {
        UWSGIPacketParser.parse(ByteBuffer(bytes: bytes))
    }

    @Test func nginxPacketBecomesARequest() throws {
        let bytes = uwsgiPacket(nginx, body: "{}")
        guard case .packet(let packet, let length) = parse(bytes) else { Issue.record("not parsed"); return }
        #expect(length == bytes.count - 2)
        let request = try UWSGIRequest.make(packet)
        #expect(request.head.method == "POST")
        #expect(request.head.uri == "/p%20q?a=1")
        #expect(request.head.version == .http1_1)
        #expect(request.head.parsed.contentLength == 2)
        #expect(request.head.headers["host"] == ["shop.example"])
        #expect(request.head.headers["x-forwarded-for"] == ["198.51.100.4"])
        #expect(request.head.headers["content-type"] == ["application/json"])
        // The client's connection to nginx does not steer this one.
        #expect(request.head.headers["connection"].isEmpty && request.head.headers["transfer-encoding"].isEmpty)
        #expect(request.origin.isSecure)
        #expect(request.origin.client?.host == "198.51.100.4" && request.origin.client?.port == 40312)
        #expect(request.origin.server?.host == "shop.example" && request.origin.server?.port == 443)
        let names = gatewayVariables(request.origin).map(\.name)
        #expect(names.contains("DOCUMENT_ROOT") && names.contains("PATH_INFO"))
        // Headers reach the environ from the head's fields, not a second time from here.
        #expect(!names.contains("CONTENT_LENGTH") && !names.contains("HTTP_HOST") && !names.contains("HTTP_CONNECTION"))
    }

    /// A uwsgi head is not the HTTP parser's: its every field is read for the request id.
    @Test func aRequestIDComesThroughAPacket() throws {
        let bytes = uwsgiPacket(nginx + [("HTTP_X_REQUEST_ID", "id-from-nginx")], body: "{}")
        guard case .packet(let packet, _) = parse(bytes) else { Issue.record("not parsed"); return }
        let request = try UWSGIRequest.make(packet)
        #expect(RequestID.carried(in: request.head.headers, lowercasedName: Array("x-request-id".utf8)) == "id-from-nginx")
    }

    @Test func headerBytesStayExactAndRepeatsJoin() throws {
        var bytes = uwsgiPacket([("REQUEST_METHOD", "GET"), ("HTTP_X_A", "1"), ("HTTP_X_A", "2")])
        // A value with a byte that is not UTF-8 (latin-1 e-acute), as nginx passes it on.
        let extra: [UInt8] = [6, 0] + Array("HTTP_B".utf8) + [4, 0] + [0x63, 0x61, 0x66, 0xE9]
        bytes[1] = UInt8((Int(bytes[1]) + extra.count) & 0xff)
        bytes += extra
        guard case .packet(let packet, _) = parse(bytes) else { Issue.record("not parsed"); return }
        let head = try UWSGIRequest.make(packet).head
        var fields: [(String, [UInt8])] = []
        head.headers.forEach { name, value in fields.append((String(decoding: name, as: UTF8.self), Array(value))) }
        #expect(fields.map(\.0) == ["x-a", "x-a", "b"])
        #expect(fields.last?.1 == [0x63, 0x61, 0x66, 0xE9])
    }

    @Test func withoutRequestURIThePathIsEncodedAgain() throws {
        guard case .packet(let packet, _) = parse(uwsgiPacket([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/a b%"), ("QUERY_STRING", "x=1")])) else {
            Issue.record("not parsed"); return
        }
        #expect(try UWSGIRequest.make(packet).head.uri == "/a%20b%25?x=1")
        #expect(try UWSGIRequest.make(packet).origin.isSecure == false)
    }

    @Test func partialPacketsWait() {
        let bytes = uwsgiPacket(nginx)
        for cut in [0, 1, 3, 4, 10, bytes.count - 1] {
            guard case .needMore = parse(Array(bytes.prefix(cut))) else { Issue.record("cut at \(cut) was not 'need more'"); return }
        }
    }

    @Test func badPacketsAreRefusedWithTheirReason() throws {
        func failure(_ bytes: [UInt8]) -> UWSGIPacketParser.Failure? {
            if case .invalid(let failure) = parse(bytes) { return failure }
            return nil
        }
        #expect(failure(Array("GET / HTTP/1.1\r\n".utf8)) == .httpRequest)
        #expect(failure(uwsgiPacket(nginx, modifier1: 5)) == .unsupportedModifier(5))
        #expect(failure([0, 0xff, 0xff, 0]) == .varsTooLarge(65535, limit: UWSGIPacketParser.maxVarsSize))
        // A key whose length runs past the block.
        #expect(failure([0, 4, 0, 0, 9, 0, 65, 66]) == .malformedVariables("a key runs past the block"))
        #expect(failure([0, 5, 0, 0, 1, 0, 65, 9, 0]) == .malformedVariables("the value of A runs past the block"))
        #expect(failure([0, 4, 0, 0, 0, 0, 0, 0]) == .malformedVariables("an empty key"))
        let many = uwsgiPacket((0...UWSGIPacketParser.maxVariables).map { ("K\($0)", "") })
        #expect(failure(many) == .tooManyVariables(limit: UWSGIPacketParser.maxVariables))
        guard case .packet(let noMethod, _) = parse(uwsgiPacket([("PATH_INFO", "/")])) else { Issue.record("not parsed"); return }
        #expect(throws: UWSGIRequest.Failure.missing("REQUEST_METHOD")) { try UWSGIRequest.make(noMethod) }
        guard case .packet(let badLength, _) = parse(uwsgiPacket([("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "-1")])) else { Issue.record("not parsed"); return }
        #expect(throws: UWSGIRequest.Failure.self) { try UWSGIRequest.make(badLength) }
    }
}
