"""Error log and access log formats."""
import re

import requests

from conftest import wait_until


def test_access_log_default_format(serve, tmp_path):
    access = tmp_path / "access.log"
    server = serve("plain:app", "--access-logfile", str(access))
    requests.get(server.url + "/environ?x=1", headers={"User-Agent": "tester/1.0", "Referer": "http://ref/"})
    line = wait_until(lambda: access.exists() and "environ" in access.read_text() and access.read_text().strip().splitlines()[-1], message="an access log line")
    pattern = r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /environ\?x=1 HTTP/1\.1" 200 \d+ "http://ref/" "tester/1\.0"$'
    assert re.match(pattern, line), line


def test_access_log_custom_atoms(serve, tmp_path):
    access = tmp_path / "access.log"
    fmt = '%(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %({x-req}i)s %({content-type}o)s %(p)s %(D)s'
    server = serve("plain:app", "--access-logfile", str(access), "--access-logformat", fmt)
    requests.get(server.url + "/?a=b", headers={"X-Req": "abc"})
    line = wait_until(lambda: access.exists() and "abc" in access.read_text() and access.read_text().strip().splitlines()[-1], message="an access log line")
    parts = line.split(" ")
    assert parts[:8] == ["GET", "/", "a=b", "HTTP/1.1", "200", "13", "abc", "text/plain"], line
    assert re.match(r"<\d+>", parts[8]) and parts[9].isdigit()


def test_error_log_lines_have_level_and_pid(serve):
    server = serve("plain:app", "--log-level", "debug")
    line = next(l for l in server.log().splitlines() if "Booting worker" in l)
    assert re.match(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[\d+\] \[INFO\] Booting worker with pid: \d+$", line), line


def test_apps_log_through_gunicorns_error_logger(serve, tmp_path):
    """What an app logs to gunicorn.error (Flask's documented pattern takes its handlers and level) or
    uvicorn.error lands in the server's error log, at the server's loglevel, as under Gunicorn."""
    error_log = tmp_path / "error.log"
    server = serve("gunicornlogger:app", "--error-logfile", str(error_log), wait=False)
    wait_until(lambda: error_log.exists() and "ready: 1 workers booted" in error_log.read_text(), timeout=20, message="the server to boot")
    assert requests.get(server.url + "/", timeout=5).text == "ok"
    assert requests.get(server.url + "/fail", timeout=5).text == "handled"
    worker = re.search(r"Booting worker with pid: (\d+)", error_log.read_text()).group(1)
    text = wait_until(lambda: "lookup failed" in error_log.read_text() and error_log.read_text(), message="the app's lines")
    assert re.search(rf"^\[[^]]+\] \[{worker}\] \[INFO\] index served by the Flask app$", text, re.M), text
    assert re.search(rf"^\[[^]]+\] \[{worker}\] \[ERROR\] lookup failed in the Flask app\nTraceback .*\nKeyError: 'missing'$", text, re.M | re.S), text
    assert "a debug detail" not in text, "below the server's loglevel (info)"

    server = serve("gunicornlogger:asgi", "--log-level", "debug", "--preload")
    assert requests.get(server.url + "/", timeout=5).text == "ok"
    wait_until(lambda: re.search(r"\] \[\d+\] \[INFO\] served by the ASGI app$", server.log(), re.M), message="the ASGI app's line")


def test_filters_on_the_access_loggers_are_said_not_to_apply(serve, tmp_path):
    """Apps filter uvicorn.access (or gunicorn.access) to keep health checks out of the access log;
    appserver's access log is its own, and a worker says so when there is an access log to write."""
    access = tmp_path / "access.log"
    server = serve("gunicornlogger:filtered", "--access-logfile", str(access))
    assert requests.get(server.url + "/health", timeout=5).text == "ok"
    assert "[WARNING] the app puts filters on uvicorn.access: appserver writes its access log itself" in server.log()
    wait_until(lambda: access.exists() and "GET /health" in access.read_text(), message="the health check's line")
    quiet = serve("gunicornlogger:filtered")
    assert "puts filters on" not in quiet.log()
