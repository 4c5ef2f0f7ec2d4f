"""An ASGI app that takes every path of the server's ASGI bridge, for the reference-leak test: http with
streamed request and response bodies, lifespan, websockets with each way of closing, requests the
client leaves and requests cancelled at the timeout. Only the standard library (it runs on Debian's
debug interpreter)."""
import asyncio
import gc
import sys


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind == "websocket":
        return await websocket(scope, receive, send)
    path = scope["path"]
    headers = [(b"content-type", b"text/plain"), (b"x-repeat", b"1"), (b"x-repeat", b"2"), (b"x-latin", "caf\u00e9".encode("latin-1"))]
    if path == "/refs":
        gc.collect()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": str(sys.gettotalrefcount()).encode()})
    elif path == "/hello":
        assert scope["state"]["ready"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello " + scope["query_string"]})
    elif path == "/echo":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": memoryview(b"end")})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(5):
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await send({"type": "http.response.body"})
    elif path == "/large":
        # Chunks large enough to go out uncopied (the server holds each until it is written).
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(3):
            await send({"type": "http.response.body", "body": bytes([65 + i]) * 20000, "more_body": True})
        await send({"type": "http.response.body", "body": b"Z" * 70000})
    elif path == "/wait-disconnect":
        # The client leaves before the response: receive() ends with http.disconnect.
        while (await receive())["type"] != "http.disconnect":
            pass
    elif path == "/hang":
        await asyncio.sleep(3600)   # answered 504 at the timeout, and cancelled
    elif path == "/raise":
        raise RuntimeError("the app failed (expected by the refleak test)")
    elif path == "/bad-send":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", "not bytes")]})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": b"not found"})


async def websocket(scope, receive, send):
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/ws/reject":
        await send({"type": "websocket.close"})   # before accepting: 403
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-accepted", b"yes")]})
    if path == "/ws/raise":
        raise RuntimeError("the websocket app failed (expected by the refleak test)")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return   # the client closed
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 1000, "reason": "asked to"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"] + " \u00e9"})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
