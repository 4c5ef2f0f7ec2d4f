"""A Starlette app for the ASGI tests: lifespan state, a client leaving mid-body, a websocket echo."""
import contextlib
import os

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

MARKERS = os.environ.get("MARKER_DIR", "/tmp")


def mark(name, text="1"):
    # Written aside and renamed: a test that sees the file sees all of it.
    path = os.path.join(MARKERS, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


@contextlib.asynccontextmanager
async def lifespan(app):
    if os.environ.get("FAIL_STARTUP"):
        raise RuntimeError("the database is not there")
    yield {"started_by": os.getpid(), "greeting": "hello from lifespan"}
    mark(f"shutdown-{os.getpid()}")


async def state(request):
    return JSONResponse({"started_by": request.state.started_by, "greeting": request.state.greeting, "pid": os.getpid()})


async def upload(request):
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
    except ClientDisconnect:
        mark("disconnected", str(size))
        raise
    return PlainTextResponse(str(size))


async def echo(websocket):
    await websocket.accept(subprotocol="echo" if "echo" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                mark("ws-closed", str(message.get("code")))
                return
            if message.get("text") == "close please":
                await websocket.close(code=4001, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as exc:
        mark("ws-closed", str(exc.code))


async def reject(websocket):
    await websocket.close(code=1008)


app = Starlette(routes=[Route("/state", state), Route("/upload", upload, methods=["POST"]),
                        WebSocketRoute("/ws", echo), WebSocketRoute("/reject", reject)], lifespan=lifespan)
