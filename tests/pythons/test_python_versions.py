"""Flask (WSGI) and FastAPI on uvloop (ASGI) on each other CPython, 3.10 to 3.13, from a virtualenv of that
Python: served, reloaded by HUP and upgraded by USR2 under wrk load without a failed request; and a
virtualenv of another Python refused before any worker, by every build."""
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import ROOT, VERSIONS, e2e, interpreter

APPS = {
    "flask": """import os, platform, sys
from flask import Flask, jsonify

GENERATION = {generation}
app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(generation=GENERATION, python=platform.python_version(), arbiter=os.getppid(), worker=os.getpid(),
                   environ=sorted(os.environ))
""",
    "fastapi": """import asyncio, os, platform
from fastapi import FastAPI

GENERATION = {generation}
app = FastAPI()


@app.get("/")
async def index():
    return dict(generation=GENERATION, python=platform.python_version(), arbiter=os.getppid(), worker=os.getpid(),
                loop=type(asyncio.get_running_loop()).__module__.split(".")[0])
""",
}


def write_app(path, framework, generation):
    path.write_text(APPS[framework].replace("{generation}", str(generation)))
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)   # same size, same second: stale bytecode


def answers(server, count=10):
    with requests.Session() as session:
        return [session.get(server.url + "/", timeout=10).json() for _ in range(count)]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_served_reloaded_and_upgraded_under_load(host, framework, serve, tmp_path):
    app_file = tmp_path / "versioned.py"
    write_app(app_file, framework, 1)
    pidfile = tmp_path / "app.pid"
    server = serve("versioned:app", "--workers", "2", "--pid", str(pidfile), "--chdir", str(tmp_path),
                   cwd=tmp_path, workers=2, binary=host.binary, venv=host.venv)
    first = answers(server)
    assert {a["python"].rsplit(".", 1)[0] for a in first} == {host.version}
    assert {a["generation"] for a in first} == {1}
    if framework == "fastapi":
        assert {a["loop"] for a in first} == {"uvloop"}
        assert "ASGI event loop: uvloop" in server.log()

    # wrk for 9 s; HUP into generation 2 at 2 s, USR2 at 5 s. Not one request may fail.
    result = {}
    load = threading.Thread(target=lambda: result.update(out=e2e.run_wrk(server.url + "/", 9)))
    started = time.monotonic()
    load.start()
    time.sleep(2)
    write_app(app_file, framework, 2)
    server.signal(signal.SIGHUP)
    e2e.wait_until(lambda: {a["generation"] for a in answers(server)} == {2}, message="generation 2 to serve")
    time.sleep(max(0.0, 5 - (time.monotonic() - started)))
    os.kill(server.pid, signal.SIGUSR2)
    load.join()
    total, errors, non2xx, out = result["out"]
    assert total > 500 and errors == 0 and non2xx == 0, out

    assert server.proc.wait(20) == 0, "the old arbiter hands over and exits"
    new = int(pidfile.read_text())
    try:
        assert new != server.pid
        after = answers(server)
        assert {a["arbiter"] for a in after} == {new}
        assert {a["python"].rsplit(".", 1)[0] for a in after} == {host.version}
        assert {a["generation"] for a in after} == {2}
    finally:
        os.kill(new, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{new}"):
            time.sleep(0.1)


def refusal(binary, venv, *extra):
    """Runs `binary` alone (no appserver-python3.X beside it or on PATH to hand over to): its one line."""
    out = subprocess.run([str(binary), "--virtualenv", str(venv), *extra, "plain:app"], cwd=e2e.APPS,
                         capture_output=True, text=True, timeout=30, env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert out.returncode == 2, out
    assert "\n" not in out.stderr.strip() and "Booting worker" not in out.stdout + out.stderr, out
    return out.stderr.strip()


def alone(binary, directory):
    directory.mkdir(exist_ok=True)
    shutil.copy(binary, directory / binary.name)
    return directory / binary.name


def test_a_virtualenv_of_another_python_is_refused_by_every_build(host, tmp_path):
    """The build for 3.X refuses Debian's 3.11 virtualenv and those of the other versions here; the
    Debian build refuses 3.X's. Each line names both versions and what to do."""
    binary = alone(host.binary, tmp_path / "alone")
    others = [(e2e.BINARY, "3.11", host.venv, host.version), (binary, host.version, e2e.VENV, "3.11")]
    for version in VERSIONS:
        venv = ROOT / f".venv-python{version}"
        if version != host.version and (venv / "pyvenv.cfg").exists():
            others.append((binary, host.version, venv, version))
    for binary, embedded, venv, made in others:
        for extra in ([], ["--check-config"]):
            line = refusal(binary, venv, *extra)
            assert f"it was made by Python {made}, and this appserver embeds Python {embedded}" in line, line
            assert f"python{embedded} -m venv" in line and f"built for Python {made}" in line, line


def test_the_build_checks_the_interpreter_it_is_given(tmp_path):
    """`make build PYTHON=...` on an interpreter appserver cannot embed stops with one clear line."""
    old = interpreter("3.9") or interpreter("3.8")
    if old is None:
        pytest.skip("no CPython older than 3.10 on this machine")
    out = subprocess.run([str(ROOT / "scripts" / "python-build-env"), str(old)], capture_output=True, text=True)
    assert out.returncode != 0 and "appserver serves CPython 3.10 to 3.13" in out.stderr, out


@pytest.mark.parametrize("users, execd, before", e2e.TCACHE_CASES, ids=e2e.TCACHE_CASE_IDS)
def test_the_build_execs_itself_with_a_larger_malloc_cache_and_the_app_sees_the_users_tunables(host, serve, tmp_path, monkeypatch,
                                                                                               users, execd, before):
    """With no launcher to add the per-thread malloc cache's size (hosted_image.h), which glibc reads only at
    exec, the build execs itself once with it: as tests/e2e checks of the launcher, the user's own size
    wins, and the app and its children see GLIBC_TUNABLES as the server was given it."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    e2e.check_malloc_cache(serve, tmp_path, users, execd, before, binary=host.binary, venv=host.venv)


def test_appserver_hands_over_to_the_build_for_the_virtualenvs_python(host, serve, tmp_path, monkeypatch):
    """`appserver` given a virtualenv of 3.X execs `appserver-python3.X` installed beside it or on PATH:
    the same pid serves the app on 3.X, with the malloc cache's size (the launcher's was put back before
    the handover: the build adds its own), and a USR2 upgrade starts that build again."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    beside = tmp_path / "bin"
    e2e.install_server(beside)
    shutil.copy(host.binary, beside / f"appserver-python{host.version}")
    app_file = tmp_path / "versioned.py"
    write_app(app_file, "flask", 1)
    pidfile = tmp_path / "app.pid"
    server = serve("versioned:app", "--pid", str(pidfile), "--chdir", str(tmp_path), cwd=tmp_path,
                   binary=beside / "appserver", venv=host.venv)
    served = answers(server, 3)
    assert {a["python"].rsplit(".", 1)[0] for a in served} == {host.version}
    assert {a["arbiter"] for a in served} == {server.pid}, "the process started is the one that serves"
    assert os.readlink(f"/proc/{server.pid}/exe") == str(beside / f"appserver-python{host.version}")
    assert "APPSERVER_PYTHON_HANDOVER" not in served[0]["environ"], "the app's environment is as it was given"
    assert not {"GLIBC_TUNABLES", "APPSERVER_GLIBC_TUNABLES_BEFORE"} & set(served[0]["environ"])
    assert e2e.exec_environment(server.pid).get("GLIBC_TUNABLES") == "glibc.malloc.tcache_count=64"

    os.kill(server.pid, signal.SIGUSR2)
    assert server.proc.wait(20) == 0, "the old arbiter hands over and exits"
    new = int(pidfile.read_text())
    try:
        assert {a["python"].rsplit(".", 1)[0] for a in answers(server, 3)} == {host.version}
        assert os.readlink(f"/proc/{new}/exe") == str(beside / f"appserver-python{host.version}")
        assert e2e.exec_environment(new).get("GLIBC_TUNABLES") == "glibc.malloc.tcache_count=64"
    finally:
        os.kill(new, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{new}"):
            time.sleep(0.1)

    # On PATH rather than beside it; --check-config goes through the same handover.
    elsewhere = tmp_path / "path"
    elsewhere.mkdir()
    (beside / f"appserver-python{host.version}").rename(elsewhere / f"appserver-python{host.version}")
    out = subprocess.run([str(beside / "appserver"), "--virtualenv", str(host.venv), "--check-config", "plain:app"],
                         cwd=e2e.APPS, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PATH=f"{elsewhere}:{os.environ['PATH']}"))
    assert out.returncode == 0 and "configuration OK" in out.stdout, out


def test_a_build_that_does_not_embed_the_python_its_name_says_is_refused_not_looped(host, tmp_path):
    """appserver-python3.X that is really the build for another version: one line, exit 2, no exec loop."""
    beside = tmp_path / "bin"
    e2e.install_server(beside)
    e2e.install_server(beside, f"appserver-python{host.version}")   # the Debian 3.11 build, misnamed
    line = refusal(beside / "appserver", host.venv)
    assert f"handed it over to {beside}/appserver-python{host.version} for Python {host.version}" in line, line
    assert "embeds Python 3.11" in line and f"make build PYTHON=python{host.version}" in line, line
