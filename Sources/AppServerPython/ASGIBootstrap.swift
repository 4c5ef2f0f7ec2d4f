/// The Python side of the ASGI host: choosing the event loop, the lifespan protocol (once per worker,
/// clearer in Python), and the coroutine that runs one request. `receive`, `send` and `done` are
/// native functions (ASGIRequest.swift): no Python runs per ASGI event.
let asgiBootstrapSource = #"""
def is_asgi(app):
    import asyncio
    return asyncio.iscoroutinefunction(app) or asyncio.iscoroutinefunction(getattr(app, "__call__", None))

def asgi_new_loop(kind, wakeup_fd):
    import asyncio
    loop = None
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop is not installed in the app's environment") from None
        else:
            loop = uvloop.new_event_loop()
    if loop is None:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.add_reader(wakeup_fd, _asgi_wakeup)
    done = loop.create_future()
    done.set_result(None)

    async def heartbeat():
        while True:
            _asgi_tick()
            await asyncio.sleep(0.5)

    loop.create_task(heartbeat())
    return loop, type(loop).__module__.split(".")[0], done

async def asgi_run(app, scope, receive, send, done):
    try:
        await app(scope, receive, send)
    except BaseException as exc:
        done(exc)
    else:
        done(None)

class Lifespan:
    """The ASGI lifespan protocol: startup before the worker accepts, shutdown when it stops."""

    def __init__(self, app, loop, state):
        import asyncio
        self.app, self.loop, self.state = app, loop, state
        self.queue = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        self.answered = False
        self.failure = None
        self.error = None

    async def main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.queue.get, self.send)
        except BaseException as exc:
            self.error = format_exception(exc)
        finally:
            for future in (self.started, self.stopped):
                if not future.done():
                    future.set_result(None)

    async def send(self, message):
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self.answered = True
            if kind == "lifespan.startup.failed":
                self.failure = message.get("message") or "lifespan.startup.failed"
            if not self.started.done():
                self.started.set_result(None)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind == "lifespan.shutdown.failed":
                _server_log(2, "ASGI lifespan shutdown failed: " + (message.get("message") or ""))
            if not self.stopped.done():
                self.stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")

_lifespan = None

def asgi_startup(loop, app, mode, state):
    """Runs the lifespan startup; returns (outcome, text): ok, off, unsupported or failed."""
    global _lifespan
    if mode == "off":
        return "off", ""
    lifespan = Lifespan(app, loop, state)

    async def start():
        loop.create_task(lifespan.main())
        await lifespan.queue.put({"type": "lifespan.startup"})
        await lifespan.started

    loop.run_until_complete(start())
    if lifespan.failure is not None:
        return "failed", lifespan.failure
    if lifespan.answered:
        _lifespan = lifespan
        return "ok", ""
    reason = lifespan.error or "the app returned without answering lifespan.startup"
    return ("unsupported" if mode == "auto" else "failed"), reason

def asgi_shutdown(loop, timeout):
    """Runs the lifespan shutdown (if the app took part in startup), then stops the loop."""
    import asyncio

    async def stop():
        if _lifespan is not None and not _lifespan.stopped.done():
            await _lifespan.queue.put({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(asyncio.shield(_lifespan.stopped), timeout)
            except asyncio.TimeoutError:
                _server_log(1, f"ASGI lifespan shutdown did not finish in {timeout} s")
        loop.stop()

    loop.create_task(stop())
"""#
