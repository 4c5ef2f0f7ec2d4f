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
            # Written aside, then renamed: the test, which waits for the file, never reads it half written.
            marker = os.path.join(MARKER_DIR, "cancelled")
            with open(marker + ".tmp", "w") as f:
                f.write(dict(scope["headers"]).get(b"x-request-id", b"").decode())
            os.replace(marker + ".tmp", marker)
            raise
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
