"""The WSGI twin of asgi_spin.py: a call as long as Flask JSON's that touches almost no memory."""

SPINS = 2000


def app(environ, start_response):
    total = 0
    for i in range(SPINS):
        total += i
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
