"""Reloads, worker count changes and recycling under wrk load (loopback, bounded): no request may fail."""
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import APPS, wait_until

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")


def run_wrk(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 30).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return total, (sum(map(int, errors.groups())) if errors else 0), (int(non2xx.group(1)) if non2xx else 0), out


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
    assert new and new != old, "the new arbiter writes the pid file"
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


GENERATION_APP = '''import os
LOADED = str(os.getpid())

def app(environ, start_response):
    body = ("%s %s" % (os.getppid(), LOADED)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_reload_upgrade_and_resize_timeline_under_load(serve, tmp_path):
    """HUP at 2 s, USR2 at 4 s, TTIN at 6 s, TTOU at 7 s, a HUP into a broken app at 8 s, under wrk for 10 s."""
    app_file = tmp_path / "generation.py"
    app_file.write_text(GENERATION_APP)
    pidfile = tmp_path / "app.pid"
    server = serve("generation:app", "--workers", "2", "--chdir", str(tmp_path), "--pid", str(pidfile), cwd=tmp_path, workers=2)
    first_arbiter = server.pid
    result = {}
    load = threading.Thread(target=lambda: result.update(out=run_wrk(server.url + "/", 10)))
    started = time.monotonic()
    load.start()

    def at(seconds, action):
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        action()

    at(2, lambda: os.kill(read_pid(pidfile), signal.SIGHUP))
    at(4, lambda: os.kill(read_pid(pidfile), signal.SIGUSR2))
    wait_until(lambda: read_pid(pidfile) not in (None, first_arbiter), timeout=5, message="the new arbiter's pid file")
    at(6, lambda: os.kill(read_pid(pidfile), signal.SIGTTIN))
    at(7, lambda: os.kill(read_pid(pidfile), signal.SIGTTOU))

    def break_and_reload():
        app_file.write_text("raise RuntimeError('broken release')\n")
        os.kill(read_pid(pidfile), signal.SIGHUP)

    at(8, break_and_reload)
    load.join()
    total, errors, non2xx, out = result["out"]
    assert total > 1000 and errors == 0 and non2xx == 0, out
    arbiter = read_pid(pidfile)
    assert arbiter != first_arbiter
    wait_until(lambda: "reload failed" in server.log(), timeout=10, message="the broken reload to be refused")
    # The broken reload left the working generation serving, under the new arbiter.
    body = requests.get(server.url + "/", timeout=5).text
    assert body.split()[0] == str(arbiter)
    os.kill(arbiter, signal.SIGTERM)
    wait_gone(arbiter)
