"""Runs the benchmark of ../shared/BENCHMARKS.md: one worker pinned to CPU 1, wrk pinned to CPU 0,
servers alternated (A B A B A B), the median of three runs; prints a markdown table."""
import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
BIN = Path(os.environ.get("VIRTUAL_ENV", sys.prefix)) / "bin"
# The build to measure: Debian's python3 build, or APPSERVER_BIN (one for another CPython, bench/pythons.py).
APPSERVER = Path(os.environ.get("APPSERVER_BIN", ROOT / ".build" / "release" / "appserver"))
# Another build of appserver to compare with in the same run (before/after a change): `appserver-baseline`.
BASELINE = os.environ.get("APPSERVER_BASELINE", "")
PORT = 8765


def appserver(binary, threads=1, *extra, interface=True):
    """An appserver entry: one worker of `binary`, `--threads threads`, the interface given (or found)."""
    def command(iface, module):
        return [str(binary), "--virtualenv", sys.prefix, "--bind", f"127.0.0.1:{PORT}", "--workers", "1",
                "--threads", str(threads), *(["--interface", iface] if interface else []), *extra,
                "--chdir", str(APPS), f"{module}:app"]
    return command, {"wsgi", "asgi"} if interface else {"wsgi"}


def gunicorn_gthread(threads, *extra):
    return (lambda iface, module: [str(BIN / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", str(threads),
                                   "-b", f"127.0.0.1:{PORT}", *extra, f"{module}:app"], {"wsgi"})


# The `-accesslog` servers write an access line a request to the same file on disk (nearly every
# deployment logs its requests): appserver and Gunicorn by --access-logfile, Granian and Uvicorn through
# Python's logging (a FileHandler on their access loggers, by --log-config).
ACCESS_DIR = Path(tempfile.mkdtemp(prefix="bench-access-"))
atexit.register(shutil.rmtree, ACCESS_DIR, True)
ACCESS_LOG = str(ACCESS_DIR / "access.log")
ACCESS_LOG_CONFIG = ACCESS_DIR / "logging.json"
ACCESS_LOG_CONFIG.write_text(json.dumps({
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"access": {"format": "%(message)s"}},
    "handlers": {"access": {"class": "logging.FileHandler", "filename": ACCESS_LOG, "formatter": "access"}},
    "loggers": {name: {"handlers": ["access"], "level": "INFO", "propagate": False} for name in ("granian.access", "uvicorn.access")},
}))


def uwsgi(threads):
    return (lambda iface, module: [str(BIN / "uwsgi"), "--http11-socket", f"127.0.0.1:{PORT}", "--master", "--processes", "1",
                                   "--threads", str(threads), "--module", f"{module}:app", "--disable-logging", "--need-app"], {"wsgi"})


# Each server: its command line for (interface, module), and the interfaces it serves.
SERVERS = {
    "appserver": appserver(APPSERVER),
    "appserver-baseline": appserver(BASELINE or "/nonexistent"),
    # The metrics endpoint on (the workers count every request for it), and request ids off.
    "appserver-metrics": appserver(APPSERVER, 1, "--metrics-bind", f"127.0.0.1:{PORT + 1}"),
    "appserver-noreqid": appserver(APPSERVER, 1, "--request-id-header", ""),
    # Files by reads and writes: no Path Send extension, so Starlette's FileResponse reads the file itself.
    "appserver-nosendfile": appserver(APPSERVER, 1, "--no-sendfile"),
    "appserver-t2": appserver(APPSERVER, 2, interface=False),
    "appserver-t4": appserver(APPSERVER, 4, interface=False),
    "appserver-baseline-t4": appserver(BASELINE or "/nonexistent", 4, interface=False),
    # Threads as many as wrk's connections: what an app that waits on I/O is given when threads are cheap.
    "appserver-t64": appserver(APPSERVER, 64, interface=False),
    "appserver-baseline-t64": appserver(BASELINE or "/nonexistent", 64, interface=False),
    "granian": (lambda iface, module: [str(BIN / "granian"), "--interface", iface, "--workers", "1", "--runtime-threads", "2", "--host", "127.0.0.1", "--port", str(PORT), "--no-ws", f"{module}:app"], {"wsgi", "asgi"}),
    "granian-default": (lambda iface, module: [str(BIN / "granian"), "--interface", iface, "--workers", "1", "--host", "127.0.0.1", "--port", str(PORT), "--no-ws", f"{module}:app"], {"wsgi", "asgi"}),
    "uvicorn": (lambda iface, module: [str(BIN / "uvicorn"), "--workers", "1", "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1", "--port", str(PORT), f"{module}:app"], {"asgi"}),
    "appserver-accesslog": appserver(APPSERVER, 1, "--access-logfile", ACCESS_LOG),
    "appserver-baseline-accesslog": appserver(BASELINE or "/nonexistent", 1, "--access-logfile", ACCESS_LOG),
    "granian-accesslog": (lambda iface, module: [str(BIN / "granian"), "--interface", iface, "--workers", "1", "--runtime-threads", "2", "--host", "127.0.0.1", "--port", str(PORT), "--no-ws",
                                                 "--access-log", "--log-config", str(ACCESS_LOG_CONFIG), f"{module}:app"], {"wsgi", "asgi"}),
    "uvicorn-accesslog": (lambda iface, module: [str(BIN / "uvicorn"), "--workers", "1", "--http", "httptools", "--loop", "uvloop", "--log-config", str(ACCESS_LOG_CONFIG),
                                                 "--host", "127.0.0.1", "--port", str(PORT), f"{module}:app"], {"asgi"}),
    "gunicorn-gthread-accesslog": gunicorn_gthread(4, "--access-logfile", ACCESS_LOG),
    "gunicorn-gthread": gunicorn_gthread(4),
    "gunicorn-gthread-64": gunicorn_gthread(64),
    "gunicorn-sync": (lambda iface, module: [str(BIN / "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{PORT}", f"{module}:app"], {"wsgi"}),
    # Not a peer but the limit: Debian's nginx answering `return 200` on the same pinned core, no Python.
    "nginx": (lambda iface, module: nginx_command(), {"wsgi", "asgi"}),
    # A uWSGI thread keeps one keep-alive connection as long as the client does: with 4 threads, 4 of
    # wrk's 64 connections are served and 60 wait in the accept queue, uncounted by wrk. Its req/s is a
    # throughput figure; its latencies compare only as uwsgi-t64's (a thread for every connection).
    "uwsgi": uwsgi(4),
    "uwsgi-t64": uwsgi(64),
}

# Each bench: (module in apps/, extra wrk arguments, request body size, interface).
BENCHES = {
    "wsgi-hello": ("wsgi_hello", [], None, "wsgi"),
    "flask-json": ("flask_json", [], None, "wsgi"),
    # The hello app with 24 request headers as a browser behind a proxy sends them (bench/headers.lua).
    "wsgi-hello-headers": ("wsgi_hello", ["-s", str(HERE / "headers.lua")], None, "wsgi"),
    # A new connection for every request, as nginx's uwsgi_pass and a proxy_pass without upstream
    # keepalive make them: what accepting, setting up and closing a connection costs.
    "wsgi-hello-close": ("wsgi_hello", ["-H", "Connection: close"], None, "wsgi"),
    "echo-4k": ("wsgi_echo", ["-s", str(HERE / "post4k.lua")], 4096, "wsgi"),
    "stream-1m": ("wsgi_stream", [], None, "wsgi"),
    "asgi-hello": ("asgi_hello", [], None, "asgi"),
    "asgi-hello-headers": ("asgi_hello", ["-s", str(HERE / "headers.lua")], None, "asgi"),
    "fastapi-json": ("fastapi_json", [], None, "asgi"),
    # A sync `def` endpoint: a hop to anyio's worker thread and back on every request.
    "fastapi-sync": ("fastapi_sync", [], None, "asgi"),
    "asgi-echo-4k": ("asgi_echo", ["-s", str(HERE / "post4k.lua")], 4096, "asgi"),
    "asgi-stream-1m": ("asgi_stream", [], None, "asgi"),
    # Framework apps beyond the micro ones: what routing, middleware and request objects cost.
    "starlette-routes": ("starlette_routes", [], None, "asgi"),
    # Starlette's FileResponse: a file sent by path (Path Send) or read by the app.
    "starlette-file-1m": ("starlette_file", [], None, "asgi"),
    "starlette-file-16k": ("starlette_file_16k", [], None, "asgi"),
    "django-wsgi": ("django_wsgi", [], None, "wsgi"),
    "django-asgi": ("django_asgi", [], None, "asgi"),
    # A framework-length call (~45 us of counting) that touches almost no memory: with fastapi-json and
    # flask-json, it tells the cost of a slower request rate from that of a large app's caches.
    "wsgi-spin": ("wsgi_spin", [], None, "wsgi"),
    "asgi-spin": ("asgi_spin", [], None, "asgi"),
    # 5 ms of waiting per request: what threads (--threads 4, gthread 4) and an event loop must overlap.
    "wsgi-sleep": ("wsgi_sleep", [], None, "wsgi"),
    "asgi-sleep": ("asgi_sleep", [], None, "asgi"),
}
# Benches run only when named (`--benches`): they explain the others' figures rather than compare servers.
DIAGNOSTIC_BENCHES = {"wsgi-spin", "asgi-spin"}
# Benches without an app-call ceiling: a file response's work is the server's sending, and Starlette's
# FileResponse waits in the ceiling loop's receive() for a disconnect that never comes.
NO_CEILING_BENCHES = {"starlette-file-1m", "starlette-file-16k"}
# The benches nginx's `return 200` stands beside (it answers the same bytes as the hello apps).
LIMIT_BENCHES = {"wsgi-hello", "asgi-hello"}
NGINX_CONFIG = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 100000000;   # the others never close a busy keep-alive connection either
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "Hello, World!"; }}
    }}
}}
"""


def nginx_command():
    directory = tempfile.mkdtemp(prefix="bench-nginx-")
    atexit.register(shutil.rmtree, directory, True)
    config = Path(directory) / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(dir=directory, port=PORT))
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", directory, "-c", str(config)]


def wait_port(timeout=20, port=PORT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def command(server, bench):
    """The server's command line for the bench, or None when it does not serve that bench's interface."""
    module, _, _, interface = BENCHES[bench]
    make, interfaces = SERVERS[server]
    if interface not in interfaces or (server == "nginx" and bench not in LIMIT_BENCHES):
        return None
    argv = make(interface, module)
    return argv if Path(argv[0]).exists() else None


def start(server, bench, argv=None, cpus="1", port=PORT):
    """Starts the server (its command for the bench unless `argv` is given) pinned to `cpus` (None: not
    pinned), waits for its port (`argv`'s own, when it binds another) and checks its answer; None when it
    does not serve the bench."""
    argv = argv or command(server, bench)
    if argv is None:
        return None
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen([*pin, *argv], cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(APPS)}, start_new_session=True)
    wait_port(port=port)
    # Check the answer before measuring: a fast wrong answer is no result.
    data = b"a" * 4096 if BENCHES[bench][2] else None
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=data), timeout=5) as r:
        assert r.status == 200, r.status
        r.read()
    return proc


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)


def ceiling_calls(module, body, interface):
    """The app's calls a second in bench/ceiling.py's loop (ceiling_asgi.py's for ASGI), pinned to the
    servers' core; None when the loop printed no figure."""
    measure = HERE / ("ceiling_asgi.py" if interface == "asgi" else "ceiling.py")
    out = subprocess.run(["taskset", "-c", "1", sys.executable, str(measure), str(APPS), module] + ([str(body)] if body else []),
                         capture_output=True, text=True).stdout.strip()
    try:
        return float(out)
    except ValueError:
        return None


def wrk(bench, seconds):
    return run_wrk(f"http://127.0.0.1:{PORT}/", seconds, BENCHES[bench][1])


def run_wrk(url, seconds, extra=(), threads=1, connections=64, cpus="0"):
    """wrk pinned to CPU 0 (cpus=None: not pinned), one thread, 64 connections: req/s, p50 and p99 in ms,
    errors, non-2xx."""
    pin = ["taskset", "-c", cpus] if cpus else []
    out = subprocess.run([*pin, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": latency(50), "p99": latency(99),
            "errors": sum(map(int, errors.groups())) if errors else 0, "non2xx": int(non2xx.group(1)) if non2xx else 0}


def rss_kib(pid):
    total = 0
    for p in [pid] + [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="appserver,granian,uvicorn,gunicorn-gthread,uwsgi")
    parser.add_argument("--benches", default=",".join(b for b in BENCHES if b not in DIAGNOSTIC_BENCHES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--steal-retries", type=int, default=2,
                        help="a run that loses over 5%% of a measuring core to the hypervisor (bench/machine.py) is "
                             "made again up to this many times, and the least stolen one kept")
    args = parser.parse_args()
    servers = args.servers.split(",")
    rows = []
    for bench in args.benches.split(","):
        module, _, body, interface = BENCHES[bench]
        results = {s: [] for s in servers}
        ceilings = []
        for run in range(args.runs):
            # The ceiling is measured again each round, next to the runs it is the ceiling of: this
            # machine's speed moves by a quarter within minutes, and a single ceiling taken at the
            # start made the efficiency column read whatever the first seconds were.
            ceilings.append(None if bench in NO_CEILING_BENCHES else ceiling_calls(module, body, interface))
            for server in servers:
                proc = start(server, bench)
                if proc is None:
                    continue
                try:
                    wrk(bench, 2)  # warm-up
                    # The worse of the two measuring cores' (wrk's and the server's) steal in the run; a
                    # run stolen from is made again (--steal-retries), and the least stolen one kept.
                    result, steal, made = machine.least_stolen(lambda: wrk(bench, args.seconds), args.steal_retries)
                    results[server].append(dict(result, ceiling=ceilings[-1], steal=steal, retried=made - 1))
                finally:
                    stop(proc)
        ceiling = statistics.median(ceilings) if all(ceilings) else None
        for server in servers:
            if not results[server]:
                continue
            runs = results[server]
            median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            # Efficiency run by run (a run's req/s over its own round's ceiling), then the median.
            efficiency = statistics.median(r["rps"] / r["ceiling"] for r in runs) if ceiling else None
            rows.append((bench, server, median, sum(r["errors"] for r in runs), sum(r["non2xx"] for r in runs), ceiling, efficiency,
                         [r["steal"] for r in runs]))
            print(f"{bench:12} {server:18} {median['rps']:>10.0f} r/s  p50 {median['p50']:.2f} ms  p99 {median['p99']:.2f} ms  "
                  f"errors {rows[-1][3]} non2xx {rows[-1][4]}  runs {[round(r['rps']) for r in runs]}"
                  f"  steal {[round(r['steal'], 1) for r in runs]}  retried {sum(r['retried'] for r in runs)}"
                  + (f"  ceilings {[round(c) for c in ceilings]}" if ceiling else ""), flush=True)
    print()
    print("| app | server | req/s (median of %d) | p50 ms | p99 ms | vs best peer | socket errors / non-2xx "
          "| ceiling calls/s (median) | efficiency (median of the runs') | steal (worst run) |" % args.runs)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bench in args.benches.split(","):
        bench_rows = [r for r in rows if r[0] == bench]
        peers = [r[2]["rps"] for r in bench_rows if not r[1].startswith("appserver") and r[1] != "nginx"]
        best_peer = max(peers) if peers else None
        for _, server, m, errors, non2xx, ceiling, efficiency, steal in bench_rows:
            ratio = f"{m['rps'] / best_peer:.2f}x" if best_peer else "-"
            calls, eff = (f"{ceiling:.0f}", f"{efficiency:.0%}") if ceiling else ("-", "-")
            print(f"| {bench} | {server} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {ratio} | {errors} / {non2xx} "
                  f"| {calls} | {eff} | {machine.steal_text(steal)} |")
    if any(max(r[7]) > machine.NOISY_STEAL_PERCENT for r in rows):
        print(f"\nRows marked noisy had a run with over {machine.NOISY_STEAL_PERCENT:.0f}% of a measuring core stolen by the "
              "hypervisor (bench/machine.py): their req/s and p99 are the host's as much as the server's; run them again.")


if __name__ == "__main__":
    main()
