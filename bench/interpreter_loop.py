"""The ceiling loop, run when this module is imported: an app (LOOP_MODULE, its `app`) called LOOP_CALLS
times over the interface LOOP_INTERFACE (wsgi or asgi), a fresh environ or scope each call, no sockets.
Then it serves that app as `app`. bench/interpreter.py imports it in Debian's python3 and in the server's
own interpreter (as the app to serve), so the same Python code runs in both and only the interpreter's
build differs. The loop runs on a thread of its own, where no event loop is running in either case."""
import asyncio
import importlib
import os
import sys
import threading
import time

import ceiling
import ceiling_asgi

MODULE = os.environ["LOOP_MODULE"]
INTERFACE = os.environ["LOOP_INTERFACE"]
CALLS = int(os.environ["LOOP_CALLS"])
inner = importlib.import_module(MODULE).app


async def asgi_loop():
    # The app's lifespan first, as a server runs it: its state goes into every scope (shallow copies).
    state, shutdown = await ceiling_asgi.start_lifespan(inner)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    for _ in range(CALLS):
        await inner(ceiling_asgi.scope(state), receive, send)
    await shutdown()


def run():
    if INTERFACE == "wsgi":
        for _ in range(CALLS):
            ceiling.call(inner)
        return
    try:   # the loop the server and the peers take when it is installed
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asgi_loop())
    finally:
        loop.close()


started = time.perf_counter()
thread = threading.Thread(target=run)
thread.start()
thread.join()
# For the wall-clock comparison (bench/interpreter.py --wall): the calls a second, on standard error.
print(f"interpreter_loop: {CALLS / (time.perf_counter() - started):.1f} calls/s", file=sys.stderr, flush=True)
app = inner
