"""Starts the real release binary against the apps in tests/apps, on loopback ports."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
BINARY = Path(os.environ.get("APPSERVER_BIN", ROOT / ".build" / "release" / "appserver"))
VENV = sys.prefix  # the test venv has Flask and Django
# BINARY is the launcher: it runs the server, these libraries found beside it, in Debian's python3.11.
SERVER_LIBRARIES = ("libappserver-hosted.so", "libappserver-preload.so")


def install_server(directory, name="appserver"):
    """The server as a package installs it, into `directory`: the launcher and its libraries beside it,
    each put in place as dpkg does (a new file renamed over the old name). Returns the launcher's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for source, target in [(BINARY, name)] + [(BINARY.parent / library, library) for library in SERVER_LIBRARIES]:
        shutil.copy(source, directory / f"{target}.new")
        os.rename(directory / f"{target}.new", directory / target)
    return directory / name


def hosted_library(pid):
    """The server library a hosted process runs (from its memory map), or None: /proc/PID/exe names
    python3.11 there, so this is what says which files a server runs."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.rstrip().endswith("libappserver-hosted.so") or "libappserver-hosted.so (deleted)" in line:
            return line.split(None, 5)[5].strip()
    return None


# A WSGI app (no dependencies: any Python's virtualenv serves it) that reports what the server's
# environment left it: the variables of interest, whether a child maps the server, the executable.
ENVIRONMENT_PROBE = '''
import json, os, subprocess, sys

def app(environ, start_response):
    child = subprocess.run(["cat", "/proc/self/maps"], capture_output=True, text=True).stdout
    body = json.dumps({
        "environ": {key: value for key, value in os.environ.items() if key.startswith(("APPSERVER", "LD_", "GLIBC_"))},
        "child_maps_server": [line.split()[-1] for line in child.splitlines() if "libappserver" in line],
        "executable": os.readlink("/proc/self/exe"),
        "comm": open("/proc/self/comm").read().strip(),
        "sys_executable": sys.executable,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def given(extra=None):
    """The variables of interest that the server is started with (the tests' own APPSERVER_BIN, say)."""
    environment = {**os.environ, **(extra or {})}
    return {key: value for key, value in environment.items() if key.startswith(("APPSERVER", "LD_", "GLIBC_"))}


def serve_probe(serve, tmp_path, env=None, **kwargs):
    """A server of ENVIRONMENT_PROBE (`kwargs`: serve's binary, venv), and what the probe answered."""
    import requests
    (tmp_path / "probe.py").write_text(ENVIRONMENT_PROBE)
    server = serve("probe:app", "--chdir", str(tmp_path), cwd=tmp_path, env=env, **kwargs)
    return server, requests.get(server.url + "/", timeout=10).json()


def exec_environment(pid):
    """The environment a process was exec'd with (what glibc read its tunables from)."""
    return dict(entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry)


# The larger malloc cache (hosted_image.h), in GLIBC_TUNABLES as a server is given it, `users` (None: unset):
# `execd`, as each of its processes was exec'd with it; `before`, what the launcher (or the embedded build)
# noted it was, to be put back for the app (None: nothing noted).
TCACHE_CASES = [
    (None, "glibc.malloc.tcache_count=64", ""),
    ("", "glibc.malloc.tcache_count=64", "="),
    # glibc ends each tunable's value in place as it reads them: the environment a process was exec'd with
    # shows the first one alone (ours, put first).
    ("glibc.malloc.trim_threshold=9000000", "glibc.malloc.tcache_count=64", "=glibc.malloc.trim_threshold=9000000"),
    ("glibc.malloc.tcache_count=3", "glibc.malloc.tcache_count=3", None),
]
TCACHE_CASE_IDS = ["unset", "empty", "other-tunables", "users-own-size"]


def check_malloc_cache(serve, tmp_path, users, execd, before, **kwargs):
    """Serves the probe given GLIBC_TUNABLES `users` (one of TCACHE_CASES; `kwargs`: serve's binary, venv):
    the arbiter and the workers were exec'd with `execd`, and the app sees the variable as it was given."""
    env = {} if users is None else {"GLIBC_TUNABLES": users}
    server, seen = serve_probe(serve, tmp_path, env=env, **kwargs)
    for pid in [server.pid, *server.workers()]:
        execd_with = exec_environment(pid)
        assert execd_with.get("GLIBC_TUNABLES") == execd
        assert execd_with.get("APPSERVER_GLIBC_TUNABLES_BEFORE") == before
    assert seen["environ"] == given(env)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def terminate(proc, timeout=10):
    """Stops a process this test started: TERM, then KILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(url, seconds, threads=2, connections=64, extra=()):
    """wrk -t2 -c64 (or as given) for `seconds` (bounded): (responses, socket errors, non-2xx/3xx answers, wrk's output)."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", *extra, url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return total, (sum(map(int, errors.groups())) if errors else 0), (int(non2xx.group(1)) if non2xx else 0), out


def wait_until(predicate, timeout=15.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


class Server:
    def __init__(self, app, *args, cwd=APPS, env=None, port=None, bind=None, tmp_path=None, binary=BINARY, venv=VENV,
                 pass_fds=()):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tmp_path or "/tmp") / f"appserver-{self.port}.log"
        binds = bind if bind is not None else [f"127.0.0.1:{self.port}"]
        self.argv = [str(binary), "--virtualenv", str(venv), *sum((["--bind", b] for b in binds), []), *args, app]
        full_env = dict(os.environ)
        full_env.pop("VIRTUAL_ENV", None)
        full_env.update(env or {})
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=full_env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     pass_fds=pass_fds)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return self.log_path.read_text()

    def workers(self):
        return children_of(self.pid)

    def wait_ready(self, workers=1, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            return self.log().count("Booting worker") >= workers and self.can_connect() and len(self.workers()) >= workers
        wait_until(ready, timeout, message="the server to boot")
        # A booted worker may still be importing; wait for a real answer.
        import requests
        wait_until(lambda: self._probe(requests), timeout, message="a first response")
        return self

    def _probe(self, requests):
        try:
            requests.get(self.url + "/", timeout=2, allow_redirects=False)
            return True
        except requests.RequestException:
            return False

    def can_connect(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in self.workers():
                    os.kill(child, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keeps each phase's report on the test item, so that `serve` can tell whether the test failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


@pytest.fixture
def serve(tmp_path, request):
    """serve(app, *args, workers=1) starts a server and stops it after the test; the logs of the
    servers of a failed test are printed (pytest shows them with the failure)."""
    started = []

    def start(app, *args, wait=True, workers=1, **kwargs):
        server = Server(app, *args, tmp_path=tmp_path, **kwargs)
        started.append(server)
        if wait:
            server.wait_ready(workers=workers)
        return server

    yield start
    for server in started:
        server.stop()
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for server in started:
            print(f"--- log of {' '.join(server.argv[1:])}\n{server.log()}")


def raw_request(port, data, read_timeout=5.0, host="127.0.0.1"):
    """Sends raw bytes and returns everything the server sends until it closes or goes quiet."""
    with socket.create_connection((host, port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


def read_response(sock_file):
    """Reads one HTTP/1.1 response (Content-Length or chunked) from a socket file."""
    status_line = sock_file.readline()
    headers = {}
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = sock_file.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(sock_file.readline().strip(), 16)
            if size == 0:
                sock_file.readline()
                break
            body += sock_file.read(size)
            sock_file.readline()
    return status_line.decode().strip(), headers, body
