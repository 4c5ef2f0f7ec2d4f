"""A call as long as FastAPI JSON's on this machine (~45 us) that touches almost no memory: a counting
loop, then the hello response. Beside fastapi-json it tells apart what a slower request rate costs the
server (fewer requests a loop turn, an idle client to wake) from what a large app's code and data cost
it (caches the app evicts between the server's turns)."""

SPINS = 2000


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    total = 0
    for i in range(SPINS):
        total += i
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
