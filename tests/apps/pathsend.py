"""Files sent by path (ASGI's Path Send extension, http.response.pathsend).

`app`: a Starlette app with the middleware real apps put around a FileResponse (BaseHTTPMiddleware,
as FastAPI's @app.middleware("http") makes, and GZipMiddleware), serving files from $FILES_DIR. An audit hook
writes every open() of a file under $FILES_DIR by Python to $FILES_DIR/opened: a file the server sends
by path is never opened by the app.

`raw`: a raw ASGI app that sends what its query asks for, to see how bad messages are answered.
"""
import os
import sys
import urllib.parse

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

FILES = os.environ.get("FILES_DIR", "/tmp")


def _record_opens(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(FILES) and not args[0].endswith("opened"):
        with open(os.path.join(FILES, "opened"), "a") as log:
            log.write(args[0] + "\n")


sys.addaudithook(_record_opens)


async def file(request):
    return FileResponse(os.path.join(FILES, request.path_params["name"]))


async def relative(request):
    # Relative to the worker's working directory (--chdir), as the app's own open() would take it.
    return FileResponse(request.path_params["name"])


async def extensions(request):
    return JSONResponse(sorted(request.scope.get("extensions", {})))


async def add_header(request, call_next):
    response = await call_next(request)
    response.headers["x-middleware"] = "seen"
    return response


app = Starlette(routes=[Route("/files/{name}", file), Route("/relative/{name}", relative), Route("/extensions", extensions)])
app.add_middleware(GZipMiddleware, minimum_size=10)
app.add_middleware(BaseHTTPMiddleware, dispatch=add_header)


async def raw(scope, receive, send):
    if scope["type"] != "http":
        return   # no lifespan
    query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
    path = query.get("path", os.path.join(FILES, "small.txt"))
    headers = [(b"content-type", b"application/octet-stream")]
    if "length" in query:
        headers.append((b"content-length", query["length"].encode()))
    order = query.get("order", "normal")
    if order == "before-start":
        await send({"type": "http.response.pathsend", "path": path})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if order == "after-body":
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
    if order == "not-a-str":
        await send({"type": "http.response.pathsend", "path": 42})
        return
    await send({"type": "http.response.pathsend", "path": path})
    if order == "twice":
        await send({"type": "http.response.pathsend", "path": path})
