"""ASGI 3 in the workers: FastAPI, Starlette and Django apps from PyPI, on uvloop and plain asyncio."""
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import APPS, rss_kib, wait_until

LOOPS = ["uvloop", "asyncio"]


@pytest.fixture(params=LOOPS)
def loop(request):
    return request.param


def fastapi_server(serve, loop, tmp_path, *args, workers=1):
    return serve("fastapiapp:app", "--loop", loop, "--workers", str(workers), *args,
                 env={"MARKER_DIR": str(tmp_path)}, workers=workers)


def test_fastapi_json_params_and_errors(serve, loop, tmp_path):
    server = fastapi_server(serve, loop, tmp_path)
    assert f"ASGI event loop: {loop}" in server.log()
    r = requests.get(server.url + "/")
    assert r.status_code == 200 and r.json() == {"message": "Hello, World!"}
    assert r.headers["content-type"] == "application/json" and r.headers["server"] == "appserver"
    assert requests.get(server.url + "/items/42?q=x").json() == {"id": 42, "q": "x"}
    r = requests.get(server.url + "/items/notanumber")
    assert r.status_code == 422
    assert requests.get(server.url + "/missing").status_code == 404
    r = requests.get(server.url + "/error")
    assert r.status_code == 500
    # Starlette sends its 500 and then re-raises: the traceback is logged just after the response.
    wait_until(lambda: "Exception in ASGI application" in server.log() and "RuntimeError: boom from FastAPI" in server.log(),
               message="the traceback in the log")
    # The worker goes on serving after an error, on a new connection.
    assert requests.get(server.url + "/").status_code == 200


def test_sync_endpoints_keep_their_worker_threads(serve, loop, tmp_path):
    # anyio binds its worker threads to the task that the loop runs to completion: without one, it
    # bound each to the request's task, and every sync endpoint call started a thread of its own.
    server = fastapi_server(serve, loop, tmp_path)
    with requests.Session() as session:
        first = [session.get(server.url + "/thread").json() for _ in range(20)]
    assert {r["name"] for r in first} == {"AnyIO worker thread"}
    assert {r["serial"] for r in first} == {1}, first
    # Eight at once take up to eight threads; then those serve on, and no new one is started.
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda _: requests.get(server.url + "/thread").json()["serial"], range(32)))
    assert max(together) <= 8
    with requests.Session() as session:
        after = {session.get(server.url + "/thread").json()["serial"] for _ in range(20)}
    assert max(after) <= max(together), (together, after)
    # The threads end with the loop's main task: the worker stops in time, and the server with 0.
    server.stop()
    assert server.proc.returncode == 0


def test_http_scope(serve, tmp_path):
    # Behind a proxy that strips /api, as with Uvicorn: the scope's path and raw_path include the root path.
    server = serve("fastapiapp:app", "--root-path", "/api", env={"MARKER_DIR": str(tmp_path)})
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /scope?a=1&b=%20 HTTP/1.1\r\nHost: example.com\r\nX-Custom: Value\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    import json
    scope = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert scope["path"] == "/api/scope" and scope["raw_path"] == "/api/scope" and scope["root_path"] == "/api"
    assert scope["query_string"] == "a=1&b=%20" and scope["http_version"] == "1.1" and scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", server.port]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert ["host", "example.com"] in scope["headers"] and ["x-custom", "Value"] in scope["headers"]


def test_scope_client_is_each_connections_own_address(serve):
    """The worker keeps (host, port) tuples by address, in a table that a newer address overwrites and
    that is emptied past a bound: over 4,500 connections from 50 loopback addresses, each request's
    client is its own socket's address and port, and the rest of the scope is the request's."""
    server = serve("scopeecho:app", "--interface", "asgi")
    for i in range(4500):
        source = f"127.0.0.{1 + i % 50}"
        with socket.create_connection(("127.0.0.1", server.port), source_address=(source, 0)) as s:
            method, path = ("GET", "/a/b%20c") if i % 3 else ("PATCH", "/x")
            s.sendall(f"{method} {path}?q={i} HTTP/{'1.0' if i % 7 == 0 else '1.1'}\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            scope = json.loads(data.split(b"\r\n\r\n", 1)[1])
            assert scope["client"] == list(s.getsockname()), i
        assert scope["server"] == ["127.0.0.1", server.port]
        assert (scope["method"], scope["raw_path"], scope["query_string"]) == (method, path, f"q={i}")
        assert scope["path"] == ("/a/b c" if i % 3 else "/x") and scope["root_path"] == ""
        assert scope["http_version"] == ("1.0" if i % 7 == 0 else "1.1") and scope["scheme"] == "http"


def test_percent_decoded_path(serve, tmp_path):
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    r = requests.get(server.url + "/items/%34%32")
    assert r.json() == {"id": 42, "q": None}


def test_fastapi_upload_100_mib_with_bounded_memory(serve, loop, tmp_path):
    server = fastapi_server(serve, loop, tmp_path)
    worker = server.workers()[0]
    requests.get(server.url + "/")
    before = rss_kib(worker)
    size = 100 * 1024 * 1024

    def body():
        chunk = b"u" * (1 << 20)
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n" \
              b"Content-Type: application/octet-stream\r\n\r\n"
        for _ in range(size // len(chunk)):
            yield chunk
        yield b"\r\n--b--\r\n"

    r = requests.post(server.url + "/upload", data=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=120)
    assert r.status_code == 200 and r.json() == {"name": "big.bin", "size": size}
    growth = rss_kib(worker) - before
    assert growth < 32 * 1024, f"the worker grew by {growth} KiB for a 100 MiB upload"


def test_fastapi_echo_and_chunked_upload(serve, tmp_path):
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    payload = os.urandom(300_000)
    assert requests.post(server.url + "/echo", data=payload).content == payload
    r = requests.post(server.url + "/echo", data=iter([payload[:1000], payload[1000:]]))   # chunked
    assert r.content == payload


def test_streaming_response(serve, loop, tmp_path):
    server = fastapi_server(serve, loop, tmp_path)
    r = requests.get(server.url + "/stream?chunks=50&size=1000")
    assert r.headers["transfer-encoding"] == "chunked" and r.content == b"x" * 50_000


def test_streaming_1_gib_does_not_grow_memory(serve, tmp_path):
    """A 1 GiB StreamingResponse read slowly: backpressure keeps the worker's memory flat."""
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    worker = server.workers()[0]
    requests.get(server.url + "/")
    before = rss_kib(worker)
    total, peak = 0, 0
    with requests.get(server.url + f"/stream?chunks={1024}&size={1 << 20}", stream=True, timeout=120) as r:
        for i, chunk in enumerate(r.iter_content(1 << 20)):
            total += len(chunk)
            if i % 64 == 0:
                peak = max(peak, rss_kib(worker) - before)
    assert total == 1 << 30
    assert peak < 48 * 1024, f"the worker grew by {peak} KiB while streaming 1 GiB"


def test_background_task_runs_after_the_response(serve, tmp_path):
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    assert requests.post(server.url + "/task?name=bg1").json() == {"queued": "bg1"}
    wait_until(lambda: (tmp_path / "bg1").exists(), message="the background task")


def test_concurrent_requests_share_the_loop(serve, tmp_path):
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    results = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(requests.get(server.url + "/slow?s=1").status_code)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 20
    assert time.monotonic() - started < 10   # one worker, one loop: 20 sleeping requests at once, not in turn


def test_starlette_lifespan_state_and_shutdown(serve, loop, tmp_path):
    server = serve("starletteapp:app", "--loop", loop, env={"MARKER_DIR": str(tmp_path)})
    body = requests.get(server.url + "/state").json()
    assert body["greeting"] == "hello from lifespan" and body["started_by"] == body["pid"]
    assert "ASGI lifespan startup complete" in server.log()
    worker = server.workers()[0]
    server.stop()
    assert (tmp_path / f"shutdown-{worker}").exists(), "lifespan shutdown ran on the graceful stop"


def test_lifespan_startup_failure_ends_the_worker_and_backs_off(serve, tmp_path):
    server = serve("starletteapp:app", "--lifespan", "on", env={"MARKER_DIR": str(tmp_path), "FAIL_STARTUP": "1"}, wait=False)
    wait_until(lambda: server.log().count("ASGI lifespan startup failed") >= 2, timeout=20, message="two failed starts")
    log = server.log()
    assert "the database is not there" in log and "retrying in" in log
    time.sleep(2)
    # Backing off: a handful of attempts, not a crash loop, and the arbiter keeps running.
    assert server.log().count("Booting worker") <= 5 and server.proc.poll() is None


def test_client_leaving_mid_body_is_http_disconnect(serve, tmp_path):
    server = serve("starletteapp:app", env={"MARKER_DIR": str(tmp_path)})
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 300_000)
        time.sleep(0.5)
    wait_until(lambda: (tmp_path / "disconnected").exists(), message="http.disconnect reaching the app")
    assert int((tmp_path / "disconnected").read_text()) <= 300_000
    assert requests.post(server.url + "/upload", data=b"b" * 5000).text == "5000"


def test_django_asgi_project(serve):
    server = serve("djangoproj.asgi:application", "--chdir", str(APPS / "djangoproj"))
    assert "ASGI 'lifespan' protocol appears unsupported" in server.log()
    r = requests.get(server.url + "/?q=1")
    assert r.json() == {"message": "Hello from Django", "path": "/", "q": "1"}
    r = requests.post(server.url + "/upload", data={"name": "value"})
    assert r.json()["name"] == "value" and r.json()["method"] == "POST"
    assert requests.get(server.url + "/nope").status_code == 404


def test_interface_auto_and_forced(serve, tmp_path):
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    assert "ASGI event loop" in server.log()
    wsgi = serve("plain:app", "--interface", "auto")
    assert "ASGI event loop" not in wsgi.log() and requests.get(wsgi.url + "/").content == b"Hello, World!"


def test_asgi_worker_obeys_max_requests_and_graceful_stop(serve, tmp_path):
    server = serve("fastapiapp:app", "--max-requests", "20", env={"MARKER_DIR": str(tmp_path)})
    first = server.workers()
    for _ in range(60):
        assert requests.get(server.url + "/").status_code == 200
    wait_until(lambda: server.workers() and server.workers() != first, message="a recycled worker")
    # The 60th request recycled the third worker. One more request is served only once the fourth has
    # booted, so the slow request below is accepted at once. Otherwise it can wait in the backlog while the
    # fourth worker boots, and a stop then resets it, as Gunicorn's stop does to connections never accepted.
    assert requests.get(server.url + "/").status_code == 200
    result = {}
    t = threading.Thread(target=lambda: result.update(r=requests.get(server.url + "/slow?s=2", timeout=20)))
    t.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    t.join()
    assert result["r"].status_code == 200 and result["r"].json() == {"slept": 2.0}


def test_access_log_for_asgi(serve, tmp_path):
    server = serve("fastapiapp:app", "--access-logfile", "-", env={"MARKER_DIR": str(tmp_path)})
    requests.get(server.url + "/items/7", headers={"User-Agent": "asgi-test"})
    wait_until(lambda: '"GET /items/7 HTTP/1.1" 200' in server.log(), message="the access log line")
    assert "asgi-test" in server.log()


# websockets, driven by the `websockets` client (sync API)

def ws_url(server, path="/ws"):
    return f"ws://127.0.0.1:{server.port}{path}"


def test_websocket_echo_text_binary_large_and_fragmented(serve, loop, tmp_path):
    from websockets.sync.client import connect
    server = serve("starletteapp:app", "--loop", loop, env={"MARKER_DIR": str(tmp_path)})
    with connect(ws_url(server), subprotocols=["echo"], max_size=None) as ws:
        assert ws.subprotocol == "echo"
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send("héllo wörld ✓")
        assert ws.recv(timeout=5) == "héllo wörld ✓"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=5) == b"\x00\x01\x02"
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send(["frag", "mented ", "message"])   # one message in three frames
        assert ws.recv(timeout=5) == "fragmented message"
        assert ws.ping().wait(5), "pong for our ping"
    wait_until(lambda: (tmp_path / "ws-closed").exists(), message="websocket.disconnect")
    assert (tmp_path / "ws-closed").read_text() == "1000"


def test_websocket_close_codes_both_ways(serve, tmp_path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    server = serve("starletteapp:app", env={"MARKER_DIR": str(tmp_path)})
    with connect(ws_url(server)) as ws:
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 4001 and closed.value.rcvd.reason == "asked to"
    with connect(ws_url(server)) as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
        ws.close(code=4002, reason="client leaves")
    wait_until(lambda: (tmp_path / "ws-closed").exists() and (tmp_path / "ws-closed").read_text() == "4002",
               message="the client's close code reaching the app")


def test_websocket_rejected_before_accept_is_403(serve, tmp_path):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    server = serve("starletteapp:app", env={"MARKER_DIR": str(tmp_path)})
    with pytest.raises(InvalidStatus) as rejected:
        connect(ws_url(server, "/reject"))
    assert rejected.value.response.status_code == 403
    assert requests.get(server.url + "/state").status_code == 200


def test_websocket_message_over_the_limit_closes_with_1009(serve, tmp_path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    server = serve("starletteapp:app", "--ws-max-size", "1000", env={"MARKER_DIR": str(tmp_path)})
    with connect(ws_url(server)) as ws:
        ws.send("x" * 500)
        assert ws.recv(timeout=5) == "x" * 500
        ws.send("y" * 5000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1009


def test_websocket_gets_1012_on_graceful_stop(serve, tmp_path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    server = serve("starletteapp:app", env={"MARKER_DIR": str(tmp_path)})
    with connect(ws_url(server)) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1012
    assert server.proc.wait(15) == 0


@pytest.mark.skipif(__import__("shutil").which("wrk") is None, reason="wrk not installed")
def test_asgi_worker_memory_stays_flat_under_load(serve, tmp_path):
    """Each request's objects are freed (a reference cycle once kept every request alive: 1.6 KB each)."""
    import re
    import subprocess
    server = serve("fastapiapp:app", env={"MARKER_DIR": str(tmp_path)})
    worker = server.workers()[0]

    def load():
        out = subprocess.run(["wrk", "-t1", "-c32", "-d3s", server.url + "/"], capture_output=True, text=True, timeout=60).stdout
        return int(re.search(r"(\d+) requests in", out).group(1))

    load()   # warm-up: caches, arenas
    before = rss_kib(worker)
    served = load() + load()
    growth = rss_kib(worker) - before
    assert served > 5000, "too few requests to tell"
    assert growth * 1024 / served < 100, f"{growth} KiB more after {served} requests"


# Path Send (http.response.pathsend): Starlette's FileResponse hands the server a path, and the
# worker's I/O thread sends the file with sendfile(2); the app never reads it.

def pathsend_files(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(os.urandom(3_000_000))
    (files / "small.txt").write_text("hello, file\n" * 20)
    return files


def opened_by_python(files):
    opened = files / "opened"
    return opened.read_text().split() if opened.exists() else []


def test_a_file_response_is_sent_by_path_through_middleware(serve, loop, tmp_path):
    files = pathsend_files(tmp_path)
    server = serve("pathsend:app", "--loop", loop, "--chdir", str(files), "--pythonpath", str(APPS), env={"FILES_DIR": str(files)})
    assert requests.get(server.url + "/extensions").json() == ["http.response.pathsend"]
    big = (files / "big.bin").read_bytes()
    with requests.Session() as session:   # one keep-alive connection for all of them
        for _ in range(3):
            r = session.get(server.url + "/files/big.bin")
            assert r.status_code == 200 and r.content == big
            assert r.headers["content-length"] == str(len(big)) and r.headers["x-middleware"] == "seen"
        # GZipMiddleware leaves a file sent by path uncompressed.
        r = session.get(server.url + "/relative/small.txt", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.text == "hello, file\n" * 20 and "content-encoding" not in r.headers
        r = session.head(server.url + "/files/big.bin")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(big)) and r.content == b""
        # A range is Starlette's to cut: it streams that part as body messages.
        r = session.get(server.url + "/files/big.bin", headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == big[1000:2000]
        assert session.get(server.url + "/extensions").status_code == 200
    # Only the range was read by Python; the whole files never were.
    assert opened_by_python(files) == [str(files / "big.bin")]


def test_no_sendfile_takes_the_extension_away(serve, tmp_path):
    files = pathsend_files(tmp_path)
    server = serve("pathsend:app", "--no-sendfile", env={"FILES_DIR": str(files)})
    assert requests.get(server.url + "/extensions").json() == []
    assert requests.get(server.url + "/files/big.bin").content == (files / "big.bin").read_bytes()
    assert opened_by_python(files) == [str(files / "big.bin")]   # Starlette read it itself


def test_bad_path_send_messages_get_a_clear_error_and_the_worker_serves_on(serve, tmp_path):
    files = pathsend_files(tmp_path)
    server = serve("pathsend:raw", env={"FILES_DIR": str(files)})
    cases = [
        ({"path": str(files / "missing.bin")}, "FileNotFoundError: [Errno 2] No such file or directory: '%s'" % (files / "missing.bin")),
        ({"path": str(files)}, "IsADirectoryError: [Errno 21] Is a directory: '%s'" % files),
        ({"path": "/dev/null"}, "OSError: [Errno 22] Invalid argument: '/dev/null'"),
        ({"order": "before-start"}, "RuntimeError: http.response.pathsend sent before http.response.start"),
        ({"order": "not-a-str"}, "TypeError"),
    ]
    for query, error in cases:
        r = requests.get(server.url + "/", params=query)
        assert r.status_code == 500, query
        wait_until(lambda: error in server.log(), message=f"'{error}' in the log")
    # After a body chunk the head is out, framed for a body of the app's: the response is cut off.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url + "/", params={"order": "after-body"})
    wait_until(lambda: "http.response.pathsend sent after http.response.body: it must be the whole body" in server.log(),
               message="the error for a path sent after a body")
    # A second path after the response was whole is the app's error; the response itself went out.
    r = requests.get(server.url + "/", params={"order": "twice"})
    assert r.status_code == 200 and r.text == "hello, file\n" * 20
    wait_until(lambda: "http.response.pathsend sent after the response was complete" in server.log(), message="the second path's error")
    assert requests.get(server.url + "/").text == "hello, file\n" * 20
    assert len(server.workers()) == 1 and server.log().count("Booting worker") == 1


def test_a_path_sent_under_a_content_length_is_framed_by_it(serve, tmp_path):
    files = pathsend_files(tmp_path)
    server = serve("pathsend:raw", env={"FILES_DIR": str(files)})
    small = (files / "small.txt").read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        # The app says 10 bytes: 10 go, and the connection carries the next request.
        s.sendall(b"GET /?length=10 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    first, second = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert b"content-length: 10\r\n" in first and first.endswith(b"\r\n\r\n" + small[:10])
    assert second.endswith(b"\r\n\r\n" + small) and b"Content-Length: %d\r\n" % len(small) in second
    # The app says more than the file holds: what there is goes, then the server closes the
    # connection (the loop ends on its EOF, not the timeout), so a short body is not taken for a whole one.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /?length=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b"content-length: 100000\r\n" in data and data.endswith(b"\r\n\r\n" + small)


def test_clients_leaving_mid_file_leave_no_descriptor_open(serve, tmp_path):
    files = pathsend_files(tmp_path)
    (files / "huge.bin").write_bytes(b"x" * (64 << 20))
    server = serve("pathsend:raw", env={"FILES_DIR": str(files)})
    worker = server.workers()[0]

    def open_copies():
        count = 0
        for fd in os.listdir(f"/proc/{worker}/fd"):
            try:
                count += os.readlink(f"/proc/{worker}/fd/{fd}") == str(files / "huge.bin")
            except OSError:
                pass
        return count

    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /?path=%s HTTP/1.1\r\nHost: x\r\n\r\n" % str(files / "huge.bin").encode())
            assert s.recv(1 << 20)   # some of it, then the client goes
    wait_until(lambda: open_copies() == 0, message="the worker to close the files of the clients that left")
    assert requests.get(server.url + "/").text == "hello, file\n" * 20
