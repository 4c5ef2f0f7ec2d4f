"""Error log and access log formats."""
import re
import threading

import pytest
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


@pytest.mark.parametrize("app,extra", [("plain:app", []), ("plain:app", ["--threads", "4"]), ("fastapiapp:app", [])],
                         ids=["wsgi-on-the-io-thread", "wsgi-app-threads", "asgi"])
def test_every_request_has_one_whole_access_line_across_batches_recycling_and_stop(serve, tmp_path, app, extra):
    """Access lines go out in batches (a tick's, an app thread's run's, a loop turn's requests in one
    write): none is lost, doubled or torn while workers are recycled under traffic and then stopped, and
    the last lines are written once the traffic stops, without waiting for more."""
    access = tmp_path / "access.log"
    server = serve(app, "--workers", "2", "--max-requests", "40", "--access-logfile", str(access), *extra,
                   workers=2, env={"MARKER_DIR": str(tmp_path)})
    failures = []

    def client(k):
        with requests.Session() as session:
            for i in range(150):
                try:
                    if session.get(f"{server.url}/?n={k}-{i}", timeout=10).status_code != 200:
                        failures.append(f"{k}-{i}")
                except requests.RequestException as error:
                    failures.append(f"{k}-{i}: {error}")

    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    assert not failures
    expected = sorted(f"{k}-{i}" for k in range(4) for i in range(150))
    whole = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /\?n=(\d+-\d+) HTTP/1\.1" 200 \d+ "-" "python-requests/[\d.]+"$')

    def marked():
        return [line for line in access.read_text().splitlines() if "?n=" in line]

    wait_until(lambda: len(marked()) >= len(expected), message="every request's line, with no more traffic")
    server.stop()
    lines = marked()
    assert [line for line in lines if not whole.match(line)] == []
    assert sorted(whole.match(line).group(1) for line in lines) == expected


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


def test_filters_on_the_other_interfaces_access_logger_are_said_not_to_apply(serve, tmp_path):
    """A WSGI app's access lines go through gunicorn.access, as under Gunicorn: a filter on uvicorn.access
    does not apply to them, and a worker says where to put it."""
    access = tmp_path / "access.log"
    server = serve("gunicornlogger:filtered", "--access-logfile", str(access))
    assert requests.get(server.url + "/health", timeout=5).text == "ok"
    assert ("[WARNING] the app puts filters on uvicorn.access, which do not apply to a WSGI app's access lines: "
            "put them on gunicorn.access, as under Gunicorn") in server.log()
    wait_until(lambda: access.exists() and "GET /health" in access.read_text(), message="the health check's line")
    quiet = serve("gunicornlogger:filtered")
    assert "puts filters on" not in quiet.log()


def access_lines(server, access, paths, last):
    """Requests `paths`, then `last`, and returns the access log's lines once `last`'s is there, less those of
    the fixture's readiness probe (`GET /`)."""
    for path in paths + [last]:
        assert requests.get(server.url + path, timeout=5).status_code == 200
    lines = wait_until(lambda: access.exists() and f"GET {last} " in access.read_text() and access.read_text().splitlines(),
                       message=f"the line of {last}")
    return [line for line in lines if '"GET / HTTP/1.1"' not in line or last == "/"]


def test_the_apps_access_logger_keeps_lines_out_of_the_access_log(serve, tmp_path):
    """The recipes that keep health checks out of Gunicorn's and Uvicorn's access logs work here: a filter on
    uvicorn.access (FastAPI, reading Uvicorn's message), on gunicorn.access (Flask, reading Gunicorn's atoms),
    the access logger set above INFO (kept when the app is preloaded), and the lines of other paths stay."""
    access = tmp_path / "fastapi.log"
    server = serve("accessfilters:fastapi_app", "-k", "uvicorn.workers.UvicornWorker", "-e", "ACCESS_FILTER=uvicorn",
                   "--access-logfile", str(access))
    lines = access_lines(server, access, ["/health", "/items/1", "/health"], "/items/2")
    assert [line.split('"')[1] for line in lines] == ["GET /items/1 HTTP/1.1", "GET /items/2 HTTP/1.1"], lines
    assert "puts filters on" not in server.log()

    access = tmp_path / "flask.log"
    server = serve("accessfilters:flask_app", "-e", "ACCESS_FILTER=gunicorn", "--threads", "2", "--access-logfile", str(access))
    lines = access_lines(server, access, ["/health", "/?a=1"], "/?a=2")
    assert [line.split('"')[1] for line in lines] == ["GET /?a=1 HTTP/1.1", "GET /?a=2 HTTP/1.1"], lines

    for preload in ([], ["--preload"]):
        access = tmp_path / f"quiet{len(preload)}.log"
        server = serve("accessfilters:flask_app", "-e", "ACCESS_FILTER=quiet", *preload, "--access-logfile", str(access))
        for _ in range(3):
            assert requests.get(server.url + "/", timeout=5).text == "index"
        unfiltered = serve("accessfilters:flask_app", "--access-logfile", str(access) + ".control", *preload)
        access_lines(unfiltered, tmp_path / (access.name + ".control"), [], "/")   # the control's line is written ...
        assert not access.exists() or access.read_text() == "", access.read_text()   # ... and the quiet app's are not


def test_an_access_filter_that_raises_leaves_the_line_and_says_why(serve, tmp_path):
    """A filter that raises is the app's bug: the request is served, its line goes out, and the error log
    has the traceback."""
    access = tmp_path / "access.log"
    server = serve("accessfilters:flask_app", "-e", "ACCESS_FILTER=broken", "--access-logfile", str(access))
    lines = access_lines(server, access, [], "/health")
    assert len(lines) == 1 and "GET /health" in lines[0]
    wait_until(lambda: "ValueError: a broken access filter" in server.log(), message="the filter's traceback")
    assert "[ERROR] the app's filter on gunicorn.access failed, so the access line is written:" in server.log()
