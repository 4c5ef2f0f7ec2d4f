"""A plain WSGI app with one route per behaviour the end-to-end tests check."""
import hashlib
import json
import os
import sys
import threading
import time
from wsgiref.validate import validator

CLOSED_MARKER = os.environ.get("CLOSED_MARKER", "/tmp/appserver-closed")


def respond(start_response, body, status="200 OK", content_type="text/plain"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class ClosingBody:
    """An iterable whose close() leaves a mark, to prove the server always calls it."""

    def __init__(self, chunks, fail=False):
        self.chunks = chunks
        self.fail = fail

    def __iter__(self):
        for chunk in self.chunks:
            yield chunk
        if self.fail:
            raise RuntimeError("failure in the middle of the body")

    def close(self):
        with open(CLOSED_MARKER, "a") as f:
            f.write("closed\n")


_meetings = {}
_meetings_lock = threading.Lock()


def meet(key, parties):
    """Waits (the GIL released) until `parties` requests with this key are in the app at once."""
    with _meetings_lock:
        barrier = _meetings.setdefault(key, threading.Barrier(parties, timeout=20))
    try:
        barrier.wait()
        return True
    except threading.BrokenBarrierError:
        return False


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        return respond(start_response, b"Hello, World!")
    if path == "/pid":
        return respond(start_response, str(os.getpid()).encode())
    if path.startswith("/environ"):
        data = {k: v for k, v in environ.items() if isinstance(v, str)}
        data["wsgi.version"] = list(environ["wsgi.version"])
        data["wsgi.multithread"] = environ["wsgi.multithread"]
        data["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        data["wsgi.run_once"] = environ["wsgi.run_once"]
        data["has_input"] = hasattr(environ["wsgi.input"], "read")
        data["has_errors"] = hasattr(environ["wsgi.errors"], "write")
        data["keys"] = sorted(environ)
        data["sizeof"] = sys.getsizeof(environ)
        data["sys.prefix"] = sys.prefix
        return respond(start_response, json.dumps(data).encode(), content_type="application/json")
    if path == "/echo":
        size = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(size)) if size else b"".join(iter(lambda: environ["wsgi.input"].read(8192), b""))
        return respond(start_response, json.dumps({"length": len(body), "md5": hashlib.md5(body).hexdigest()}).encode())
    if path == "/count":
        # Streams the body in 64 KiB reads: memory stays flat however large the upload.
        stream, total, digest = environ["wsgi.input"], 0, hashlib.md5()
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            total += len(chunk)
            digest.update(chunk)
        return respond(start_response, json.dumps({"length": total, "md5": digest.hexdigest()}).encode())
    if path == "/lines":
        stream = environ["wsgi.input"]
        first = stream.readline()
        limited = stream.readline(3)
        rest_of_line = stream.readline()
        remaining = stream.readlines()
        return respond(start_response, json.dumps([first.decode(), limited.decode(), rest_of_line.decode(), [l.decode() for l in remaining]]).encode())
    if path == "/iterlines":
        lines = [line.decode() for line in environ["wsgi.input"]]
        return respond(start_response, json.dumps(lines).encode())
    if path == "/error":
        raise ValueError("boom from the app")
    if path == "/error-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"partial", b" and more"], fail=True)
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("replaced")
        except KeyError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced by the error page"]
    if path == "/twice":
        start_response("200 OK", [])
        try:
            start_response("200 OK", [])
        except AssertionError:
            return [b"second call refused"]
        return [b"second call allowed"]
    if path == "/slow":
        seconds = float(environ.get("QUERY_STRING", "").partition("=")[2] or 3)
        time.sleep(seconds)
        return respond(start_response, b"slow done")
    if path == "/meet":
        # /meet?KEY&N: answers once N requests with KEY wait here together (500 after 20 s).
        key, _, parties = environ["QUERY_STRING"].partition("&")
        if meet(key, int(parties)):
            return respond(start_response, b"met")
        return respond(start_response, b"alone", status="500 Internal Server Error")
    if path == "/waiting":
        # /waiting?KEY: how many requests wait in /meet?KEY now.
        with _meetings_lock:
            barrier = _meetings.get(environ["QUERY_STRING"])
        return respond(start_response, str(barrier.n_waiting if barrier else 0).encode())
    if path == "/hang":
        while True:
            time.sleep(1)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([65 + i % 26]) * 65536 for i in range(16))
    if path == "/one-chunk":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (chunk for chunk in [b"", b"only chunk"])
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"a", b"b", b"c"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"directly ")
        return [b"then returned"]
    if path == "/file":
        f = open(os.environ["FILE_TO_SEND"], "rb")
        f.seek(int(environ.get("QUERY_STRING") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 32768)
    if path == "/write-then-file":
        # Bytes from write() on their way to the I/O thread, then a file sent by sendfile after them.
        f = open(os.environ["FILE_TO_SEND"], "rb")
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        write(b"written first:")
        return environ["wsgi.file_wrapper"](f, 32768)
    if path == "/log":
        environ["wsgi.errors"].write("a line for wsgi.errors\n")
        return respond(start_response, b"logged")
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "line\r\nbreak")])
        return [b"never"]
    return respond(start_response, b"not found", status="404 Not Found")


application = app
validated = validator(app)
