"""The HTTP/1.1 front door, over raw sockets: RFC 9112 framing enforced strictly and predictably,
header bytes delivered exactly. Each case is followed by a probe request on the same connection: a
refused request must have closed it (a 4xx with Connection: close, never a silent close or a hang),
an accepted one must leave it in step (the probe is answered as a request of its own)."""
import json
import socket
import time

import pytest

PROBE = b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def response(self):
        """(status, headers, body) of the next response; None if the connection closed first."""
        try:
            while b"\r\n\r\n" not in self.buffer:
                self._fill()
        except (EOFError, ConnectionResetError):
            return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            return status, headers, b""
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self):
        """True when the server closed the connection (after whatever it had sent)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture(params=["wsgi", "asgi"])
def server(serve, request):
    return serve("mirror:app" if request.param == "wsgi" else "mirror:asgi", "--interface", request.param, "--keep-alive", "10")


def accepted(server, request, probe=True):
    """Sends `request`, expects 200 and a connection still in step; returns what the app saw."""
    conn = Conn(server.port)
    try:
        conn.send(request)
        status, headers, body = conn.response()
        assert status == 200, (status, body)
        seen = json.loads(body)
        if probe:
            conn.send(PROBE)
            answer = conn.response()
            assert answer is not None and answer[0] == 200, "the probe was not answered: the connection is out of step"
            assert json.loads(answer[2])["path"] == "/probe"
        return seen
    finally:
        conn.close()


def refused(server, request, status):
    """Sends `request` and a probe at once: exactly one answer, `status` with Connection: close."""
    conn = Conn(server.port)
    try:
        conn.send(request + PROBE)
        answer = conn.response()
        assert answer is not None, "closed without an answer"
        assert answer[0] == status, answer
        assert answer[1].get("connection") == "close", answer[1]
        assert conn.closed(), "the connection stayed open after a refusal"
        assert conn.buffer == b"", f"more was sent after the refusal: {conn.buffer[:200]!r}"
    finally:
        conn.close()


def test_header_names_stay_right_past_the_workers_name_cache(server):
    """The worker keeps header names' Python objects by their bytes, up to a bound, then starts over:
    900 distinct names over ten requests (past the bound), names that differ only in case, and names
    that share a prefix each reach the app as exactly themselves."""
    for round_ in range(10):
        names = [f"X-Name-{round_}-{i}" for i in range(90)]
        fields = b"".join(f"{name}: v{i}\r\n".encode() for i, name in enumerate(names))
        seen = accepted(server, b"GET /names HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n", probe=False)
        got = dict(seen["headers"])
        for i, name in enumerate(names):
            assert got[name.lower()] == f"v{i}", name
    seen = accepted(server, b"GET /case HTTP/1.1\r\nHost: x\r\nX-Case: 1\r\nx-case: 2\r\nX-CASE: 3\r\nX-Cas: 4\r\nX-Casey: 5\r\n\r\n")
    # WSGI joins a repeated field into one value, ASGI lists each: either way 1, 2, 3 in order.
    assert ",".join(value for name, value in seen["headers"] if name == "x-case") == "1,2,3"
    got = dict(seen["headers"])
    assert got["x-cas"] == "4" and got["x-casey"] == "5"


@pytest.mark.parametrize("value", [b"5 ", b"\t5\t", b" 5", b"5"])
def test_content_length_with_whitespace_keeps_the_body(server, value):
    seen = accepted(server, b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length:" + value + b"\r\n\r\nhello")
    assert seen["body_length"] == 5


@pytest.mark.parametrize("fields,status", [
    (b"Content-Length: 5\r\nContent-Length: 5", 400),
    (b"Content-Length: 5, 5", 400),
    (b"Content-Length: -5", 400),
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
    (b"Transfer-Encoding: gzip, chunked", 501),
    (b"Transfer-Encoding: chunked, gzip", 400),
    (b"Transfer-Encoding: identity", 400),
])
def test_framing_refusals(server, fields, status):
    refused(server, b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n\r\nhello", status)


def test_transfer_encoding_in_http10_is_refused_and_closed(server):
    refused(server, b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400)


def test_chunk_extensions_are_accepted(server):
    seen = accepted(server, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5; name=value\r\nhello\r\n6;a;b=\"c d\"\r\n world\r\n0\r\nX-Trailer: ok\r\n\r\n")
    assert seen["body_length"] == 11


def test_a_huge_chunk_extension_is_refused(server):
    conn = Conn(server.port)
    try:
        conn.send(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"a" * (1 << 20) + b"\r\nhello\r\n0\r\n\r\n")
        answer = conn.response()
        assert answer is not None and answer[0] == 400 and answer[1].get("connection") == "close", answer
        assert conn.closed()
    finally:
        conn.close()


@pytest.mark.parametrize("refused", [
    b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"a" * 65536,   # the body's framing
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536,                                        # the head
], ids=["body", "head"])
def test_a_client_still_sending_after_its_refusal_reads_the_answer(server, refused):
    """Refused mid-request, the client keeps sending before it reads (as one uploading a body does). A
    socket closed at once would answer those bytes with a reset, which erases the answer from the
    client's buffers; the server closes its output first and throws away what still comes (RFC 9112 9.6)."""
    conn = Conn(server.port)
    try:
        conn.send(refused)
        time.sleep(0.5)   # the server has refused and answered meanwhile
        conn.send(b"b" * (1 << 20))
        answer = conn.response()
        assert answer is not None and answer[0] in (400, 431) and answer[1].get("connection") == "close", answer
        assert conn.closed()
    finally:
        conn.close()


@pytest.mark.parametrize("trailer", [b"Content-Length: 5", b"Host: y", b"Transfer-Encoding: chunked"])
def test_forbidden_trailers_are_refused(server, trailer):
    conn = Conn(server.port)
    try:
        conn.send(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n" + PROBE)
        answer = conn.response()
        assert answer is not None and answer[0] == 400 and answer[1].get("connection") == "close", answer
        assert conn.closed() and conn.buffer == b""
    finally:
        conn.close()


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n", 400),
])
def test_head_refusals(server, request_bytes, status):
    refused(server, request_bytes, status)


def test_options_asterisk_is_served(server):
    assert accepted(server, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")["method"] == "OPTIONS"


def test_expect_continue_with_whitespace_and_case(server):
    conn = Conn(server.port)
    try:
        conn.send(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue \r\nContent-Length: 5\r\n\r\n")
        interim = conn.response()
        assert interim is not None and interim[0] == 100, interim
        conn.send(b"hello")
        status, _, body = conn.response()
        assert status == 200 and json.loads(body)["body_length"] == 5
    finally:
        conn.close()


def test_http10_request_followed_by_another_in_one_packet(server):
    conn = Conn(server.port)
    try:
        conn.send(b"GET /one HTTP/1.0\r\n\r\nGET /two HTTP/1.0\r\n\r\n")
        first = conn.response()
        assert first is not None and first[0] == 200 and json.loads(first[2])["path"] == "/one"
        assert conn.closed()   # HTTP/1.0 without keep-alive: one request, then close
    finally:
        conn.close()
    conn = Conn(server.port)
    try:
        conn.send(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert json.loads(conn.response()[2])["path"] == "/one"
        assert json.loads(conn.response()[2])["path"] == "/two"
    finally:
        conn.close()


def test_minor_versions_above_one_are_served_as_11(server):
    assert accepted(server, b"GET /v HTTP/1.2\r\nHost: x\r\n\r\n")["protocol"] == "HTTP/1.1"


def test_raw_utf8_in_the_target_is_served(server):
    seen = accepted(server, "GET /café?q=ü HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    if "raw_uri" in seen:   # WSGI: each byte one latin-1 character
        assert seen["raw_uri"] == "/café?q=ü".encode().decode("latin-1")
        assert seen["path"] == "/café".encode().decode("latin-1")
    else:                   # ASGI: raw_path bytes, path decoded as UTF-8
        assert seen["raw_path"] == "/café".encode().decode("latin-1") and seen["path"] == "/café"


def test_header_bytes_reach_the_app_exactly(server):
    value = b"caf\xe9 \xff\x80 ok"
    seen = accepted(server, b"GET /h HTTP/1.1\r\nHost: x\r\nX-Latin: " + value + b"\r\n"
                            b"X-Rep: \xe9a\r\nX-Rep: b\xe9\r\n\r\n")
    headers = dict((k, v) for k, v in seen["headers"])
    # WSGI sees each byte as one latin-1 character; ASGI's bytes, decoded latin-1 here, are the same.
    assert headers["x-latin"] == value.decode("latin-1")
    if "raw_uri" in seen:
        assert headers["x-rep"] == "\xe9a,b\xe9"
    else:
        assert sorted(v for k, v in seen["headers"] if k == "x-rep") == ["b\xe9", "\xe9a"]


def test_websocket_frame_sent_with_the_upgrade_request(serve):
    # The bytes after an upgrade request belong to the new protocol: a frame sent in the same packet
    # as the handshake must reach the websocket, not the HTTP parser.
    import base64
    import os
    server = serve("edgeasgi:app")
    key = base64.b64encode(os.urandom(16))
    mask = os.urandom(4)
    payload = b"early"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    conn = Conn(server.port)
    try:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame)
        status, headers, _ = conn.response()
        assert status == 101, headers
        while len(conn.buffer) < 2 + len(b"echo: early"):
            conn._fill()
        assert conn.buffer[0] == 0x81 and conn.buffer[2:2 + conn.buffer[1]] == b"echo: early", conn.buffer
    finally:
        conn.close()
