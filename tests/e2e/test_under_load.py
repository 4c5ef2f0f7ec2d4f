"""Reloads, worker count changes and recycling under wrk load (loopback, bounded): no request may fail."""
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

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
