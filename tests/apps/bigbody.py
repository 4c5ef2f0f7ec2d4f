"""Large response bodies, for the server's uncopied writes of large chunks (ForeignBuffer): every
chunk is a fresh bytes object the app lets go of as soon as it is handed over, and the app then
allocates memory of the same size, which malloc takes from what was just freed. If the server did
not hold its own reference until the chunk is written, the client would get that new memory's
zeros. The same plan is served as WSGI (`wsgi`) and ASGI (`asgi`).

/body?sizes=A,B,C&length=exact|short|none&form=iter|list sends chunk(0, A), chunk(1, B), ...;
`short` declares 1,000 bytes less than it sends (the server cuts the rest); `none` is chunked.
/shared?count=N sends SHARED N times; /refs answers sys.getrefcount(SHARED)."""
import hashlib
import sys
from urllib.parse import parse_qs

SHARED = bytes(range(256)) * 256
_junk = []


def chunk(index, size):
    seed = hashlib.sha256(b"%d-%d" % (index, size)).digest()
    return (seed * (size // 32 + 1))[:size]


def plan(path, query):
    """(chunks as (index, size), declared length or None)."""
    args = {k: v[0] for k, v in parse_qs(query).items()}
    if path == "/shared":
        count = int(args["count"])
        return [(-1, len(SHARED))] * count, len(SHARED) * count
    sizes = [int(s) for s in args["sizes"].split(",")]
    total = sum(sizes)
    length = {"exact": total, "short": total - 1000, "none": None}[args.get("length", "exact")]
    return list(enumerate(sizes)), length


def make(index, size):
    return SHARED if index < 0 else chunk(index, size)


def reuse_freed(size):
    # Takes what malloc freed for the chunk the server was just given (a bytes object of the same
    # size asks for the same block) and writes over it.
    _junk[:] = []
    _junk[:] = [bytes(size), bytearray(size)]


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path in ("/", "/refs"):   # / for the tests' readiness probe
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(sys.getrefcount(SHARED)).encode()]
    chunks, length = plan(path, environ["QUERY_STRING"])
    headers = [("Content-Type", "application/octet-stream")]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    start_response("200 OK", headers)
    if parse_qs(environ["QUERY_STRING"]).get("form") == ["list"]:
        return [make(index, size) for index, size in chunks]

    def body():
        for index, size in chunks:
            yield make(index, size)
            reuse_freed(size)
    return body()


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return   # no lifespan: the server goes on without it
    path, query = scope["path"], scope["query_string"].decode()
    if path in ("/", "/refs"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(sys.getrefcount(SHARED)).encode()})
        return
    chunks, length = plan(path, query)
    headers = [(b"content-type", b"application/octet-stream")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index, size in chunks:
        await send({"type": "http.response.body", "body": make(index, size), "more_body": True})
        reuse_freed(size)
    await send({"type": "http.response.body", "body": b""})
