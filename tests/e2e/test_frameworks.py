"""Real apps from PyPI: Flask and Django."""
import requests

from conftest import APPS


def test_flask_app(serve):
    server = serve("flaskapp:app", "--workers", "2", "--threads", "2", workers=2)
    r = requests.get(server.url + "/")
    assert r.json() == {"message": "Hello, World!", "server": "appserver"}
    assert requests.get(server.url + "/items/42?q=x").json() == {"id": 42, "q": "x"}
    r = requests.post(server.url + "/form", data={"name": "n"}, files={"file": ("a.bin", b"z" * 5000)})
    assert r.json() == {"name": "n", "size": 5000}
    assert requests.post(server.url + "/json", json={"a": [1, 2]}).json() == {"received": {"a": [1, 2]}}
    assert requests.get(server.url + "/missing").status_code == 404


def test_django_project(serve):
    server = serve("djangoproj.wsgi:application", "--chdir", str(APPS / "djangoproj"), "--threads", "2")
    r = requests.get(server.url + "/?q=1")
    assert r.json() == {"message": "Hello from Django", "path": "/", "q": "1"}
    r = requests.post(server.url + "/upload", data={"name": "value"})
    assert r.json()["name"] == "value" and r.json()["method"] == "POST"
    r = requests.get(server.url + "/text")
    assert r.text == "plain text from Django" and r.headers["Content-Type"].startswith("text/plain")
    assert requests.get(server.url + "/nope").status_code == 404


def test_app_from_pythonpath(serve, tmp_path):
    server = serve("flaskapp:app", "--pythonpath", str(APPS), cwd=tmp_path)
    assert requests.get(server.url + "/").status_code == 200
