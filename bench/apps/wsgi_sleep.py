import time


def app(environ, start_response):
    """An app that waits 5 ms on I/O per request (a database call, say): threads must overlap requests."""
    time.sleep(0.005)
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
