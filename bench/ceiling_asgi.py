"""The ASGI ceiling: the app awaited in a loop on one event loop, a fresh scope each call, no sockets."""
import asyncio
import importlib
import sys
import time

sys.path.insert(0, sys.argv[1])
app = getattr(importlib.import_module(sys.argv[2]), "app")
body = b"a" * int(sys.argv[3]) if len(sys.argv) > 3 else b""


async def receive():
    return {"type": "http.request", "body": body, "more_body": False}


async def send(message):
    pass


def scope():
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST" if body else "GET", "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}


async def main():
    for _ in range(2000):
        await app(scope(), receive, send)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3:
        for _ in range(1000):
            await app(scope(), receive, send)
        n += 1000
    print(f"{n / (time.perf_counter() - started):.0f}")

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
