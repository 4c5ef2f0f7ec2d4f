"""The header-heavy app of the RSS-over-time benchmark, over ASGI."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    seen = sum(len(value) for _, value in scope["headers"])
    headers = [(b"content-type", b"text/plain"), (b"cache-control", b"no-store"), (b"x-seen", str(seen).encode()),
               (b"x-latin", "caf\u00e9".encode("latin-1"))]
    headers += [(b"set-cookie", b"c%d=v%d; Path=/; HttpOnly" % (i, i)) for i in range(8)]
    headers += [(b"x-extra-%d" % i, b"x" * 40) for i in range(8)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})
