"""Apps that answer with what they saw of the request, byte for byte, for the HTTP/1.1 tests:
WSGI (`mirror:app`, header values as the latin-1 str PEP 3333 gives) and ASGI (`mirror:asgi`,
header values as bytes, shown latin-1 decoded)."""
import hashlib
import json


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    headers = sorted((k[5:].replace("_", "-").lower(), v) for k, v in environ.items() if k.startswith("HTTP_"))
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append((key.replace("_", "-").lower(), environ[key]))
    answer = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ["RAW_URI"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": sorted(headers),
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps({
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "protocol": "HTTP/" + scope["http_version"],
        "headers": sorted([k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]),
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
