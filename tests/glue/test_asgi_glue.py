import asyncio
import os

import pytest


@pytest.fixture
def loop_parts(glue):
    """A loop made by asgi_new_loop (plain asyncio), its wake-up pipe, and what the natives saw."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    seen = {"wakeups": 0, "ticks": 0}

    def on_wakeup():
        seen["wakeups"] += 1
        while True:
            try:
                if not os.read(read_fd, 256):
                    break
            except BlockingIOError:
                break

    def on_tick():
        seen["ticks"] += 1

    loop, name, done = glue["asgi"].asgi_new_loop("asyncio", read_fd, on_wakeup, on_tick)
    yield loop, name, done, write_fd, seen
    loop.remove_reader(read_fd)
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    os.close(read_fd)
    os.close(write_fd)


def run_briefly(loop, seconds=0.05):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_new_loop_watches_the_pipe_and_ticks(loop_parts):
    loop, name, done, write_fd, seen = loop_parts
    assert name == "asyncio" and done.done() and done.result() is None
    run_briefly(loop)
    assert seen["ticks"] == 1 and seen["wakeups"] == 0
    os.write(write_fd, b"x")
    run_briefly(loop)
    assert seen["wakeups"] == 1


def test_uvloop_when_asked_and_missing_is_a_clear_error(glue, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        glue["asgi"].asgi_new_loop("uvloop", 0, None, None)


def identity(glue, loop):
    async def nothing():
        pass
    coroutine = nothing()
    # As the server makes one (ASGITask.swift): object.__new__, then the slots.
    kind = glue["asgi"].RequestTask
    task = kind.__new__(kind)
    task._coro, task._loop, task._context = coroutine, loop, None
    task._state, task._must_cancel, task._callbacks = "PENDING", False, None
    return task, coroutine


def test_request_task_cancel_marks_and_counts(glue, loop_parts):
    loop = loop_parts[0]
    task, coroutine = identity(glue, loop)
    assert not task.done() and task.cancelling() == 0
    assert task.cancel("why") is True
    assert task._must_cancel and task._cancel_message == "why" and task.cancelling() == 1
    assert task.uncancel() == 0
    task._state = "CANCELLED"
    assert task.cancel() is False and task.cancelled() and task.done()
    with pytest.raises(asyncio.CancelledError):
        task.result()
    coroutine.close()


def test_request_task_takes_weak_references_and_other_attributes(glue, loop_parts):
    # Slots keep what the server reaches by offset; libraries still key tasks weakly (anyio's task
    # states) and may hang their own attributes on them.
    import weakref
    task, coroutine = identity(glue, loop_parts[0])
    states = weakref.WeakKeyDictionary({task: "state"})
    task.library_mark = 1
    assert states[task] == "state" and task.library_mark == 1
    assert task.get_context() is None and not task._must_cancel and task._callbacks is None
    coroutine.close()


def test_request_task_cancels_what_it_waits_for(glue, loop_parts):
    loop = loop_parts[0]
    task, coroutine = identity(glue, loop)
    waiter = loop.create_future()
    task._fut_waiter = waiter
    assert task.cancel("stop") is True
    assert waiter.cancelled() and not task._must_cancel
    coroutine.close()


def test_request_task_done_callbacks(glue, loop_parts):
    loop = loop_parts[0]
    task, coroutine = identity(glue, loop)
    called = []
    task.add_done_callback(called.append)
    task.add_done_callback(lambda t: called.append("second"))
    assert task.remove_done_callback(called.append) == 1
    task.add_done_callback(called.append)
    with pytest.raises(asyncio.InvalidStateError):
        task.result()
    task._state = "FINISHED"
    task._schedule_callbacks()
    run_briefly(loop, 0)
    assert called == ["second", task]
    task.add_done_callback(called.append)   # after the end: scheduled at once
    run_briefly(loop, 0)
    assert called == ["second", task, task]
    assert task.result() is None and task.get_coro() is coroutine and task.get_loop() is loop
    task.set_name("x")
    assert task.get_name() == "x" and "finished" in repr(task)
    coroutine.close()


def lifespan_app(startup="complete", shutdown="complete", events=None):
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        scope["state"]["opened"] = True
        while True:
            message = await receive()
            if events is not None:
                events.append(message["type"])
            if message["type"] == "lifespan.startup":
                if startup == "raise":
                    raise RuntimeError("no lifespan here")
                await send({"type": f"lifespan.startup.{startup}", **({"message": "db down"} if startup == "failed" else {})})
            else:
                if shutdown == "hang":
                    await asyncio.sleep(3600)
                await send({"type": f"lifespan.shutdown.{shutdown}", **({"message": "cleanup failed"} if shutdown == "failed" else {})})
                return
    return app


def serve(glue, loop, app, mode="auto", state=None, log=print, then=None, timeout=5):
    """Runs asgi_serve to its end; returns the outcomes it handed to `started`. Unless the startup
    failed, `then()` runs (a coroutine function, default none) and the shutdown follows it, given
    `timeout` seconds."""
    outcomes = []

    async def stop_after():
        if then is not None:
            await then()
        glue["asgi"].asgi_shutdown(loop, timeout)

    def started(outcome, text):
        outcomes.append((outcome, text))
        loop.create_task(stop_after())

    glue["asgi"].asgi_serve(loop, app, mode, {} if state is None else state, started, log)   # returns after the shutdown
    return outcomes


def test_lifespan_startup_and_shutdown(glue, loop_parts):
    loop = loop_parts[0]
    events, logged, state = [], [], {}
    outcomes = serve(glue, loop, lifespan_app(events=events), state=state, log=lambda *a: logged.append(a))
    assert outcomes == [("ok", "")] and state == {"opened": True}
    assert events == ["lifespan.startup", "lifespan.shutdown"] and logged == []


@pytest.mark.parametrize("mode, startup, expected", [
    ("auto", "failed", ("failed", "db down")),
    ("on", "failed", ("failed", "db down")),
    ("auto", "raise", "unsupported"),
    ("on", "raise", "failed"),
])
def test_lifespan_startup_outcomes(glue, loop_parts, mode, startup, expected):
    # A failed startup ends asgi_serve by itself (serve() stops no loop here); the others serve.
    [(status, text)] = serve(glue, loop_parts[0], lifespan_app(startup=startup), mode=mode)
    if isinstance(expected, tuple):
        assert (status, text) == expected
    else:
        assert status == expected and "RuntimeError: no lifespan here" in text


def test_lifespan_off_calls_nothing(glue, loop_parts):
    def app(*args):
        raise AssertionError("not called")
    assert serve(glue, loop_parts[0], app, mode="off") == [("off", "")]


def test_lifespan_shutdown_failure_and_timeout_are_logged(glue, loop_parts):
    loop = loop_parts[0]
    logged = []
    log = lambda *a: logged.append(a)   # noqa: E731
    assert serve(glue, loop, lifespan_app(shutdown="failed"), log=log) == [("ok", "")]
    assert logged == [(3, "ASGI lifespan shutdown failed: cleanup failed")]

    logged.clear()
    assert serve(glue, loop, lifespan_app(shutdown="hang"), log=log, timeout=0.1) == [("ok", "")]
    assert logged == [(2, "ASGI lifespan shutdown did not finish in 0.1 s")]


def test_a_shutdown_before_serving_still_ends_it(glue, loop_parts):
    loop = loop_parts[0]
    glue["asgi"].asgi_shutdown(loop, 5)
    outcomes = []
    glue["asgi"].asgi_serve(loop, lifespan_app(), "auto", {}, lambda *a: outcomes.append(a), print)
    assert outcomes == [("ok", "")]


def test_anyio_worker_threads_belong_to_the_serving_task(glue, loop_parts):
    # Each "request" is a task of its own that ends before the next starts, as under load. anyio binds
    # its worker threads to the task the loop runs to completion (asgi_serve's, which runs the lifespan
    # startup too), so a thread outlives the startup and the requests; under run_forever it took each
    # request's task, and its thread ended with it, and a startup of its own ended the startup's.
    anyio = pytest.importorskip("anyio")
    import threading
    loop = loop_parts[0]
    marks, serials = threading.local(), []

    def mark():
        if not hasattr(marks, "serial"):
            marks.serial = len(serials) + 1
        return marks.serial

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                serials.append(await anyio.to_thread.run_sync(mark))
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def request():
        serials.append(await anyio.to_thread.run_sync(mark))

    async def requests():
        for _ in range(5):
            await loop.create_task(request())

    assert serve(glue, loop, app, then=requests) == [("ok", "")]
    assert serials == [1, 1, 1, 1, 1, 1]
