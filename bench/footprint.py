"""Footprint of one appserver worker, as ../shared/BENCHMARKS.md asks: time from start to the first
200, worker RSS idle after boot, after 100k requests, and its growth over 1M requests (leaks)."""
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPSERVER = HERE.parent / ".build" / "release" / "appserver"
PORT = 8767


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_of(pid):
    deadline = time.time() + 10
    while time.time() < deadline:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise RuntimeError("no worker")


def load(requests):
    # wrk in fixed-duration slices until about `requests` were served (bounded in count and time).
    served = 0
    while served < requests:
        out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", "-d2s", f"http://127.0.0.1:{PORT}/"],
                             capture_output=True, text=True, timeout=30).stdout
        served += int(out.split(" requests in ")[0].split()[-1])
    return served


def main():
    module = sys.argv[1] if len(sys.argv) > 1 else "wsgi_hello"
    started = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", "1", str(APPSERVER), "--virtualenv", sys.prefix, "--bind", f"127.0.0.1:{PORT}",
                             "--chdir", str(HERE / "apps"), f"{module}:app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        first = time.perf_counter() - started
        worker = worker_of(proc.pid)
        idle = rss_kib(worker)
        load(100_000)
        after_100k = rss_kib(worker)
        served = load(1_000_000)
        after_1m = rss_kib(worker)
        print(f"| {module} | {first * 1000:.0f} ms | {idle / 1024:.1f} MiB | {after_100k / 1024:.1f} MiB | "
              f"{(after_1m - after_100k) / 1024:+.1f} MiB over {served / 1e6:.2f}M requests |")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


if __name__ == "__main__":
    main()
