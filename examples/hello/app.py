"""The example app `make run` serves: a small Flask app with a JSON route and a form."""
import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from appserver!\n"


@app.get("/api/status")
def status():
    return jsonify(pid=os.getpid(), server=request.environ.get("SERVER_SOFTWARE"))


@app.post("/api/echo")
def echo():
    return jsonify(received=request.get_json(silent=True), length=request.content_length or 0)
