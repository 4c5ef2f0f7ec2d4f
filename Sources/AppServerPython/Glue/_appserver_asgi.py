"""The Python side of the ASGI host: choosing the event loop, the lifespan protocol (once per worker,
clearer in Python), and the identity of a request's task. `receive` and `send` are native functions
(ASGIRequest.swift) and the request's coroutine is stepped natively (ASGITask.swift): no Python of
the server's runs per ASGI event. Loaded by appserver as the module `_appserver_asgi`. `log(level,
text)` functions write to the server's error log: 1 info, 2 warning, 3 error."""
from _appserver_runtime import format_exception

def asgi_new_loop(kind, wakeup_fd, on_wakeup, on_tick):
    """The event loop of a worker (uvloop when installed, unless `kind` says otherwise), reading
    `wakeup_fd` with `on_wakeup` and calling `on_tick` twice a second while it is not blocked."""
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
    loop.add_reader(wakeup_fd, on_wakeup)
    done = loop.create_future()
    done.set_result(None)

    async def heartbeat():
        while True:
            on_tick()
            await asyncio.sleep(0.5)

    loop.create_task(heartbeat())
    return loop, type(loop).__module__.split(".")[0], done

class RequestTask:
    """What asyncio.current_task() returns while a request's coroutine runs. appserver steps that
    coroutine itself (ASGITask.swift), as asyncio.Task would, but starts it at once and makes no
    Task; this object is its identity and has the Task methods that libraries use on the current
    task: anyio's cancel scopes, asyncio.timeout and TaskGroup (cancel, uncancel, cancelling).
    The stepping side reads _must_cancel and _cancel_message and sets _fut_waiter and _state."""

    # What the server sets or reads on every request are slots, which it reaches at their offsets
    # (ASGITask.swift: ~1,000 instructions a request fewer than the attribute protocol on an instance
    # dict). There is no __init__ either: the server makes each one with object.__new__ and sets
    # _coro, _loop, _context, _state = "PENDING", _must_cancel = False and _callbacks = None.
    __slots__ = ("_coro", "_loop", "_context", "_state", "_must_cancel", "_callbacks", "__dict__", "__weakref__")

    _fut_waiter = None
    _cancel_message = None
    _num_cancels_requested = 0
    _name = None

    def __repr__(self):
        return f"<RequestTask {self.get_name()} {self._state.lower()} coro={self._coro!r}>"

    def get_coro(self):
        return self._coro

    def get_loop(self):
        return self._loop

    def get_context(self):
        return self._context

    def get_name(self):
        return self._name or f"appserver-request-{id(self):x}"

    def set_name(self, value):
        self._name = str(value)

    def done(self):
        return self._state != "PENDING"

    def cancelled(self):
        return self._state == "CANCELLED"

    def cancelling(self):
        return self._num_cancels_requested

    def uncancel(self):
        if self._num_cancels_requested > 0:
            self._num_cancels_requested -= 1
        return self._num_cancels_requested

    def cancel(self, msg=None):
        if self._state != "PENDING":
            return False
        self._num_cancels_requested += 1
        if self._fut_waiter is not None and self._fut_waiter.cancel(msg=msg):
            return True   # the waiter's CancelledError is thrown into the coroutine when it wakes
        self._must_cancel = True
        self._cancel_message = msg
        return True

    def result(self):
        import asyncio
        if self._state == "PENDING":
            raise asyncio.InvalidStateError("Result is not set.")
        if self._state == "CANCELLED":
            raise asyncio.CancelledError()

    def exception(self):
        self.result()

    def add_done_callback(self, fn, *, context=None):
        if self._state != "PENDING":
            self._loop.call_soon(fn, self, context=context)
        else:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append((fn, context))

    def remove_done_callback(self, fn):
        kept = [(f, c) for f, c in self._callbacks or () if f != fn]
        removed = len(self._callbacks or ()) - len(kept)
        self._callbacks = kept
        return removed

    def get_stack(self, *, limit=None):
        from asyncio import base_tasks
        return base_tasks._task_get_stack(self, limit)

    def print_stack(self, *, limit=None, file=None):
        from asyncio import base_tasks
        return base_tasks._task_print_stack(self, limit, file)

    def _schedule_callbacks(self):
        callbacks, self._callbacks = self._callbacks, None
        for fn, context in callbacks:
            self._loop.call_soon(fn, self, context=context)

class Lifespan:
    """The ASGI lifespan protocol: startup before the worker accepts, shutdown when it stops."""

    def __init__(self, app, loop, state, log):
        import asyncio
        self.app, self.loop, self.state, self.log = app, loop, state, log
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
                self.log(3, "ASGI lifespan shutdown failed: " + (message.get("message") or ""))
            if not self.stopped.done():
                self.stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")

async def _lifespan_startup(loop, app, mode, state, log):
    """Runs the lifespan startup: (lifespan, outcome, text), the outcome ok, off, unsupported or
    failed; `lifespan` is None unless the app took part (and so gets the shutdown)."""
    if mode == "off":
        return None, "off", ""
    lifespan = Lifespan(app, loop, state, log)
    loop.create_task(lifespan.main())
    await lifespan.queue.put({"type": "lifespan.startup"})
    await lifespan.started
    if lifespan.failure is not None:
        return None, "failed", lifespan.failure
    if lifespan.answered:
        return lifespan, "ok", ""
    reason = lifespan.error or "the app returned without answering lifespan.startup"
    return None, ("unsupported" if mode == "auto" else "failed"), reason

# What asgi_shutdown resolves with its timeout, for asgi_serve (whichever of them comes first makes it).
_stop_requested = None

def _stop_request(loop):
    global _stop_requested
    if _stop_requested is None:
        _stop_requested = loop.create_future()
    return _stop_requested

def asgi_serve(loop, app, mode, state, started, log):
    """A worker's whole ASGI life on its loop: the lifespan startup, whose outcome it hands to
    `started(outcome, text)` (ok, off, unsupported or failed; on failed it returns), then serving
    until asgi_shutdown, then the lifespan shutdown.

    The loop runs it all as one main task, as `asyncio.run(server.serve())` does under Uvicorn, not
    `run_forever`: anyio takes the task that `run_until_complete` runs for the root task, and binds
    its worker threads to it (`anyio.to_thread.run_sync`, so Starlette's FileResponse, sync
    endpoints and run_in_threadpool, in lifespan startup too). With no such task it takes each
    request's task instead, and starts a thread for every call that ends with the request."""
    global _stop_requested

    async def serve():
        lifespan, outcome, text = await _lifespan_startup(loop, app, mode, state, log)
        started(outcome, text)
        if outcome == "failed":
            return
        timeout = await _stop_request(loop)
        if lifespan is not None and not lifespan.stopped.done():
            import asyncio
            await lifespan.queue.put({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(asyncio.shield(lifespan.stopped), timeout)
            except asyncio.TimeoutError:
                log(2, f"ASGI lifespan shutdown did not finish in {timeout} s")

    try:
        loop.run_until_complete(serve())
    finally:
        _stop_requested = None

def asgi_shutdown(loop, timeout):
    """Ends asgi_serve: the lifespan shutdown (if the app took part in startup), then the loop stops."""
    stop = _stop_request(loop)
    if not stop.done():
        stop.set_result(timeout)
