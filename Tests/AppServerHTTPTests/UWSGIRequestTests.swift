import NIOCore
import Testing
@testable import AppServerHTTP

/// What a uwsgi packet's variables become: the request head the connection handler takes, and the
/// origin the app sees (the variables are told apart by their bytes).
@Suite struct UWSGIRequestTests {
    func made(_ variables: [(String, String)]) throws -> (head: RequestHead, origin: RequestOrigin) {
        guard case .packet(let packet, _) = UWSGIPacketParser.parse(ByteBuffer(bytes: uwsgiPacket(variables))) else {
            Issue.record("not parsed")
            throw UWSGIRequest.Failure.invalid("not parsed")
        }
        return try UWSGIRequest.make(packet)
    }

    func headers(_ head: RequestHead) -> [String] {
        var lines: [String] = []
        head.headers.forEach { name, value in lines.append(String(decoding: name, as: UTF8.self) + ": " + String(decoding: value, as: UTF8.self)) }
        return lines
    }

    func gateway(_ origin: RequestOrigin) -> [String] {
        gatewayVariables(origin).map { $0.name + "=" + String(decoding: $0.value, as: UTF8.self) }
    }

    @Test func nginxsVariablesMakeTheHeadAndTheOrigin() throws {
        let (head, origin) = try made([
            ("QUERY_STRING", "a=1"), ("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", "text/plain"), ("CONTENT_LENGTH", "12"),
            ("REQUEST_URI", "/x?a=1"), ("PATH_INFO", "/x"), ("SERVER_PROTOCOL", "HTTP/1.0"), ("REQUEST_SCHEME", "HTTPS"),
            ("REMOTE_ADDR", "198.51.100.4"), ("REMOTE_PORT", "4444"), ("SERVER_NAME", "shop.example"), ("SERVER_PORT", "8443"),
            ("HTTP_HOST", "shop.example"), ("HTTP_X_TWICE", "a"), ("HTTP_CONNECTION", "keep-alive"), ("HTTP_TE", "trailers"),
            ("HTTP_X_TWICE", "b"), ("HTTP_", "odd"),
        ])
        #expect(head.method == "POST" && head.uri == "/x?a=1" && head.version.minor == 0)
        #expect(head.parsed.contentLength == 12)
        // Hop-by-hop headers of the client's connection to nginx are not the app's; a repeated one stays repeated.
        #expect(headers(head) == ["content-type: text/plain", "content-length: 12", "host: shop.example", "x-twice: a", "x-twice: b"])
        #expect(origin.isSecure)
        #expect(origin.client?.host == "198.51.100.4" && origin.client?.port == 4444)
        #expect(origin.server?.host == "shop.example" && origin.server?.port == 8443)
        // CONTENT_* and HTTP_* go in as headers; a name that is only the prefix is no header.
        #expect(gateway(origin) == ["QUERY_STRING=a=1", "REQUEST_METHOD=POST", "REQUEST_URI=/x?a=1", "PATH_INFO=/x",
                                    "SERVER_PROTOCOL=HTTP/1.0", "REQUEST_SCHEME=HTTPS", "REMOTE_ADDR=198.51.100.4", "REMOTE_PORT=4444",
                                    "SERVER_NAME=shop.example", "SERVER_PORT=8443", "HTTP_=odd"])
    }

    @Test(arguments: [("HTTPS", "on", true), ("HTTPS", "ON", true), ("HTTPS", "1", true), ("HTTPS", "Yes", true), ("HTTPS", "off", false),
                      ("HTTPS", "", false), ("UWSGI_SCHEME", "https", true), ("wsgi.url_scheme", "https", true),
                      ("REQUEST_SCHEME", "http", false), ("HTTPS_X", "on", false)])
    func theSchemeComesFromHTTPSOrASchemeVariable(name: String, value: String, secure: Bool) throws {
        #expect(try made([("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/"), (name, value)]).origin.isSecure == secure)
    }

    @Test func portsThatAreNotNumbersCountAsNone() throws {
        let origin = try made([("REQUEST_METHOD", "GET"), ("REMOTE_ADDR", "192.0.2.1"), ("REMOTE_PORT", "x1"),
                               ("SERVER_NAME", "h"), ("SERVER_PORT", "")]).origin
        #expect(origin.client?.port == 0 && origin.server?.port == 0)
        #expect(try made([("REQUEST_METHOD", "GET"), ("REMOTE_ADDR", "")]).origin.client == nil)
    }

    @Test func refusals() {
        #expect(throws: UWSGIRequest.Failure.missing("REQUEST_METHOD")) { try made([("REQUEST_URI", "/")]) }
        #expect(throws: UWSGIRequest.Failure.invalid("CONTENT_LENGTH '12x' is not a length")) {
            try made([("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "12x")])
        }
        #expect(throws: UWSGIRequest.Failure.invalid("REQUEST_METHOD is not a token")) { try made([("REQUEST_METHOD", "G T")]) }
    }

    @Test func withoutRequestURIThePathIsEncodedAndTheQueryAdded() throws {
        let head = try made([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/a b%"), ("QUERY_STRING", "q=1")]).head
        #expect(head.uri == "/a%20b%25?q=1")
    }
}
