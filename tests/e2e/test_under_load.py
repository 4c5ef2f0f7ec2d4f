"""Reloads, worker count changes and recycling under wrk load (loopback, bounded): no request may fail."""
import os
import re
import shutil
import signal
import threading
import time

import pytest
import requests

from conftest import APPS, run_wrk, wait_until

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")


def test_hup_ttin_ttou_under_load_fail_no_request(serve):
    server = serve("plain:app", "--workers", "2", workers=2)
    result = {}
    load = threading.Thread(target=lambda: result.update(out=run_wrk(server.url + "/", 9)))
    started = time.monotonic()
    load.start()
    for at, sig in [(2, signal.SIGHUP), (4, signal.SIGTTIN), (5.5, signal.SIGTTOU), (7, signal.SIGHUP)]:
        time.sleep(max(0.0, at - (time.monotonic() - started)))
        server.signal(sig)
    load.join()
    total, errors, non2xx, out = result["out"]
    assert total > 1000 and errors == 0 and non2xx == 0, out
    assert server.log().count("Handling signal: hup") == 2


def test_max_requests_recycling_under_load_fails_no_request(serve):
    server = serve("plain:app", "--workers", "2", "--max-requests", "500", "--max-requests-jitter", "50", workers=2)
    total, errors, non2xx, out = run_wrk(server.url + "/", 5)
    assert total > 1000 and errors == 0 and non2xx == 0, out
    assert server.log().count("Autorestarting worker") >= 2


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))


@pytest.mark.parametrize("app,args", [("plain:app", []), ("scopeecho:app", ["--interface", "asgi"])], ids=["wsgi", "asgi"])
def test_connections_that_come_and_go_leave_no_memory_behind(serve, app, args):
    """Tens of thousands of one-request connections (wrk, `Connection: close`, bounded in time): the
    worker's memory stays where the first ones left it. A connection's handler once kept itself, its
    channel context and pipeline alive after the connection closed: 2.5 KB a connection, without end."""
    server = serve(app, *args)
    worker = server.workers()[0]

    def churn(seconds):
        count, _, _, out = run_wrk(server.url + "/", seconds, threads=1, connections=16, extra=["-H", "Connection: close"])
        return count, out

    churn(2)   # warm-up: the allocator's pools, the caches, the interpreter's first objects
    before = rss_kb(worker)
    count, out = churn(3)
    grown = rss_kb(worker) - before
    assert count > 5000, out
    assert grown * 1024 / count < 200, f"the worker grew by {grown} KB over {count} connections"


def read_pid(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def test_usr2_binary_upgrade_under_load_fails_no_request(serve, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = serve("plain:app", "--workers", "2", "--pid", str(pidfile), workers=2)
    old = read_pid(pidfile)
    assert old == server.pid
    result = {}
    load = threading.Thread(target=lambda: result.update(out=run_wrk(server.url + "/", 7)))
    load.start()
    time.sleep(2)
    os.kill(old, signal.SIGUSR2)
    load.join()
    total, errors, non2xx, out = result["out"]
    assert total > 1000 and errors == 0 and non2xx == 0, out
    new = read_pid(pidfile)
    assert new and new != old, "the new arbiter writes the pid file\n" + server.log()
    assert server.proc.wait(15) == 0, "the old arbiter hands over and exits"
    assert not (tmp_path / "app.pid.oldbin").exists()
    log = server.log()
    assert "the new arbiter" in log and "taking over from the previous arbiter" in log
    assert requests.get(server.url + "/pid").status_code == 200
    os.kill(new, signal.SIGTERM)
    wait_gone(new)


def wait_gone(pid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} did not exit")


def assert_slow_request_survives(server, sig):
    """A 3 s request is in flight when `sig` reaches the arbiter: it still gets its whole answer."""
    result = {}
    t = threading.Thread(target=lambda: result.update(r=requests.get(server.url + "/slow?s=3", timeout=20)))
    t.start()
    time.sleep(1)
    server.signal(sig)
    t.join()
    assert result["r"].status_code == 200 and result["r"].content == b"slow done"


def test_slow_request_survives_usr2(serve, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = serve("plain:app", "--pid", str(pidfile))
    assert_slow_request_survives(server, signal.SIGUSR2)
    new = read_pid(pidfile)
    assert new != server.pid
    os.kill(new, signal.SIGTERM)
    wait_gone(new)


def test_failed_upgrade_keeps_the_old_generation_serving(serve, tmp_path):
    app_file = tmp_path / "swappable.py"
    app_file.write_text((APPS / "plain.py").read_text())
    pidfile = tmp_path / "app.pid"
    server = serve("swappable:app", "--chdir", str(tmp_path), "--pid", str(pidfile), cwd=tmp_path)
    app_file.write_text("raise RuntimeError('the new release is broken')\n")
    server.signal(signal.SIGUSR2)
    wait_until(lambda: "upgrade failed" in server.log(), timeout=20, message="the failed upgrade to be logged")
    assert server.proc.poll() is None
    assert read_pid(pidfile) == server.pid, "the pid file comes back"
    for _ in range(5):
        assert requests.get(server.url + "/").content == b"Hello, World!"


def test_slow_request_survives_hup(serve):
    server = serve("plain:app", "--workers", "2", workers=2)
    assert_slow_request_survives(server, signal.SIGHUP)


GENERATION_APP = """import os
from flask import Flask, jsonify

GENERATION = {generation}
LOADED_BY = os.getpid()
app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(generation=GENERATION, arbiter=os.getppid(), worker=LOADED_BY)
"""


def write_generation(path, generation):
    path.write_text(GENERATION_APP.format(generation=generation))
    # Python trusts cached bytecode of a file of the same size written within the same second.
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)


def test_reload_upgrade_and_resize_timeline_under_load(serve, tmp_path):
    """The issue's timeline under wrk -c64 for 20 s against a Flask app: HUP at 5 s, USR2 at 10 s, TTIN at
    12 s, TTOU at 14 s, a HUP into an app that no longer imports at 16 s. No request may fail, and the
    generation served goes 1, 2, 3 and stays at 3."""
    app_file = tmp_path / "generation.py"
    write_generation(app_file, 1)
    pidfile = tmp_path / "app.pid"
    server = serve("generation:app", "--workers", "2", "--chdir", str(tmp_path), "--pid", str(pidfile), cwd=tmp_path, workers=2)
    first_arbiter = server.pid
    result, seen = {}, []
    done = threading.Event()

    def sample():
        # What the server answers, ten times a second: (generation, arbiter pid).
        with requests.Session() as session:
            while not done.is_set():
                body = session.get(server.url + "/", timeout=10).json()
                seen.append((body["generation"], body["arbiter"], time.monotonic()))
                time.sleep(0.1)

    load = threading.Thread(target=lambda: result.update(out=run_wrk(server.url + "/", 20)))
    sampler = threading.Thread(target=sample)
    started = time.monotonic()
    load.start()
    sampler.start()

    def at(seconds, action):
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        action()

    def arbiter():
        return read_pid(pidfile)

    at(5, lambda: (write_generation(app_file, 2), os.kill(arbiter(), signal.SIGHUP)))
    at(10, lambda: (write_generation(app_file, 3), os.kill(arbiter(), signal.SIGUSR2)))
    wait_until(lambda: arbiter() not in (None, first_arbiter), timeout=5, message="the new arbiter's pid file")
    at(12, lambda: os.kill(arbiter(), signal.SIGTTIN))
    at(14, lambda: os.kill(arbiter(), signal.SIGTTOU))
    at(16, lambda: (app_file.write_text("raise RuntimeError('broken release')\n"), os.kill(arbiter(), signal.SIGHUP)))
    load.join()
    done.set()
    sampler.join()
    total, errors, non2xx, out = result["out"]
    assert total > 10000 and errors == 0 and non2xx == 0, out
    new_arbiter = arbiter()
    assert new_arbiter != first_arbiter
    wait_until(lambda: "reload failed" in server.log(), timeout=10, message="the broken reload to be refused")
    generations = [g for g, _, _ in seen]
    assert {1, 2, 3} <= set(generations) and generations[-1] == 3, generations
    for older, newer in [(1, 2), (2, 3)]:
        # Old and new workers overlap only while the old ones finish what they have.
        last_older = max(t for g, _, t in seen if g == older)
        first_newer = min(t for g, _, t in seen if g == newer)
        assert last_older < first_newer + 1.0, generations
    assert {a for g, a, _ in seen if g == 3} == {new_arbiter}, "generation 3 is the new arbiter's"
    assert {a for g, a, _ in seen if g < 3} == {first_arbiter}
    body = requests.get(server.url + "/", timeout=5).json()
    assert body["generation"] == 3 and body["arbiter"] == new_arbiter
    os.kill(new_arbiter, signal.SIGTERM)
    wait_gone(new_arbiter)


def minor_faults(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])   # minflt, the 10th field, summed over threads


@pytest.mark.parametrize("env,faults_expected", [({}, False), ({"MALLOC_TRIM_THRESHOLD_": "131072"}, True)],
                         ids=["default", "user-set-threshold"])
def test_threads_stream_without_faulting_their_buffers_back_in(serve, env, faults_expected):
    """With --threads, a streamed response's chunks are made by an app thread (in its malloc arena)
    and freed by the I/O thread once written. glibc trimmed that arena's top after each response and
    the next one faulted its buffers back in: ~100 page faults a 1 MiB response, twice the system
    time. The worker keeps freed memory for reuse unless the user set malloc's thresholds (then
    glibc's default, 128 KiB, shows the faults again)."""
    server = serve("plain:app", "--threads", "4", env=env)
    worker = server.workers()[0]

    def stream(seconds):
        count, _, _, out = run_wrk(server.url + "/stream", seconds, threads=1, connections=8)
        return count, out

    stream(1)   # warm-up: the arenas reach their working size
    before = minor_faults(worker)
    count, out = stream(3)
    faults = minor_faults(worker) - before
    assert count > 100, out
    # Trimmed, the arena faults back in 16-65 pages a response (fewer the fewer and larger the chunk
    # buffers: 100 before chunks became single writes); kept, 0.1 at most: 2 tells them apart.
    assert (faults / count > 2) == faults_expected, f"{faults} page faults over {count} responses of 1 MiB"
