"""Memory of a whole server (arbiter + 4 workers) with a small Django app, as issue 13 asks: the sum of
PSS (proportional set size: shared pages split among the processes that share them) of every process,
after each worker has served requests, and the anonymous part of it (heaps: what the kernel cannot
drop; the rest is file-backed code and data, reclaimable). appserver with and without --preload, against Gunicorn (sync)
with and without --preload, in one run. Usage: bench/run.sh memory [--workers 4] [--runs 3]"""
import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPSERVER = ROOT / ".build" / "release" / "appserver"
DJANGO = ROOT / "tests" / "apps" / "djangoproj"
PORT = 8771


def pss_kib(pid, field="Pss:"):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def wait_ready(proc, workers):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2) as response:
                if response.status == 200 and len(children(proc.pid)) >= workers:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


def warm(count):
    # Requests on new connections, so that every worker (accepting in turn) serves some.
    for _ in range(count):
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/?q=1", timeout=5) as response:
            response.read()


def measure(command, workers, env):
    proc = subprocess.Popen(command, cwd=DJANGO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(proc, workers)
        warm(400)
        time.sleep(1)
        pids = [proc.pid] + children(proc.pid)
        return sum(pss_kib(pid) for pid in pids) / 1024, sum(pss_kib(pid, "Pss_Anon:") for pid in pids) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    venv = sys.prefix
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="djangoproj.settings")
    common = ["--bind", f"127.0.0.1:{PORT}", "--workers", str(args.workers)]
    servers = {
        "appserver": [str(APPSERVER), "--virtualenv", venv, *common, "djangoproj.wsgi:application"],
        "appserver --preload": [str(APPSERVER), "--virtualenv", venv, "--preload", *common, "djangoproj.wsgi:application"],
        "gunicorn (sync)": [f"{venv}/bin/gunicorn", *common, "djangoproj.wsgi:application"],
        "gunicorn --preload": [f"{venv}/bin/gunicorn", "--preload", *common, "djangoproj.wsgi:application"],
    }
    print(f"PSS of the arbiter and {args.workers} workers, Django (tests/apps/djangoproj), after 400 requests; median of {args.runs}")
    print(f"{'':22s} {'PSS':>9s} {'of it anonymous':>16s}")
    for name, command in servers.items():
        figures = sorted(measure(command, args.workers, env) for _ in range(args.runs))
        total, anonymous = figures[len(figures) // 2]
        print(f"{name:22s} {total:5.1f} MiB {anonymous:10.1f} MiB   (PSS runs: {', '.join(f'{f[0]:.1f}' for f in figures)})", flush=True)


if __name__ == "__main__":
    main()
