from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="Hello, World!", server=request.environ.get("SERVER_SOFTWARE"))


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, q=request.args.get("q"))


@app.post("/form")
def form():
    upload = request.files.get("file")
    return jsonify(name=request.form.get("name"), size=len(upload.read()) if upload else 0)


@app.post("/json")
def echo_json():
    return jsonify(received=request.get_json())
