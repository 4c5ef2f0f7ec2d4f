CHUNK = b"x" * 65536


async def app(scope, receive, send):
    """The ASGI twin of wsgi_stream: 1 MiB in 16 body messages of 64 KiB under a Content-Length."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(16 * len(CHUNK)).encode())]})
    for i in range(16):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": i < 15})
