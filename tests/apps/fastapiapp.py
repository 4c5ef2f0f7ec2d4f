"""A FastAPI app for the ASGI tests: JSON, path and query parameters, uploads, streaming, background tasks."""
import asyncio
import itertools
import os
import threading

from fastapi import BackgroundTasks, FastAPI, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

app = FastAPI()


@app.get("/")
async def index():
    return {"message": "Hello, World!"}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None):
    return {"id": item_id, "q": q}


@app.post("/upload")
async def upload(file: UploadFile):
    size = 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
    return {"name": file.filename, "size": size}


@app.post("/echo")
async def echo(request: Request):
    return Response(await request.body(), media_type="application/octet-stream")


@app.get("/stream")
async def stream(chunks: int = 10, size: int = 1024):
    async def generate():
        chunk = b"x" * size
        for _ in range(chunks):
            yield chunk

    return StreamingResponse(generate(), media_type="application/octet-stream")


def write_marker(name: str):
    with open(os.path.join(os.environ["MARKER_DIR"], name), "w") as f:
        f.write("done")


@app.post("/task")
async def task(name: str, background: BackgroundTasks):
    background.add_task(write_marker, name)
    return {"queued": name}


@app.get("/slow")
async def slow(s: float = 1.0):
    await asyncio.sleep(s)
    return {"slept": s}


@app.get("/error")
async def error():
    raise RuntimeError("boom from FastAPI")


# A serial number a thread, the first time it runs a sync endpoint (FastAPI runs those on anyio's
# worker threads): tells a thread kept for the next request from a new one in its place.
_thread_serial = itertools.count(1)
_thread_marks = threading.local()


@app.get("/thread")
def thread():
    if not hasattr(_thread_marks, "serial"):
        _thread_marks.serial = next(_thread_serial)
    return {"serial": _thread_marks.serial, "name": threading.current_thread().name}


@app.get("/scope")
async def scope(request: Request):
    s = request.scope
    return {"path": s["path"], "raw_path": s["raw_path"].decode(), "root_path": s["root_path"],
            "query_string": s["query_string"].decode(), "http_version": s["http_version"], "scheme": s["scheme"],
            "client": list(s["client"]), "server": list(s["server"]), "asgi": s["asgi"],
            "headers": [[k.decode(), v.decode()] for k, v in s["headers"]]}
