"""`appserver reload|upgrade|status --pid`: the synchronous control commands, against a running server."""
import os
import shutil
import signal
import subprocess
import threading

import pytest
import requests

from conftest import BINARY, hosted_library, install_server, wait_until
from test_under_load import read_pid, run_wrk, wait_gone, write_generation


def control(*args, binary=BINARY, user=None, timeout=60):
    command = [str(binary), *args]
    if user:
        command = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def generation_server(serve, tmp_path):
    """A Flask app that answers with the generation written into its file, its arbiter and worker pid."""
    app_file = tmp_path / "generation.py"
    write_generation(app_file, 1)
    pidfile = tmp_path / "app.pid"
    server = serve("generation:app", "--workers", "2", "--chdir", str(tmp_path), "--pid", str(pidfile), cwd=tmp_path, workers=2)
    server.app_file, server.pidfile = app_file, pidfile
    return server


def served(server):
    return requests.get(server.url + "/", timeout=5).json()


def test_status_names_workers_generation_and_version(generation_server):
    # A worker counts once it has booted (it may still be starting when the first answer came).
    result = wait_until(lambda: (r := control("status", "--pid", str(generation_server.pid))).returncode == 0
                        and "2 workers serving" in r.stdout and r, message="both workers booted")
    assert f"pid {generation_server.pid}: 2 workers serving, generation 1" in result.stdout
    version = control("--version").stdout.strip()
    assert f"appserver {version}" in result.stdout


def test_reload_exits_0_once_the_new_generation_serves_and_1_when_it_cannot(generation_server):
    server = generation_server
    write_generation(server.app_file, 2)
    result = control("reload", "--pid", str(server.pidfile))
    assert result.returncode == 0, result
    assert "reloaded: 2 workers of generation 2 serving" in result.stdout
    # Exit 0 means served now: every answer from here on is the new generation.
    assert {served(server)["generation"] for _ in range(20)} == {2}

    server.app_file.write_text("raise RuntimeError('broken release')\n")
    result = control("reload", "--pid", str(server.pid))
    assert result.returncode == 1, result
    assert "reload failed: the new app did not boot" in result.stderr
    assert {served(server)["generation"] for _ in range(20)} == {2}, "the old generation keeps serving"
    assert server.proc.poll() is None


def test_upgrade_exits_0_once_the_new_arbiter_serves(generation_server):
    server = generation_server
    write_generation(server.app_file, 3)
    result = control("upgrade", "--pid", str(server.pid))
    assert result.returncode == 0, result
    new = read_pid(server.pidfile)
    assert new != server.pid and f"upgraded: the new arbiter {new} is serving" in result.stdout
    # Started by a double fork: init's child, not the old arbiter's (so systemd can supervise it).
    with open(f"/proc/{new}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != server.pid
    # Exit 0 means the old arbiter's workers stopped accepting: every new connection reaches the new one.
    assert {(answer := served(server))["arbiter"] for _ in range(20)} == {new} and answer["generation"] == 3
    assert server.proc.wait(15) == 0, "the old arbiter drains and exits"
    assert "generation 1" in control("status", "--pid", str(new)).stdout
    os.kill(new, signal.SIGTERM)
    wait_gone(new)


def test_failed_upgrade_exits_1_and_the_old_arbiter_keeps_serving(generation_server):
    server = generation_server
    server.app_file.write_text("raise RuntimeError('broken release')\n")
    result = control("upgrade", "--pid", str(server.pid))
    assert result.returncode == 1, result
    assert "upgrade failed: the new arbiter exited with status 3" in result.stderr
    assert f"the old arbiter {server.pid} keeps serving" in result.stderr
    assert served(server) | {"worker": 0} == {"generation": 1, "arbiter": server.pid, "worker": 0}
    assert read_pid(server.pidfile) == server.pid


def test_reload_upgrades_when_the_binary_on_disk_changed(serve, tmp_path):
    """After a package upgrade replaced the binary, `reload` (the units' ExecReload) runs the new one."""
    binary = install_server(tmp_path / "bin")
    library = binary.parent / "libappserver-hosted.so"
    app_file = tmp_path / "generation.py"
    write_generation(app_file, 1)
    pidfile = tmp_path / "app.pid"
    server = serve("generation:app", "--chdir", str(tmp_path), "--pid", str(pidfile), cwd=tmp_path,
                   binary=binary)
    assert hosted_library(server.pid) == str(library)
    install_server(binary.parent)   # the package upgrade
    assert hosted_library(server.pid) == f"{library} (deleted)"
    result = control("reload", "--pid", str(server.pid))
    assert result.returncode == 0, result
    assert "upgraded: the new arbiter" in result.stdout
    new = read_pid(pidfile)
    assert new != server.pid and hosted_library(new) == str(library), "the new arbiter runs the files now installed"
    assert "the binary on disk has changed" in server.log()
    assert server.proc.wait(15) == 0
    # The new arbiter runs the file now at that path: a reload is a plain reload again.
    result = control("reload", "--pid", str(new))
    assert result.returncode == 0 and "reloaded" in result.stdout, result
    os.kill(new, signal.SIGTERM)
    wait_gone(new)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_reload_and_upgrade_commands_under_load_fail_no_request(generation_server):
    server = generation_server
    result, outcomes = {}, []
    load = threading.Thread(target=lambda: result.update(out=run_wrk(server.url + "/", 8)))
    load.start()
    for command, generation in [("reload", 2), ("upgrade", 3), ("reload", 4)]:
        threading.Event().wait(1.5)
        write_generation(server.app_file, generation)
        outcomes.append(control(command, "--pid", str(server.pidfile)))
        assert served(server)["generation"] == generation
    load.join()
    assert all(o.returncode == 0 for o in outcomes), outcomes
    total, errors, non2xx, out = result["out"]
    assert total > 1000 and errors == 0 and non2xx == 0, out
    new = read_pid(server.pidfile)
    os.kill(new, signal.SIGTERM)
    wait_gone(new)


def test_no_wait_only_sends_the_signal(generation_server):
    server = generation_server
    result = control("reload", "--no-wait", "--pid", str(server.pid))
    assert result.returncode == 0 and result.stdout == "", result
    wait_until(lambda: "reload done" in server.log(), message="the reload the HUP started")


@pytest.mark.parametrize("args, status, message", [
    (["reload"], 2, "Missing expected argument '--pid <PID|FILE>'"),
    (["reload", "--pid", "/nonexistent.pid"], 2, "neither a pid nor a readable pid file"),
    (["upgrade", "--pid", "1", "--timeout", "0"], 2, "--timeout must be more than 0 seconds"),
    (["reload", "--pid", "999999999"], 1, "no process with pid 999999999"),
    (["status", "--pid", str(os.getpid())], 1, f"no appserver arbiter with pid {os.getpid()} is listening"),
])
def test_control_errors_are_one_clear_line(args, status, message):
    result = control(*args)
    assert result.returncode == status, result
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch to nobody")
def test_only_root_or_the_servers_user_may_control_it(generation_server):
    result = control("reload", "--pid", str(generation_server.pid), user="nobody")
    assert result.returncode == 1 and "permission denied" in result.stderr, result
    assert "Handling signal" not in generation_server.log() and "control request: reload" not in generation_server.log()


def test_reload_with_a_bad_config_file_fails_at_once_with_the_reason(serve, tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('app = "plain:app"\nworkers = 1\n')
    server = serve("plain:app", "-c", str(config))
    config.write_text('app = "plain:app"\nworkers = "many"\n')
    result = control("reload", "--pid", str(server.pid))
    assert result.returncode == 1, result
    assert "reload failed" in result.stderr and "workers" in result.stderr, result.stderr
    assert requests.get(server.url + "/").content == b"Hello, World!"


ENV_APP = """import json, os

def app(environ, start_response):
    names = environ["QUERY_STRING"].split(",")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({name: os.environ.get(name) for name in names}).encode()]
"""


def test_a_reload_sets_env_as_the_file_now_says(serve, tmp_path):
    """A variable dropped from `env` is gone after the reload (or back to its value from before the
    config set it), a changed one changes, also after an upgrade (USR2: the new arbiter inherits the
    old one's environment); a failed reload keeps the running generation's."""
    (tmp_path / "envapp.py").write_text(ENV_APP)
    config, pidfile = tmp_path / "server.toml", tmp_path / "app.pid"
    head = f'app = "envapp:app"\npythonpath = "{tmp_path}"\nworkers = 1\npidfile = "{pidfile}"\n'
    config.write_text(head + 'env = ["DROPPED=1", "CHANGED=old", "PRESET=from-config"]\n')
    server = serve("envapp:app", "-c", str(config), env={"PRESET": "from-the-environment"})
    names = "DROPPED,CHANGED,PRESET,ADDED"
    assert requests.get(server.url + f"/?{names}").json() == {
        "DROPPED": "1", "CHANGED": "old", "PRESET": "from-config", "ADDED": None}
    assert control("upgrade", "--pid", str(server.pid)).returncode == 0
    new = read_pid(pidfile)
    try:
        assert server.proc.wait(15) == 0
        config.write_text(head + 'env = ["CHANGED=new", "ADDED=yes"]\n')
        assert control("reload", "--pid", str(new)).returncode == 0
        expected = {"DROPPED": None, "CHANGED": "new", "PRESET": "from-the-environment", "ADDED": "yes"}
        assert requests.get(server.url + f"/?{names}").json() == expected
        # A reload whose app cannot boot: the running worker keeps its environment.
        config.write_text(head + 'env = ["DROPPED=again"]\n')
        (tmp_path / "envapp.py").write_text("raise RuntimeError('not today')\n")
        assert control("reload", "--pid", str(new)).returncode == 1
        assert requests.get(server.url + f"/?{names}").json() == expected
    finally:
        os.kill(new, signal.SIGTERM)
        wait_gone(new)
