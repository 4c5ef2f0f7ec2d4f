"""Large response chunks go to the socket from the app's own bytes objects, not a copy
(ForeignBuffer): they must arrive intact while the client reads slowly and the app reuses the memory
it let go of, under every framing, and the server must let go of each chunk once it is written."""
import socket
import sys
import time

import pytest

from conftest import APPS, read_response, wait_until

sys.path.insert(0, str(APPS))
from bigbody import SHARED, chunk  # noqa: E402  (the app's own recipe for the bytes it sends)

# Below, at and above the size from which chunks go out uncopied (16 KiB), mixed with small ones.
SIZES = [100, 16383, 16384, 65536, 70000, 3, 1 << 20, 200000] + [65536, 300000] * 8
MODES = {"wsgi": ("bigbody:wsgi",), "wsgi-threads": ("bigbody:wsgi", "--threads", "4"),
         "asgi": ("bigbody:asgi", "--interface", "asgi")}


def slow_get(port, target, version="1.1", close=False):
    """GET with a small receive buffer, read only after a pause: the response queues in the server.
    With `close`, the request asks for `Connection: close`: the body is read to the end of the
    connection when it has no length, and the connection must end right after the response."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        connection = "Connection: close\r\n" if close else ""
        s.sendall(f"GET {target} HTTP/{version}\r\nHost: x\r\n{connection}\r\n".encode())
        time.sleep(0.3)
        reader = s.makefile("rb")
        status, headers, body = read_response(reader)
        if close:
            rest = reader.read()
            if "content-length" in headers or "transfer-encoding" in headers:
                assert rest == b"", f"{len(rest)} bytes after the response"
            else:
                body = rest
        return status, headers, body


@pytest.mark.parametrize("mode", MODES)
def test_large_chunks_arrive_intact_under_every_framing(serve, mode):
    server = serve(*MODES[mode])
    expected = b"".join(chunk(i, size) for i, size in enumerate(SIZES))
    sizes = ",".join(map(str, SIZES))
    forms = ["iter", "list"] if mode.startswith("wsgi") else ["iter"]
    for form in forms:
        for length, body in [("exact", expected), ("short", expected[:-1000]), ("none", expected)]:
            status, headers, got = slow_get(server.port, f"/body?sizes={sizes}&length={length}&form={form}")
            assert status == "HTTP/1.1 200 OK", (form, length)
            # A list's length is known: the server gives it a Content-Length itself.
            assert ("transfer-encoding" in headers) == (length == "none" and form == "iter"), headers
            assert len(got) == len(body) and got == body, (form, length, len(got))
    # A single chunk over the limit alone, the whole body in one bytes object.
    status, _, got = slow_get(server.port, "/body?sizes=300000")
    assert got == chunk(0, 300000)
    log = server.log()
    assert "Error" not in log, log


@pytest.mark.parametrize("mode", MODES)
def test_a_response_that_closes_its_connection_reaches_a_slow_reader_whole(serve, mode):
    """The connection closes only once all of the response has left the server: with the reader
    paused, most of it is still waiting in the server when the response ends (the case of every
    request nginx's uwsgi_pass sends, and of a proxy_pass without upstream keep-alive)."""
    server = serve(*MODES[mode])
    sizes = [65536, 300000] * 4
    expected = b"".join(chunk(i, size) for i, size in enumerate(sizes))
    target = f"/body?sizes={','.join(map(str, sizes))}&form=iter"
    for version, length in [("1.1", "exact"), ("1.1", "none"), ("1.0", "exact"), ("1.0", "none")]:
        status, headers, got = slow_get(server.port, f"{target}&length={length}", version=version, close=True)
        assert status.endswith("200 OK") and len(got) == len(expected) and got == expected, (version, length, len(got))
    # Small responses close at once (nothing waits in the server): each still arrives whole.
    for _ in range(5):
        status, _, got = slow_get(server.port, "/body?sizes=100&length=exact&form=iter", close=True)
        assert got == chunk(0, 100)


@pytest.mark.parametrize("mode", MODES)
def test_many_small_chunks_past_the_output_budget_reach_a_slow_reader(serve, mode):
    """4.8 MB in 12 KB chunks (copied), more than the 1 MiB the app may queue: it waits, and must be woken
    although most of its writes carry no promise of their own (one per 256 KiB gives back the bytes)."""
    server = serve(*MODES[mode])
    sizes = [12000] * 400
    expected = b"".join(chunk(i, size) for i, size in enumerate(sizes))
    for length in ("exact", "none"):
        status, _, got = slow_get(server.port, f"/body?sizes={','.join(map(str, sizes))}&length={length}&form=iter")
        assert status == "HTTP/1.1 200 OK" and len(got) == len(expected) and got == expected, (length, len(got))


@pytest.mark.parametrize("mode", MODES)
def test_the_server_lets_go_of_written_chunks(serve, mode):
    server = serve(*MODES[mode])

    def refs():
        return int(slow_get(server.port, "/refs")[2])

    baseline = refs()
    for count in (1, 5, 16):
        status, _, got = slow_get(server.port, f"/shared?count={count}")
        assert got == SHARED * count
    # Each written chunk's reference is dropped by the next request on the app's side.
    wait_until(lambda: refs() == baseline, timeout=10, message=f"sys.getrefcount(SHARED) back to {baseline}")
