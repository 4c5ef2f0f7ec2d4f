"""Apps that hand the Python bridge bad values: each must become a clear Python exception in the app
(logged, answered 500), never a crash of the worker."""
import sys

SURROGATE = "bad \udcff text"   # a str that cannot be encoded as UTF-8


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/errors-surrogate":
        environ["wsgi.errors"].write(SURROGATE)
    elif path == "/errors-bytes":
        environ["wsgi.errors"].write(b"not a str")
    elif path == "/status-wide":
        start_response("200 \u20ac", [])
    elif path == "/header-not-tuple":
        start_response("200 OK", [["X-A", "1"]])
    elif path == "/read-bad-size":
        environ["wsgi.input"].read("ten")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fine"]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        if "surrogate" in sys.argv[-1]:
            await send({"type": "lifespan.startup.failed", "message": SURROGATE})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        try:
            await send({"type": "websocket.accept", "headers": [(b"x-only-name",)]})
        except ValueError as error:
            print(f"websocket.accept refused: {error}", file=sys.stderr, flush=True)
            raise
        return
    path = scope["path"]
    if path == "/type-surrogate":
        await send({"type": SURROGATE})
    elif path == "/header-triple":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1", b"2")]})
    elif path == "/header-str":
        await send({"type": "http.response.start", "status": 200, "headers": [("x", "1")]})
    elif path == "/status-str":
        await send({"type": "http.response.start", "status": "200"})
    elif path == "/body-first":
        await send({"type": "http.response.body", "body": b"early"})
    elif path == "/start-twice":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.start", "status": 200})
    elif path == "/unknown-type":
        await send({"type": "http.response.bogus"})
    elif path == "/built-types":
        # Types made at run time: equal characters in other objects than the interned ones (and than
        # a literal's), one of them a str subclass.
        class Text(str):
            pass
        await send({"type": ".".join(["http", "response", "start"]), "status": 200, "headers": []})
        await send({"type": Text("http.response." + "body"), "body": b"built"})
        return
    elif path == "/not-awaitable":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"fine"})


class NotAwaitable:
    def __call__(self, scope, receive, send):
        return 42


asgi_not_awaitable = NotAwaitable()


async def lifespan_surrogate(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": SURROGATE})
