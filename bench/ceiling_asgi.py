"""The ASGI ceiling: the app awaited in a loop on one event loop, a fresh scope each call, no sockets.
Usage: ceiling_asgi.py APPS_DIR MODULE [BODY_BYTES]. The app's lifespan runs first, as a server runs it,
and its state goes into every scope (a shallow copy each call), so an app that sets state at startup
(bench/apps/starlette_routes.py) has a ceiling too. bench/interpreter_loop.py uses the same pieces."""
import asyncio
import importlib
import sys
import time


async def start_lifespan(app):
    """Runs the app's lifespan startup; returns its state and a coroutine function that shuts it down.
    An app without lifespan support (it raises or returns) gets an empty state, as servers give it."""
    state, started, messages = {}, asyncio.Event(), asyncio.Queue()
    messages.put_nowait({"type": "lifespan.startup"})

    async def send(message):
        if message["type"].startswith("lifespan.startup"):
            started.set()

    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                                          "state": state}, messages.get, send))
    waiter = asyncio.ensure_future(started.wait())
    await asyncio.wait([lifespan, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()

    async def shutdown():
        messages.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait([lifespan], timeout=5)
    return state, shutdown


def scope(state, body=b""):
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST" if body else "GET", "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": dict(state)}


async def main(app, body):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    state, shutdown = await start_lifespan(app)
    for _ in range(2000):
        await app(scope(state, body), receive, send)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3:
        for _ in range(1000):
            await app(scope(state, body), receive, send)
        n += 1000
    print(f"{n / (time.perf_counter() - started):.0f}")
    await shutdown()


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(getattr(importlib.import_module(sys.argv[2]), "app"),
                     b"a" * int(sys.argv[3]) if len(sys.argv) > 3 else b""))
