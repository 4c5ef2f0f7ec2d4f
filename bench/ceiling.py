"""The ceiling: the app called in a loop in one process, a fresh environ each call, no sockets.
Usage: ceiling.py APPS_DIR MODULE [BODY_BYTES]; bench/interpreter_loop.py calls `call` too."""
import importlib
import io
import sys
import time


def start_response(status, headers, exc_info=None):
    return None


def call(app, body=b""):
    """One WSGI call of `app` as a server makes it, its body iterated and closed."""
    environ = {
        "REQUEST_METHOD": "POST" if body else "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk", "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    result = app(environ, start_response)
    for _ in result:
        pass
    if hasattr(result, "close"):
        result.close()


def main():
    sys.path.insert(0, sys.argv[1])
    app = getattr(importlib.import_module(sys.argv[2]), "app")
    body = b"a" * int(sys.argv[3]) if len(sys.argv) > 3 else b""
    for _ in range(2000):
        call(app, body)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3:
        for _ in range(1000):
            call(app, body)
        n += 1000
    print(f"{n / (time.perf_counter() - started):.0f}")


if __name__ == "__main__":
    main()
