"""Apps that keep lines out of the access log as their docs and the usual recipes show: a filter on
uvicorn.access (FastAPI's health checks), one on gunicorn.access reading Gunicorn's atoms (Flask), the
access logger set above INFO, and a filter that raises (the app's bug: its line still goes out).
ACCESS_FILTER (`-e`, so each worker sees it at import) picks what this process installs."""
import logging
import os

from fastapi import FastAPI
from flask import Flask

fastapi_app = FastAPI()


@fastapi_app.get("/health")
def fastapi_health():
    return {"ok": True}


@fastapi_app.get("/items/{n}")
def fastapi_item(n: int):
    return {"n": n}


flask_app = Flask(__name__)


@flask_app.get("/health")
def flask_health():
    return "ok"


@flask_app.get("/")
def flask_index():
    return "index"


class EndpointFilter(logging.Filter):
    """The recipe of FastAPI's users: Uvicorn's message holds the path."""
    def filter(self, record):
        return record.getMessage().find("/health") == -1


class PathFilter(logging.Filter):
    """Gunicorn's atoms are the record's args."""
    def filter(self, record):
        return record.args["U"] != "/health"


class BrokenFilter(logging.Filter):
    def filter(self, record):
        raise ValueError("a broken access filter")


MODE = os.environ.get("ACCESS_FILTER", "")
if MODE == "uvicorn":
    logging.getLogger("uvicorn.access").addFilter(EndpointFilter())
elif MODE == "gunicorn":
    logging.getLogger("gunicorn.access").addFilter(PathFilter())
elif MODE == "quiet":
    logging.getLogger("gunicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
elif MODE == "broken":
    logging.getLogger("gunicorn.access").addFilter(BrokenFilter())
