"""An app for the tests of how appserver runs a request's coroutine (ASGITask.swift): what
asyncio.current_task() is, cancellation by anyio, asyncio.timeout and TaskGroup, context variables,
and apps whose call is not a coroutine."""
import asyncio
import contextvars
import threading

import anyio
from fastapi import FastAPI

app = FastAPI()
request_value = contextvars.ContextVar("request_value", default=None)


@app.get("/current-task")
async def current_task():
    task = asyncio.current_task()
    same = [task is asyncio.current_task()]
    await asyncio.sleep(0)            # a bare yield: the next step comes from call_soon
    same.append(task is asyncio.current_task())
    await asyncio.sleep(0.01)         # a future: the next step comes from its done callback
    same.append(task is asyncio.current_task())
    # Between the task's steps no task is current: a plain callback of the loop sees none.
    outside = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(lambda: outside.set_result(asyncio.current_task()))
    between = await outside
    return {"has_task": task is not None, "same": same, "name": task.get_name(), "done": task.done(),
            "coro": type(task.get_coro()).__name__, "stack": len(task.get_stack()) > 0, "repr": repr(task)[:40],
            "between_steps": repr(between)}


@app.get("/sync")
def sync_endpoint(n: int = 0):
    # FastAPI runs a plain function in anyio's thread pool, inside a cancel scope of the request's task.
    return {"n": n, "thread": threading.current_thread() is not threading.main_thread()}


@app.get("/timeout")
async def timeout():
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(5)
    except TimeoutError:
        return {"timed_out": True, "cancelling": asyncio.current_task().cancelling()}
    return {"timed_out": False}


@app.get("/move-on")
async def move_on():
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(5)
    return {"cancelled_caught": scope.cancelled_caught}


@app.get("/task-groups")
async def task_groups():
    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("child failed")

    async def wait_long():
        await asyncio.sleep(5)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(fail())
            group.create_task(wait_long())
    except* ValueError as errors:
        asyncio_group = [str(e) for e in errors.exceptions]
    results = []
    async with anyio.create_task_group() as group:
        async def add(value):
            await anyio.sleep(0.01)
            results.append(value)
        for value in range(3):
            group.start_soon(add, value)
    return {"asyncio": asyncio_group, "anyio": sorted(results)}


@app.get("/cancel-self")
async def cancel_self():
    task = asyncio.current_task()
    task.cancel("cancelled by the test")
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError as error:
        task.uncancel()
        return {"cancelled": True, "message": str(error.args[0]) if error.args else None}
    return {"cancelled": False}


@app.get("/context/{value}")
async def context(value: str):
    request_value.set(value)
    await asyncio.sleep(0.05)          # other requests set theirs meanwhile
    return {"value": request_value.get()}


class AwaitableApp:
    """An ASGI app whose call returns a Future rather than a coroutine (served with --interface asgi)."""

    def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return asyncio.ensure_future(self.lifespan(receive, send))
        if scope["path"] == "/raise":
            raise RuntimeError("raised before any coroutine")
        return asyncio.ensure_future(self.respond(send))

    async def lifespan(self, receive, send):
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    async def respond(self, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"from a future"})


awaitable_app = AwaitableApp()
