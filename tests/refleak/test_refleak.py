"""The Python bridge leaks no references: the server built against Debian's debug interpreter
(python3.11-dbg, `make refleak-build`) serves every kind of request many times, and the interpreter's
total reference count (sys.gettotalrefcount) must not grow with the number of requests.

Each server runs on a unix socket: no per-client address objects are cached, so after a warm-up every
reference the bridge makes for a request must be gone once the request is. Two equal rounds follow the
warm-up; a leak of one reference per request of any kind shows as at least ROUNDS references."""
import http.client
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import unix_connect

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BINARY = os.environ.get("APPSERVER_DEBUG_BIN", str(ROOT / ".build-pythons" / "hosts" / "appserver-python3.11d"))
# Requests of each kind per round; a leak of one reference per request grows the count by this much.
ROUNDS = 150
# What a round may add without there being a leak: a few objects that live on (a log line's record
# cached by the logging module, a dict grown once). Far below one reference per request.
ALLOWED = ROUNDS // 5


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


@pytest.fixture(scope="module")
def debug_binary():
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} is missing: `make refleak-build` builds the server against python3.11-dbg")
    version = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    return BINARY


class Server:
    def __init__(self, binary, tmp_path, app, *args):
        self.socket_path = str(tmp_path / "refleak.sock")
        self.log = open(tmp_path / "server.log", "w+")
        self.process = subprocess.Popen([binary, "--bind", f"unix:{self.socket_path}", "--workers", "1", "--timeout", "2",
                                         "--graceful-timeout", "5", *args, app], cwd=HERE, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/refs")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the debug server did not start:\n{self.output()}")

    def request(self, method, path, body=None, headers=(), read=True):
        connection = UnixHTTPConnection(self.socket_path)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body is not None and not any(name.lower() == "transfer-encoding" for name, _ in headers):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            if not read:
                return None
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get(self, path):
        return self.request("GET", path)

    def refs(self):
        """The total reference count once the server is quiet: the same in two readings 0.3 s apart. Work a
        client left (a request it gave up on, a websocket it dropped, a request cancelled at the timeout)
        ends a little after the client moved on, and one such task still alive holds tens of references."""
        last = None
        for _ in range(20):
            time.sleep(0.3)
            count = int(self.get("/refs")[1])
            if count == last:
                return count
            last = count
        return last

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure(server, exercise):
    """The growth of the total reference count over each of two equal rounds, after a warm-up."""
    exercise(ROUNDS // 3)
    start = server.refs()
    exercise(ROUNDS)
    middle = server.refs()
    exercise(ROUNDS)
    end = server.refs()
    return middle - start, end - middle


def chunked(parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def wsgi_round(server):
    def exercise(count):
        for i in range(count):
            headers = [("X-Multi", "a"), ("X-Multi", "b"), ("X-Latin", b"caf\xe9")]
            assert server.request("GET", f"/hello?i={i}", headers=headers) == (200, b"a,b|caf\xe9|i=%d" % i)
            assert server.get("/stream") == (200, b"".join(b"chunk%d\n" % n for n in range(5)))
            assert server.get("/large") == (200, b"A" * 20000 + b"B" * 20000 + b"C" * 20000)
            assert server.get("/large?list") == (200, b"L" * 20000 + b"M" * 70000)
            assert server.get("/file") == (200, b"f" * 5000)
            assert server.get("/write") == (200, b"written by write()")
            assert server.get("/excinfo") == (500, b"error page")
            try:
                server.get("/excinfo-late")   # the head went out: the server closes the connection
            except (http.client.HTTPException, OSError):
                pass
            assert server.request("POST", "/read", body=b"line\n" + b"x" * 3000) == (200, b"5:3000")
            body = chunked([b"line\n", b"y" * 100, b"z" * 100])
            assert server.request("POST", "/read", body=body, headers=[("Transfer-Encoding", "chunked")]) == (200, b"5:200")
            assert server.get("/raise")[0] == 500
            assert server.get("/close") == (200, b"closing body")
            assert server.get("/nothing")[0] == 404
    return exercise


@pytest.mark.parametrize("threads", [1, 4])
def test_wsgi_bridge_leaks_no_references(debug_binary, tmp_path, threads):
    server = Server(debug_binary, tmp_path, "refleak_wsgi:app", "--threads", str(threads))
    try:
        first, second = measure(server, wsgi_round(server))
    finally:
        server.stop()
    print(f"WSGI --threads {threads}: total refcount growth per round of {ROUNDS} x 11 requests: {first}, {second}")
    assert second <= ALLOWED, f"the WSGI bridge leaks: +{first} then +{second} references a round\n{server.output()[-3000:]}"


def leave_early(server, path):
    """Sends a request and goes away before the answer."""
    connection = UnixHTTPConnection(server.socket_path)
    connection.putrequest("GET", path)
    connection.endheaders()
    time.sleep(0.01)
    connection.close()


def websocket_round(server, count):
    uri = "ws://localhost/ws/echo"
    for i in range(count):
        with unix_connect(server.socket_path, uri) as ws:   # the client closes
            ws.send(f"hi {i}")
            assert ws.recv() == f"hi {i} \u00e9"
            ws.send(b"\x01\x02\x03")
            assert ws.recv() == b"\x03\x02\x01"
        with unix_connect(server.socket_path, uri) as ws:   # the app closes
            ws.send("close")
            with pytest.raises(ConnectionClosed):
                ws.recv()
        with pytest.raises(InvalidStatus):                    # refused before the handshake
            unix_connect(server.socket_path, "ws://localhost/ws/reject").close()
        with unix_connect(server.socket_path, "ws://localhost/ws/raise") as ws:   # the app raises: 1011
            with pytest.raises(ConnectionClosed):
                ws.recv()
        with unix_connect(server.socket_path, uri) as ws:   # the client vanishes without a close frame
            ws.send("hello")
            ws.recv()
            ws.socket.shutdown(socket.SHUT_RDWR)


def asgi_round(server):
    def exercise(count):
        hangs = [threading.Thread(target=lambda: server.get("/hang")) for _ in range(max(2, count // 30))]
        for thread in hangs:   # answered 504 after --timeout 2 s, their coroutines cancelled
            thread.start()
        for i in range(count):
            assert server.get(f"/hello?{i}") == (200, b"hello %d" % i)
            assert server.request("POST", "/echo", body=b"e" * 5000) == (200, b"e" * 5000 + b"end")
            body = chunked([b"a" * 10, b"b" * 20])
            assert server.request("POST", "/echo", body=body, headers=[("Transfer-Encoding", "chunked")])[1].endswith(b"end")
            assert server.get("/stream") == (200, b"".join(b"chunk%d\n" % n for n in range(5)))
            assert server.get("/large") == (200, b"A" * 20000 + b"B" * 20000 + b"C" * 20000 + b"Z" * 70000)
            assert server.get("/raise")[0] == 500
            assert server.get("/bad-send")[0] == 500
            assert server.get("/nothing")[0] == 404
            leave_early(server, "/wait-disconnect")
        websocket_round(server, max(1, count // 5))
        for thread in hangs:
            thread.join(timeout=30)
    return exercise


def test_asgi_bridge_leaks_no_references(debug_binary, tmp_path):
    server = Server(debug_binary, tmp_path, "refleak_asgi:app", "--interface", "asgi")
    try:
        first, second = measure(server, asgi_round(server))
    finally:
        server.stop()
    print(f"ASGI: total refcount growth per round of {ROUNDS} x 8 requests and {ROUNDS // 5} x 5 websockets: {first}, {second}")
    assert second <= ALLOWED, f"the ASGI bridge leaks: +{first} then +{second} references a round\n{server.output()[-3000:]}"
    assert "Traceback" in server.output()   # the app's errors were logged, not lost
