import asyncio


async def app(scope, receive, send):
    """An app that waits 5 ms on I/O per request: the event loop must overlap requests."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.005)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
