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


def slow_get(port, target):
    """GET with a small receive buffer, read only after a pause: the response queues in the server."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
        return read_response(s.makefile("rb"))


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
