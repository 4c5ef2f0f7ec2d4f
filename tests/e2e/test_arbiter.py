"""The arbiter: worker supervision, timeouts, graceful stop, TTIN/TTOU, max-requests, boot failure."""
import os
import re
import signal
import threading
import time

import requests

from conftest import APPS, Server, wait_until


def test_killed_worker_is_replaced(serve):
    server = serve("plain:app", "--workers", "2", workers=2)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(server.workers()) == 2 and victim not in server.workers(), message="a replacement worker")
    for _ in range(20):
        assert requests.get(server.url + "/").status_code == 200
    assert "was sent SIGKILL" in server.log()


def test_hung_request_gets_its_worker_replaced_after_timeout(serve):
    # A sync worker (threads=1) runs the request on the I/O thread: nothing else can answer it, so the
    # worker is replaced, as Gunicorn's sync worker is (with threads > 1 or ASGI it is answered 504:
    # test_observability.py).
    server = serve("plain:app", "--timeout", "2", "--threads", "1")
    hung = server.workers()[0]
    try:
        requests.get(server.url + "/hang", timeout=15)
        raise AssertionError("a hung request must not get an answer")
    except requests.RequestException:
        pass
    wait_until(lambda: server.workers() and hung not in server.workers(), timeout=15, message="the hung worker to be replaced")
    assert "WORKER TIMEOUT" in server.log()
    server.wait_ready()
    assert requests.get(server.url + "/").status_code == 200


def test_idle_worker_is_not_killed_by_the_timeout(serve):
    server = serve("plain:app", "--timeout", "1")
    pid = server.workers()
    time.sleep(3)
    assert server.workers() == pid
    assert requests.get(server.url + "/slow?s=0.5").status_code == 200


def test_term_lets_a_slow_request_finish(serve):
    server = serve("plain:app", "--graceful-timeout", "20")
    result = {}

    def slow():
        result["response"] = requests.get(server.url + "/slow?s=3", timeout=20)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1)
    server.signal(signal.SIGTERM)
    t.join()
    assert result["response"].status_code == 200 and result["response"].content == b"slow done"
    assert server.proc.wait(15) == 0
    assert "Shutting down: Master" in server.log()


def test_int_stops_fast(serve):
    server = serve("plain:app")
    def slow_request():
        try:
            requests.get(server.url + "/slow?s=10", timeout=20)
        except requests.RequestException:
            pass   # a fast stop may cut it off: that is the point

    threading.Thread(target=slow_request, daemon=True).start()
    time.sleep(0.5)
    started = time.monotonic()
    server.signal(signal.SIGINT)
    server.proc.wait(10)
    assert time.monotonic() - started < 5


def test_ttin_and_ttou_change_the_worker_count(serve):
    server = serve("plain:app", "--workers", "2", workers=2)
    server.signal(signal.SIGTTIN)
    wait_until(lambda: len(server.workers()) == 3, message="3 workers")
    server.signal(signal.SIGTTIN)
    wait_until(lambda: len(server.workers()) == 4, message="4 workers")
    server.signal(signal.SIGTTOU)
    wait_until(lambda: len(server.workers()) == 3, message="3 workers again")
    assert requests.get(server.url + "/").status_code == 200


def test_max_requests_recycles_workers_without_errors(serve):
    server = serve("plain:app", "--workers", "2", "--max-requests", "20", "--max-requests-jitter", "5", workers=2)
    first = set(server.workers())
    session = requests.Session()
    for _ in range(150):
        assert session.get(server.url + "/").status_code == 200
    wait_until(lambda: not first & set(server.workers()), message="all first workers recycled")
    assert "Autorestarting worker" in server.log()


def test_hup_reload_replaces_the_workers(serve):
    server = serve("plain:app", "--workers", "2", workers=2)
    before = set(server.workers())
    server.signal(signal.SIGHUP)
    wait_until(lambda: len(server.workers()) == 2 and not before & set(server.workers()), message="new workers after HUP")
    assert requests.get(server.url + "/").status_code == 200


def test_usr1_reopens_log_files(serve, tmp_path):
    access = tmp_path / "access.log"
    server = serve("plain:app", "--access-logfile", str(access))
    requests.get(server.url + "/")
    wait_until(lambda: access.exists() and access.read_text().count("\n") >= 1, message="an access line")
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(lambda: access.exists(), message="the reopened access log")
    time.sleep(0.3)
    requests.get(server.url + "/")
    wait_until(lambda: access.read_text().count("\n") == 1, message="a line in the new file")


def test_app_import_error_stops_the_arbiter_with_the_error(tmp_path):
    server = Server("broken:application", "--workers", "2", tmp_path=tmp_path)
    assert server.proc.wait(30) == 3
    log = server.log()
    assert "ModuleNotFoundError: No module named 'this_module_does_not_exist'" in log
    assert "Worker failed to boot" in log
    assert log.count("Booting worker") <= 2, "the arbiter must not respawn in a loop"
    # The worker's last words, logged by the arbiter when it reaps the worker (a journal entry of a
    # process that exited at once could be filed under no unit).
    told = re.search(r"\[(\d+)\] \[ERROR\] Worker \(pid:(\d+)\): Exception in worker process while importing 'broken':\n", log)
    assert told and told[1] == str(server.proc.pid) and told[2] != told[1], log
    server.stop()


def test_a_key_error_while_importing_is_a_failed_import_with_its_traceback(tmp_path):
    """A setting missing from the environment (`os.environ["SETTING"]` in the app's module) fails the
    import, exit status 3, with the traceback; a KeyError is a LookupError, which must not be taken for
    "no such app" (status 4, the last line only)."""
    (tmp_path / "needs_setting.py").write_text('import os\nSETTING = os.environ["E2E_UNSET_SETTING"]\napp = None\n')
    server = Server("needs_setting:app", "--pythonpath", str(tmp_path), tmp_path=tmp_path)
    assert server.proc.wait(30) == 3
    log = server.log()
    assert "Exception in worker process while importing 'needs_setting':\nTraceback" in log, log
    assert 'SETTING = os.environ["E2E_UNSET_SETTING"]' in log and "KeyError: 'E2E_UNSET_SETTING'" in log, log
    assert "Worker failed to boot: the worker could not start the app (the reason is above)" in log, log
    server.stop()


def test_missing_callable_exits_4(tmp_path):
    server = Server("plain:nothing_here", tmp_path=tmp_path)
    assert server.proc.wait(30) == 4
    assert "Failed to find attribute 'nothing_here' in 'plain'." in server.log()
    server.stop()


def test_pidfile_written_and_removed(serve, tmp_path):
    pidfile = tmp_path / "run" / "app.pid"
    pidfile.parent.mkdir()
    server = serve("plain:app", "--pid", str(pidfile))
    assert pidfile.read_text() == f"{server.pid}\n" and oct(pidfile.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in pidfile.parent.iterdir()] == ["app.pid"], "no temporary file is left"
    server.stop()
    assert not pidfile.exists()


def test_pidfile_errors_are_clear_and_leave_no_server(tmp_path):
    # A live process in the pid file: refused. (This test's own pid is alive.)
    taken = tmp_path / "taken.pid"
    taken.write_text(f"{os.getpid()}\n")
    server = Server("plain:app", "--pid", str(taken), tmp_path=tmp_path)
    assert server.proc.wait(30) != 0
    assert f"Already running on PID {os.getpid()}" in server.log() and taken.read_text() == f"{os.getpid()}\n"
    server.stop()
    # A directory that does not exist: the reason, and nothing listening.
    server = Server("plain:app", "--pid", str(tmp_path / "missing" / "app.pid"), tmp_path=tmp_path)
    assert server.proc.wait(30) != 0
    assert "cannot write the pid file" in server.log() and "No such file or directory" in server.log()
    assert not server.can_connect()
    server.stop()


def test_hup_into_a_broken_app_keeps_the_old_workers(serve, tmp_path):
    app_file = tmp_path / "swappable.py"
    app_file.write_text((APPS / "plain.py").read_text())
    server = serve("swappable:app", "--workers", "2", "--chdir", str(tmp_path), cwd=tmp_path, workers=2)
    before = set(server.workers())
    app_file.write_text("raise RuntimeError('the new release is broken')\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.log(), timeout=20, message="the failed reload to be logged")
    assert "RuntimeError: the new release is broken" in server.log()
    time.sleep(0.5)
    assert set(server.workers()) == before, "the old workers keep serving"
    for _ in range(10):
        assert requests.get(server.url + "/").content == b"Hello, World!"
    assert server.proc.poll() is None


def test_reuse_port_lets_two_servers_share_a_port(serve, tmp_path):
    """--reuse-port sets SO_REUSEPORT, as Gunicorn's does: a second server binds the same address (a
    blue/green switch on one port) and the kernel spreads new connections over both; without it, the
    second is refused with the reason."""
    first = serve("plain:app", "--reuse-port")
    (tmp_path / "refused").mkdir()
    refused = Server("plain:app", port=first.port, tmp_path=tmp_path / "refused")
    wait_until(lambda: refused.proc.poll() is not None, message="the server without --reuse-port to stop")
    assert f"cannot listen on 127.0.0.1:{first.port}: Address already in use" in refused.log()
    second = serve("plain:app", "--reuse-port", port=first.port)
    seen = set()
    for _ in range(200):   # a new connection each: the kernel picks a socket by the connection's hash
        seen.add(int(requests.get(first.url + "/pid", timeout=5).text))
        if len(seen) == 2:
            break
    assert seen == {first.workers()[0], second.workers()[0]}
