"""A WSGI app that takes every path of the server's WSGI bridge, for the reference-leak test. Runs on
Debian's debug interpreter (python3.11-dbg), which has sys.gettotalrefcount(); only the standard
library."""
import gc
import sys
import tempfile

_file = tempfile.NamedTemporaryFile(prefix="appserver-refleak-", suffix=".bin")
_file.write(b"f" * 5000)
_file.flush()


def _headers():
    # Repeated and non-ASCII (latin-1) header values, as WSGI native strings.
    return [("Content-Type", "text/plain; charset=utf-8"), ("X-Repeat", "1"), ("X-Repeat", "2"),
            ("X-Latin", "caf\u00e9"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/refs":
        gc.collect()
        body = str(sys.gettotalrefcount()).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/hello":
        seen = [environ.get("HTTP_X_MULTI", ""), environ.get("HTTP_X_LATIN", ""), environ.get("QUERY_STRING")]
        start_response("200 OK", _headers())
        return [("|".join(seen)).encode("latin-1")]
    if path == "/stream":
        start_response("200 OK", _headers())
        return (b"chunk%d\n" % i for i in range(5))
    if path == "/large":
        # Chunks large enough to go out uncopied (the server holds each until it is written).
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if environ["QUERY_STRING"] == "list":
            return [b"L" * 20000, b"M" * 70000]
        return (bytes([65 + i]) * 20000 for i in range(3))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        handle = open(_file.name, "rb")
        return environ["wsgi.file_wrapper"](handle, 1024)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"by write()")
        return []
    if path == "/excinfo":
        try:
            raise ValueError("handled by the app")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]
    if path == "/excinfo-late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"head sent")
        try:
            raise KeyError("late")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())   # raises again: the server aborts
        return []
    if path == "/read":
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read()
        environ["wsgi.errors"].write("")   # an empty write: nothing logged, the path taken
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d:%d" % (len(first), len(rest))]
    if path == "/raise":
        raise RuntimeError("the app failed (expected by the refleak test)")
    if path == "/close":
        class Body:
            def __iter__(self):
                return iter([b"closing body"])

            def close(self):
                pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
