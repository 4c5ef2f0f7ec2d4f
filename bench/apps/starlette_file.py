"""Starlette's FileResponse of a 1 MiB file, as a static asset is served: by path (http.response.pathsend,
sent with sendfile by the server) where the server offers it, else read and sent by Starlette in 64 KiB
body messages. `file_app(size)` makes the app for another size (starlette_file_16k)."""
import os
import tempfile

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route


def file_app(size):
    path = os.path.join(tempfile.gettempdir(), f"appserver-bench-file-{size}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        with open(path + f".{os.getpid()}", "wb") as f:
            f.write(b"x" * size)
        os.replace(path + f".{os.getpid()}", path)

    async def serve_file(request):
        return FileResponse(path, media_type="application/octet-stream")

    return Starlette(routes=[Route("/", serve_file)])


app = file_app(1 << 20)
