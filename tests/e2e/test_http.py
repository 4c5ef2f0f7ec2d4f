"""HTTP/1.1 behaviour of a worker: framing, keep-alive, pipelining, bodies, limits and timeouts."""
import hashlib
import shutil
import json
import os
import socket
import threading
import time

import pytest
import requests

from conftest import raw_request, read_response, rss_kib, wait_until


def test_hello_body_and_headers(serve):
    server = serve("plain:app")
    r = requests.get(server.url + "/")
    assert r.status_code == 200
    assert r.content == b"Hello, World!"
    assert r.headers["Content-Length"] == "13"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Server"] == "appserver"
    assert r.headers["Date"].endswith(" GMT")


def test_keep_alive_reuses_one_connection(serve):
    server = serve("plain:app")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        f = s.makefile("rb")
        pids = set()
        for _ in range(5):
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(f)
            assert status == "HTTP/1.1 200 OK"
            assert "connection" not in headers
            pids.add(body)
        assert len(pids) == 1


def test_pipelined_requests_answered_in_order(serve):
    server = serve("plain:app", "--threads", "4")
    batch = b"".join(
        b"GET /slow?s=%s HTTP/1.1\r\nHost: x\r\n\r\n" % s for s in (b"0.3", b"0", b"0.1")
    ) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(batch)
        f = s.makefile("rb")
        bodies = [read_response(f)[2] for _ in range(4)]
    assert bodies == [b"slow done", b"slow done", b"slow done", b"Hello, World!"]


def test_http10_closes_unless_keep_alive(serve):
    server = serve("plain:app")
    data = raw_request(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Connection: close" in data
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        f = s.makefile("rb")
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(f)
        assert headers.get("connection") == "keep-alive" and body == b"Hello, World!"
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_response(f)[2] == b"Hello, World!"


def test_chunked_request_body(serve):
    server = serve("plain:app")
    payload = os.urandom(300_000)

    def chunks():
        for i in range(0, len(payload), 7000):
            yield payload[i:i + 7000]

    r = requests.post(server.url + "/echo", data=chunks())
    assert r.status_code == 200
    assert r.json() == {"length": len(payload), "md5": hashlib.md5(payload).hexdigest()}


def test_chunked_response_for_a_generator(serve):
    server = serve("plain:app")
    r = requests.get(server.url + "/stream")
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert len(r.content) == 16 * 65536
    assert r.content[:1] == b"A" and r.content[-1:] == b"P"


def test_single_chunk_generator_gets_a_content_length(serve):
    server = serve("plain:app")
    r = requests.get(server.url + "/one-chunk")
    assert r.content == b"only chunk"
    assert r.headers["Content-Length"] == "10" and "Transfer-Encoding" not in r.headers


def test_head_has_headers_but_no_body(serve):
    server = serve("plain:app")
    data = raw_request(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 13" in head
    assert body == b""


def test_expect_100_continue(serve):
    server = serve("plain:app")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        status, _, body = read_response(s.makefile("rb"))
        assert status == "HTTP/1.1 200 OK"
        assert json.loads(body)["length"] == 5


def test_a_body_left_unread_is_waited_for_only_when_the_client_sends_it_anyway(serve):
    """The app answers without reading the body. A client waiting for `100 Continue` never got one and
    may never send the body: the connection ends after the response. An HTTP/1.0 client's expectation
    is ignored (RFC 9110 10.1.1): it sends the body, which is read and dropped, and the connection
    serves its next request."""
    server = serve("plain:app")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        f = s.makefile("rb")
        status, _, body = read_response(f)
        assert (status, body) == ("HTTP/1.1 200 OK", b"Hello, World!")
        assert f.read() == b""   # closed, not waiting (a wait would time out here)
    length = 300 << 10   # above the body's high water mark: the app runs before the body is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % length)
        f = s.makefile("rb")
        status, headers, body = read_response(f)
        assert (status, body) == ("HTTP/1.0 200 OK", b"Hello, World!"), headers
        s.sendall(b"x" * length + b"GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, _, body = read_response(f)
        assert status == "HTTP/1.0 200 OK" and body.isdigit()


def test_100_mib_upload_streams_with_bounded_memory(serve):
    server = serve("plain:app")
    worker = server.workers()[0]
    before = rss_kib(worker)
    size = 100 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    digest = hashlib.md5()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(worker))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(100):
                s.sendall(block)
                digest.update(block)
            status, _, body = read_response(s.makefile("rb"))
    finally:
        done.set()
        watcher.join()
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body) == {"length": size, "md5": digest.hexdigest()}
    growth_mib = (peak[0] - before) / 1024
    assert growth_mib < 32, f"worker RSS grew by {growth_mib:.1f} MiB during a 100 MiB upload"


def test_unread_body_is_discarded_and_connection_kept(serve):
    server = serve("plain:app")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10000)
        assert read_response(f)[2] == b"Hello, World!"
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, World!"


def assert_status_and_alive(server, data, expected):
    pid = server.workers()[0]
    response = raw_request(server.port, data)
    assert response.split(b"\r\n", 1)[0].split(b" ")[1] == expected, response[:200]
    assert requests.get(server.url + "/").status_code == 200
    assert server.workers() == [pid], "the worker must survive a bad request"


def test_bad_request_line_gets_400(serve):
    server = serve("plain:app")
    assert_status_and_alive(server, b"GARBAGE\r\n\r\n", b"400")
    assert_status_and_alive(server, b"GET / HTTP/9.9\r\n\r\n", b"505")   # RFC 9110 15.6.6


def test_conflicting_content_length_and_transfer_encoding_gets_400(serve):
    server = serve("plain:app")
    assert_status_and_alive(
        server,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"400",
    )
    assert_status_and_alive(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400")


def test_oversize_header_gets_431(serve):
    server = serve("plain:app", "--limit-request-field_size", "100")
    assert_status_and_alive(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n", b"431")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 100_000 + b"\r\n\r\n"
    assert_status_and_alive(server, huge, b"431")


def test_too_many_headers_gets_431(serve):
    server = serve("plain:app", "--limit-request-fields", "5")
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10))
    assert_status_and_alive(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", b"431")


def test_long_request_line_gets_414(serve):
    server = serve("plain:app", "--limit-request-line", "200")
    assert_status_and_alive(server, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414")


def test_body_over_limit_gets_413(serve):
    server = serve("plain:app", "--limit-request-body", "1000")
    assert_status_and_alive(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"413")
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n"
    assert_status_and_alive(server, chunked, b"413")
    assert requests.post(server.url + "/echo", data=b"x" * 999).json()["length"] == 999


def test_header_timeout_answers_408_to_a_slow_client(serve):
    server = serve("plain:app", "--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")   # never finishes the head
        started = time.monotonic()
        data = s.recv(1000)
        assert data.startswith(b"HTTP/1.1 408")
        assert s.recv(1000) == b""
        assert time.monotonic() - started < 4
    assert requests.get(server.url + "/").status_code == 200


def test_a_slow_head_on_a_kept_connection_gets_the_header_timeout_not_the_keep_alive_one(serve):
    # The header timeout starts with the first bytes of each head, the second request's too: a
    # client that idles within the keep-alive timeout, then trickles a head, is answered 408.
    server = serve("plain:app", "--header-timeout", "1", "--keep-alive", "30")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, World!"
        time.sleep(1.5)   # idle, under keep-alive: the connection stays
        s.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        assert f.read().startswith(b"HTTP/1.1 408")   # and closed
        assert time.monotonic() - started < 8   # not the 30 s keep-alive timeout


def test_idle_keep_alive_connection_is_closed(serve):
    server = serve("plain:app", "--keep-alive", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s.makefile("rb"))
        started = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - started < 4


def test_many_concurrent_connections(serve):
    server = serve("plain:app", "--threads", "4")
    errors = []

    def client():
        try:
            with requests.Session() as session:
                for _ in range(50):
                    assert session.get(server.url + "/").content == b"Hello, World!"
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_keep_alive_zero_closes_every_connection(serve):
    server = serve("plain:app", "--keep-alive", "0")
    data = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data and data.endswith(b"Hello, World!")


def test_unread_body_of_a_stalled_client_does_not_hold_the_connection_forever(serve):
    server = serve("plain:app", "--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        # The app answers without reading; the client then sends nothing more of its 1 MB body.
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        f = s.makefile("rb")
        assert read_response(f)[2] == b"Hello, World!"
        started = time.monotonic()
        assert f.read() == b""
        assert time.monotonic() - started < 5


def test_client_gone_mid_upload_leaves_the_worker_serving(serve):
    server = serve("plain:app")
    pid = server.workers()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 500_000)
            time.sleep(0.2)
        # The app's read raises ClientDisconnected; the next request is served as usual.
        assert requests.get(server.url + "/", timeout=5).content == b"Hello, World!"
    assert server.workers() == pid
    assert "Error handling request" not in server.log()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch to nobody")
def test_serves_as_an_unprivileged_user(tmp_path):
    # Run as nobody: a socket option that needs a capability once reset every connection.
    from conftest import APPS, BINARY, VENV, free_port
    import subprocess
    port = free_port()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(BINARY),
                             "--virtualenv", VENV, "--bind", f"127.0.0.1:{port}", "plain:app"],
                            cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answer():
            try:
                return requests.get(f"http://127.0.0.1:{port}/", timeout=2).content
            except requests.RequestException:
                return None
        assert wait_until(answer, message="an answer from a server run as nobody") == b"Hello, World!"
    finally:
        proc.terminate()
        proc.wait(15)
