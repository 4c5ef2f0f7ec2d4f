CHUNK = b"x" * 65536


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(16 * len(CHUNK)))])
    return (CHUNK for _ in range(16))
