"""The metrics endpoint (metrics_bind): a real Prometheus scraping under wrk load through a worker kill, a
HUP and a USR2; /healthz and /readyz for load balancers (starting, draining with drain_delay, a failed
HUP); `appserver status --json`. Everything on loopback, every load bounded."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, BINARY, VENV, free_port, terminate, wait_until
from test_under_load import read_pid, wait_gone, write_generation


def metrics_text(port):
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def sample(text, name, **labels):
    """The value of one sample in Prometheus's text format (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        found_name, _, label_text = series.partition("{")
        if found_name != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def total(text, name, **labels):
    """The sum of every sample of `name` whose labels include `labels`."""
    result = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
            if series.partition("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
                result += float(value)
    return result


def readyz(port):
    try:
        response = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        return response.status_code, response.text.strip()
    except requests.RequestException as error:
        return None, str(error)


class Prometheus:
    """Debian's prometheus, scraping one target every second, on loopback, with its data in tmp_path."""

    def __init__(self, tmp_path, target_port):
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: appserver\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expression):
        response = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expression}, timeout=5).json()
        assert response["status"] == "success", response
        return response["data"]["result"]

    def value(self, expression):
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expression, expected, message, timeout=15):
        """Waits for `expression` to be `expected`; on a timeout, says what Prometheus had and how its
        scrapes of the target went (health, last error, last scrape), and the tail of its log."""
        seen = []

        def equal():
            seen.append(self.value(expression))
            return seen[-1] == expected
        try:
            wait_until(equal, timeout=timeout, interval=0.5, message=message)
        except AssertionError as error:
            targets = requests.get(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5).json()
            scrapes = [{key: target.get(key) for key in ("health", "lastError", "lastScrape", "lastScrapeDuration")}
                       for target in targets["data"]["activeTargets"]]
            series = [(item["metric"], item["value"]) for item in self.query(expression.removeprefix("sum(").removesuffix(")"))
                      if item["value"][1] != "0"]
            self.log.flush()
            log_tail = Path(self.log.name).read_text()[-2000:]
            raise AssertionError(f"{error}: last values {seen[-5:]}, series {series}, scrapes {scrapes}, log: {log_tail}") from None

    def wait_scraping(self):
        def up():
            try:
                return self.value('up{job="appserver"}') == 1
            except requests.RequestException:
                return False
        wait_until(up, timeout=30, interval=0.5, message="Prometheus to scrape appserver")

    def stop(self):
        terminate(self.proc)
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make deps installs it)")
    started = []

    def start(target_port):
        server = Prometheus(tmp_path, target_port)
        started.append(server)
        server.wait_scraping()
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_counts_every_request_through_a_kill_a_hup_and_a_usr2(serve, prometheus, tmp_path):
    """wrk -c16 for 14 s against two Flask workers; a worker is killed at 3 s, HUP at 6 s, USR2 at 9 s.
    Prometheus (1 s scrapes) ends with the server's own count, which is wrk's count plus at most the
    requests wrk left unread when it stopped; no counter ever went down; promtool accepts the output."""
    app_file = tmp_path / "generation.py"
    write_generation(app_file, 1)
    pidfile = tmp_path / "app.pid"
    metrics_port = free_port()
    server = serve("generation:app", "--workers", "2", "--chdir", str(tmp_path), "--pid", str(pidfile),
                   "--metrics-bind", f"127.0.0.1:{metrics_port}", cwd=tmp_path, workers=2)
    first_arbiter = server.pid
    prom = prometheus(metrics_port)
    probes = 1  # the request wait_ready made
    result = {}
    connections = 16

    def load():
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", "-d14s", server.url + "/"], capture_output=True, text=True, timeout=60).stdout
        result["out"] = out

    thread = threading.Thread(target=load)
    started = time.monotonic()
    thread.start()

    def at(seconds):
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))

    at(3)
    killed = server.workers()[0]
    os.kill(killed, signal.SIGKILL)
    at(6)
    write_generation(app_file, 2)
    os.kill(first_arbiter, signal.SIGHUP)
    at(9)
    os.kill(first_arbiter, signal.SIGUSR2)
    wait_until(lambda: read_pid(pidfile) not in (None, first_arbiter), timeout=15, message="the new arbiter's pid file")
    new_arbiter = read_pid(pidfile)
    thread.join()
    out = result["out"]
    wrk_total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(map(int, errors.groups())) if errors else 0
    try:
        server.proc.wait(20)   # the old arbiter handed over and drained
        # The server's own count, once nothing is in flight, then the same number in Prometheus. A
        # request wrk sent just before it stopped may still be finishing: the count is read when no
        # request is in flight and it held for half a second.
        def settled():
            before = metrics_text(metrics_port)
            time.sleep(0.5)
            after = metrics_text(metrics_port)
            idle = sample(after, "appserver_requests_in_flight") == 0
            same = total(before, "appserver_requests_total") == total(after, "appserver_requests_total")
            return after if idle and same else None
        text = wait_until(settled, timeout=15, message="the server's request count to settle")
        served = total(text, "appserver_requests_total")
        assert wrk_total > 1000 and wrk_total <= served - probes <= wrk_total + connections + socket_errors, (served, out)
        print(f"wrk counted {wrk_total} responses ({socket_errors} socket errors); the server {served}")
        prom.wait_value("sum(appserver_requests_total)", served, message=f"Prometheus to see {served} requests")
        # No counter (histograms included) ever went down over the whole run.
        window = f"[{int(time.monotonic() - started) + 30}s]"
        families = re.findall(r"# TYPE (\S+) (counter|histogram)", text)
        monotonic = [name + suffix for name, kind in families for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))]
        assert "appserver_requests_total" in monotonic and "appserver_request_duration_seconds_bucket" in monotonic
        for name in monotonic:
            assert prom.value(f"sum(resets({name}{window}))") == 0, f"{name} went down"
        # The kill, the reload and the upgrade are counted, by the arbiter that serves now.
        assert sample(text, "appserver_worker_exits_total", reason="crash") >= 1
        assert sample(text, "appserver_worker_exits_total", reason="reload") >= 2
        assert sample(text, "appserver_reloads_total", outcome="success") == 1
        assert sample(text, "appserver_upgrades_total", outcome="success") == 1
        assert sample(text, "appserver_worker_spawns_total") >= 7   # 2, 1 after the kill, 2 on HUP, 2 after USR2
        assert sample(text, "appserver_request_duration_seconds_count") == served
        assert sample(text, "appserver_workers", state="idle") + sample(text, "appserver_workers", state="busy") == 2
        assert prom.value("max(appserver_generation)") >= 1
        assert 'appserver_build_info{version="' in text
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        if new_arbiter:
            os.kill(new_arbiter, signal.SIGTERM)
            wait_gone(new_arbiter)


def test_metrics_count_methods_statuses_bytes_refusals_and_exceptions(serve):
    metrics_port = free_port()
    server = serve("plain:app", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    before = metrics_text(metrics_port)
    requests.post(server.url + "/echo", data=b"x" * 5000, timeout=5)
    requests.get(server.url + "/missing", timeout=5)
    requests.get(server.url + "/error", timeout=5)
    # A request line over the limit: refused by the HTTP layer with 414, the app never sees it.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 414")
    text = metrics_text(metrics_port)

    def grew(name, **labels):
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert grew("appserver_requests_total", method="POST", status="2xx") == 1
    assert grew("appserver_requests_total", method="GET", status="4xx") == 1
    assert grew("appserver_requests_total", method="GET", status="5xx") == 1
    assert grew("appserver_request_body_bytes_total") == 5000
    assert grew("appserver_response_bytes_total") > 100
    assert grew("appserver_app_exceptions_total") == 1
    assert grew("appserver_http_refused_total", status="414") == 1
    assert sample(text, "appserver_workers", state="idle") == 1
    worker = server.workers()[0]
    assert sample(text, "appserver_worker_resident_memory_bytes", worker=str(worker)) > 10_000_000
    # Only GET and HEAD; unknown paths say where to go.
    assert requests.post(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).status_code == 405
    missing = requests.get(f"http://127.0.0.1:{metrics_port}/nothing", timeout=5)
    assert missing.status_code == 404 and "/readyz" in missing.text
    assert requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5).text == "ok\n"


def test_status_json_and_the_status_path_agree(serve, tmp_path):
    metrics_port = free_port()
    pidfile = tmp_path / "app.pid"
    server = serve("plain:app", "--workers", "2", "--pid", str(pidfile), "--metrics-bind", f"127.0.0.1:{metrics_port}", workers=2)
    for _ in range(5):
        requests.get(server.url + "/", timeout=5)

    def status_counting_all():
        out = subprocess.run([str(BINARY), "status", "--json", "--pid", str(pidfile)], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        # A request is counted right after its response is flushed, a moment after the client may read it.
        return status if status["requests_total"] >= 5 else None

    status = wait_until(status_counting_all, timeout=5, message="the 5 requests to be counted")
    assert status["ready"] is True and status["readiness"] == "ready" and status["pid"] == server.pid
    assert status["requests_total"] >= 5 and status["workers_desired"] == 2
    assert sorted(w["pid"] for w in status["workers"]) == sorted(server.workers())
    assert all(w["state"] == "idle" and w["seconds_since_heartbeat"] < 5 and w["resident_memory_bytes"] > 0 for w in status["workers"])
    by_http = requests.get(f"http://127.0.0.1:{metrics_port}/status", timeout=5).json()
    assert by_http["pid"] == status["pid"] and by_http["generation"] == status["generation"]


def test_readyz_turns_503_at_once_on_a_graceful_stop_and_drain_delay_keeps_serving(serve):
    """TERM with drain_delay 2: /readyz says 503 at once while the app still answers; a slow request
    started during the delay finishes after the workers were told to stop, with /readyz still 503."""
    metrics_port = free_port()
    server = serve("plain:app", "--drain-delay", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    assert readyz(metrics_port) == (200, "ready")
    stopped_at = time.monotonic()
    server.signal(signal.SIGTERM)
    wait_until(lambda: readyz(metrics_port)[0] == 503, timeout=0.5, interval=0.02, message="/readyz to turn 503")
    assert readyz(metrics_port) == (503, "draining")
    assert requests.get(server.url + "/", timeout=5).status_code == 200, "still serving during the drain delay"
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(r=requests.get(server.url + "/slow?seconds=2.5", timeout=15)))
    time.sleep(max(0.0, 1.2 - (time.monotonic() - stopped_at)))
    thread.start()
    wait_until(lambda: "drain delay over" in server.log(), timeout=5, message="the drain delay to end")
    assert readyz(metrics_port) == (503, "draining"), "503 while the in-flight request finishes"
    thread.join()
    assert slow["r"].status_code == 200 and slow["r"].text == "slow done"
    server.proc.wait(15)
    assert server.proc.returncode == 0


def test_readyz_is_503_while_the_app_cannot_start(serve, tmp_path):
    metrics_port = free_port()
    server = serve("starletteapp:app", "--lifespan", "on", "--metrics-bind", f"127.0.0.1:{metrics_port}",
                   env={"MARKER_DIR": str(tmp_path), "FAIL_STARTUP": "1"}, wait=False)
    # The arbiter's line, not the worker's: it is logged after the arbiter reaped the worker and counted its
    # exit, which the worker's own "ASGI lifespan startup failed" can precede by a scrape.
    wait_until(lambda: "failed the app's startup" in server.log(), timeout=20, message="a failed start")
    assert "ASGI lifespan startup failed" in server.log()
    assert readyz(metrics_port) == (503, "starting")
    assert requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5).status_code == 200, "the arbiter itself is alive"
    text = metrics_text(metrics_port)
    assert sample(text, "appserver_ready") == 0
    assert sample(text, "appserver_worker_exits_total", reason="boot_failure") >= 1


def test_readyz_stays_200_through_a_failed_hup(serve, tmp_path):
    app_file = tmp_path / "generation.py"
    write_generation(app_file, 1)
    metrics_port = free_port()
    server = serve("generation:app", "--chdir", str(tmp_path), "--metrics-bind", f"127.0.0.1:{metrics_port}", cwd=tmp_path)
    app_file.write_text("raise RuntimeError('broken release')\n")
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    server.signal(signal.SIGHUP)
    seen = set()
    deadline = time.monotonic() + 15
    while "reload failed" not in server.log() and time.monotonic() < deadline:
        seen.add(readyz(metrics_port)[0])
        time.sleep(0.05)
    assert "reload failed" in server.log()
    seen.add(readyz(metrics_port)[0])
    assert seen == {200}, seen
    assert sample(metrics_text(metrics_port), "appserver_reloads_total", outcome="failure") == 1
    assert requests.get(server.url + "/", timeout=5).json()["generation"] == 1


def test_metrics_socket_from_socket_activation(tmp_path):
    """A socket named 'metrics' among those passed (systemd's FileDescriptorName=metrics) is the metrics
    endpoint's; the app's socket is the other one."""
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed")
    app_port, metrics_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{app_port}", "-l", f"127.0.0.1:{metrics_port}",
                             "--fdname=http:metrics", str(BINARY), "--virtualenv", VENV, "plain:app"],
                            cwd=APPS, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: readyz(metrics_port)[0] == 200, timeout=20, message="/readyz on the passed socket")
        assert requests.get(f"http://127.0.0.1:{app_port}/", timeout=5).text == "Hello, World!"
        # Counted once its response is flushed: a moment after the client may already have read it.
        wait_until(lambda: sample(metrics_text(metrics_port), "appserver_requests_total", method="GET", status="2xx") >= 1,
                   timeout=5, message="the request to be counted")
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_json_access_log_and_request_ids_in_environ_scope_and_log(serve, tmp_path):
    """A request's X-Request-ID is passed through; without one the server makes one. Either way the app
    sees it (environ or scope) and the JSON access log line carries it, with Gunicorn's atoms as keys."""
    access = tmp_path / "access.log"
    wsgi = serve("mirror:app", "--access-logfile", str(access), "--access-logformat", "json")
    passed = requests.get(wsgi.url + "/a?x=1", headers={"X-Request-ID": "lb-7f3a", "User-Agent": 'ua "quoted"'}, timeout=5).json()
    assert ["x-request-id", "lb-7f3a"] in passed["headers"]
    made = dict(requests.get(wsgi.url + "/b", timeout=5).json()["headers"])["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    asgi = serve("mirror:asgi", "--interface", "asgi", "--access-logfile", str(access), "--access-logformat", "json")
    scope_id = dict(requests.get(asgi.url + "/c", timeout=5).json()["headers"])["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", scope_id) and scope_id != made
    wait_until(lambda: len(access.read_text().splitlines()) >= 3, message="three access log lines")
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    first = next(l for l in lines if l["U"] == "/a")
    assert first["request_id"] == "lb-7f3a" and first["r"] == "GET /a?x=1 HTTP/1.1" and first["q"] == "x=1"
    assert first["s"] == 200 and isinstance(first["B"], int) and first["a"] == 'ua "quoted"' and first["h"] == "127.0.0.1"
    assert first["time"].endswith("Z") and isinstance(first["D"], int)
    assert next(l for l in lines if l["U"] == "/b")["request_id"] == made
    assert next(l for l in lines if l["U"] == "/c")["request_id"] == scope_id
    # Off: no header is added.
    plain = serve("mirror:app", "--request-id-header", "")
    assert "x-request-id" not in dict(requests.get(plain.url + "/", timeout=5).json()["headers"])


def test_error_log_entries_name_the_request(serve):
    server = serve("plain:app")
    assert requests.get(server.url + "/error", headers={"X-Request-ID": "trace-me-9"}, timeout=5).status_code == 500
    wait_until(lambda: "boom from the app" in server.log(), message="the traceback")
    line = next(l for l in server.log().splitlines() if "Error handling request /error" in l)
    assert "request_id=trace-me-9" in line, line


def hang(url, results, key):
    try:
        response = requests.get(url, timeout=30)
        results[key] = (response.status_code, time.monotonic())
    except requests.RequestException as error:
        results[key] = (str(error), time.monotonic())


def test_stuck_request_is_answered_504_with_threads_and_the_worker_serves_on(serve):
    metrics_port = free_port()
    server = serve("plain:app", "--threads", "4", "--timeout", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    worker = server.workers()[0]
    results = {}
    started = time.monotonic()
    thread = threading.Thread(target=hang, args=(server.url + "/hang", results, "hang"))
    thread.start()
    # Meanwhile the other threads serve.
    for _ in range(5):
        assert requests.get(server.url + "/pid", timeout=5).text == str(worker)
        time.sleep(0.3)
    thread.join()
    status, finished = results["hang"]
    assert status == 504 and 2 <= finished - started < 6, results
    assert server.workers() == [worker] and "WORKER TIMEOUT" not in server.log()
    assert "request timed out: no progress in 2 s" in server.log()
    text = metrics_text(metrics_port)
    assert sample(text, "appserver_request_timeouts_total") == 1
    assert sample(text, "appserver_requests_total", method="GET", status="5xx") == 1
    time.sleep(2.5)
    assert server.workers() == [worker], "one stuck thread of four does not make the worker silent"
    assert requests.get(server.url + "/pid", timeout=5).text == str(worker)


def test_worker_whose_every_thread_is_stuck_is_replaced_after_their_504s(serve):
    server = serve("plain:app", "--threads", "2", "--timeout", "2")
    worker = server.workers()[0]
    results = {}
    threads = [threading.Thread(target=hang, args=(server.url + "/hang", results, n)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[n][0] for n in range(2)] == [504, 504], results
    wait_until(lambda: server.workers() and worker not in server.workers(), timeout=15, message="the stuck worker to be replaced")
    assert "WORKER TIMEOUT" in server.log()
    server.wait_ready()
    assert requests.get(server.url + "/", timeout=5).status_code == 200


def test_stuck_asgi_request_is_answered_504_and_its_task_cancelled(serve, tmp_path):
    metrics_port = free_port()
    server = serve("hangapp:app", "--interface", "asgi", "--timeout", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}",
                   env={"MARKER_DIR": str(tmp_path)})
    worker = server.workers()[0]
    results = {}
    started = time.monotonic()
    thread = threading.Thread(target=lambda: results.update(r=requests.get(server.url + "/hang", headers={"X-Request-ID": "stuck-1"}, timeout=30)))
    thread.start()
    assert requests.get(server.url + "/", timeout=5).text == str(worker)
    thread.join()
    assert results["r"].status_code == 504 and time.monotonic() - started < 6
    wait_until(lambda: (tmp_path / "cancelled").exists(), timeout=5, message="the task to be cancelled")
    assert (tmp_path / "cancelled").read_text() == "stuck-1"
    assert server.workers() == [worker] and requests.get(server.url + "/", timeout=5).text == str(worker)
    assert sample(metrics_text(metrics_port), "appserver_request_timeouts_total") == 1
    assert "request_id=stuck-1" in server.log()


def test_metrics_endpoint_full_of_idle_clients_loses_no_request(serve):
    """64 clients that connect and say nothing take every slot; a 65th waits in the backlog (the
    arbiter does not poll its listener meanwhile) and is answered once they leave; the app serves on."""
    metrics_port = free_port()
    server = serve("plain:app", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    idle = [socket.create_connection(("127.0.0.1", metrics_port), timeout=5) for _ in range(64)]
    time.sleep(0.5)
    result = {}
    waiting = threading.Thread(target=lambda: result.update(r=requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=30)))
    waiting.start()
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    time.sleep(0.5)
    assert "r" not in result, "answered while every slot was taken"
    for s in idle:
        s.close()
    waiting.join()
    assert result["r"].status_code == 200 and result["r"].text == "ok\n"
