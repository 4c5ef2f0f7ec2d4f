"""A Flask app mounted under a prefix the way Gunicorn mounts one: SCRIPT_NAME from the environment
(-e SCRIPT_NAME=/app) or from nginx (proxy_set_header SCRIPT_NAME /shop). It says what it was told."""
from flask import Flask, request, url_for

app = Flask(__name__)


@app.route("/hello")
def hello():
    return {"script_name": request.environ["SCRIPT_NAME"], "path_info": request.environ["PATH_INFO"],
            "url": url_for("hello"), "external": url_for("hello", _external=True),
            "forwarded_script_name": request.environ.get("HTTP_SCRIPT_NAME")}
