"""Apps that log through Gunicorn's loggers, as their docs tell them to: a Flask app that takes
gunicorn.error's handlers and level (Flask's "Deploying to Production" pattern), and an ASGI app that
logs to uvicorn.error (which Gunicorn's UvicornWorker points at the same error log)."""
import logging

from flask import Flask

app = Flask(__name__)
if __name__ != "__main__":
    gunicorn_logger = logging.getLogger("gunicorn.error")
    app.logger.handlers = gunicorn_logger.handlers
    app.logger.setLevel(gunicorn_logger.level)


@app.route("/")
def index():
    app.logger.info("index served by the Flask app")
    app.logger.debug("a debug detail of the Flask app")
    return "ok"


@app.route("/fail")
def fail():
    try:
        {}["missing"]
    except KeyError:
        app.logger.exception("lookup failed in the Flask app")
    return "handled"


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    logging.getLogger("uvicorn.error").info("served by the ASGI app")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class NoHealthChecks(logging.Filter):
    def filter(self, record):
        return "/health" not in record.getMessage()


def filtered(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


# What apps do to keep health checks out of Uvicorn's access log (at import, as here).
logging.getLogger("uvicorn.access").addFilter(NoHealthChecks())
