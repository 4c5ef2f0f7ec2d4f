"""An ASGI app with a request that never ends by itself, for the timeout tests: /hang awaits forever
and leaves a mark when it is cancelled; every other path answers at once."""
import asyncio
import os

MARKER_DIR = os.environ.get("MARKER_DIR", "/tmp")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/hang":
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with open(os.path.join(MARKER_DIR, "cancelled"), "w") as f:
                f.write(dict(scope["headers"]).get(b"x-request-id", b"").decode())
            raise
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
