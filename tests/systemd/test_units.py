"""The units of systemd/ under a real systemd 252 (PID 1 in a systemd-nspawn container)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from nspawn import ROOT, Container, wait_for

BINARY = Path(os.environ.get("APPSERVER_BIN", ROOT / ".build" / "release" / "appserver"))
PORT, DEMO_PORT, LASTWORDS_PORT = 18080, 18081, 18083

pytestmark = pytest.mark.skipif(shutil.which("systemd-nspawn") is None or os.geteuid() != 0,
                                reason="needs root and systemd-nspawn (apt: systemd-container debootstrap)")

MAIN_CONFIG = """app = "plain:app"
chdir = "/mnt/share/apps"
workers = 2
timeout = 5
graceful_timeout = 10
"""

DEMO_CONFIG = """app = "demo:application"
chdir = "/mnt/share/apps"
"""

# Its app file is the test's to change (a reload whose new app cannot import).
LASTWORDS_CONFIG = """app = "lastwords:application"
chdir = "/mnt/share/apps"
workers = 2
"""

DEMO_APP = """def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"demo instance"]
"""


def socket_drop_in(port):
    return f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"


@pytest.fixture(scope="module")
def container():
    share = Path(tempfile.mkdtemp(prefix="appserver-share-"))
    os.chmod(share, 0o755)
    shutil.copy(BINARY, share / "appserver")
    for library in ("libappserver-hosted.so", "libappserver-preload.so"):   # the launcher's, as the .deb has them
        shutil.copy(BINARY.parent / library, share / library)
    shutil.copytree(ROOT / "tests" / "apps", share / "apps", ignore=shutil.ignore_patterns("__pycache__"))
    (share / "apps" / "demo.py").write_text(DEMO_APP)
    shutil.copytree(ROOT / "systemd", share / "units")
    (share / "etc").mkdir()
    (share / "etc" / "appserver.toml").write_text(MAIN_CONFIG)
    (share / "etc" / "demo.toml").write_text(DEMO_CONFIG)
    (share / "etc" / "port.conf").write_text(socket_drop_in(PORT))
    (share / "etc" / "demo-port.conf").write_text(socket_drop_in(DEMO_PORT))
    (share / "etc" / "lastwords.toml").write_text(LASTWORDS_CONFIG)
    (share / "etc" / "lastwords-port.conf").write_text(socket_drop_in(LASTWORDS_PORT))
    for path in share.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() or path.name == "appserver" else 0o644)
    c = Container(share, share.parent / f"{share.name}.log")
    script = """set -e
install -m 755 /mnt/share/appserver /usr/bin/appserver
install -D -m 644 -t /usr/lib/appserver /mnt/share/libappserver-hosted.so /mnt/share/libappserver-preload.so
cp /mnt/share/units/*.socket /mnt/share/units/*.service /etc/systemd/system/
mkdir -p /etc/appserver /etc/systemd/system/appserver.socket.d /etc/systemd/system/appserver@demo.socket.d
mkdir -p /etc/systemd/system/appserver@lastwords.socket.d
cp /mnt/share/etc/appserver.toml /mnt/share/etc/demo.toml /mnt/share/etc/lastwords.toml /etc/appserver/
cp /mnt/share/etc/port.conf /etc/systemd/system/appserver.socket.d/port.conf
cp /mnt/share/etc/demo-port.conf /etc/systemd/system/appserver@demo.socket.d/port.conf
cp /mnt/share/etc/lastwords-port.conf /etc/systemd/system/appserver@lastwords.socket.d/port.conf
systemctl daemon-reload
"""
    c.run("sh", "-c", script)
    yield c
    c.stop()
    shutil.rmtree(share, ignore_errors=True)


def test_socket_activation_status_and_journal(container):
    c = container
    c.run("systemctl", "start", "appserver.socket")
    assert c.show("appserver.service", "ActiveState")["ActiveState"] == "inactive", "started only by a first request"
    r = requests.get(f"http://127.0.0.1:{PORT}/environ", timeout=30)
    assert r.status_code == 200
    assert r.json()["SERVER_SOFTWARE"] == "appserver"
    props = wait_for(lambda: (p := c.show("appserver.service", "MainPID", "StatusText", "NRestarts", "ActiveState"))
                     and "workers serving" in p["StatusText"] and p, message="a status line")
    assert int(props["MainPID"]) > 0 and props["NRestarts"] == "0" and props["ActiveState"] == "active"
    assert props["StatusText"].startswith("2 workers serving"), props
    assert requests.get(f"http://127.0.0.1:{PORT}/error", headers={"X-Request-ID": "req-from-the-lb-42"}, timeout=10).status_code == 500
    time.sleep(0.5)
    journal = c.run("journalctl", "-u", "appserver.service", "-o", "json", "--no-pager").stdout
    entries = [json.loads(line) for line in journal.splitlines() if line.strip()]
    booting = [e for e in entries if "Booting worker" in str(e.get("MESSAGE"))]
    errors = [e for e in entries if "Error handling request /error" in str(e.get("MESSAGE"))]
    assert booting and all(e["PRIORITY"] == "6" for e in booting), booting[:1]
    assert errors and errors[0]["PRIORITY"] == "3", errors[:1]
    # Structured fields: the worker, its generation, the request id; the traceback in the same entry.
    error = errors[0]
    assert error["WORKER_PID"] == error["_PID"] and error["GENERATION"] == "1", error
    assert error["REQUEST_ID"] == "req-from-the-lb-42" and error["ARBITER_PID"] == props["MainPID"], error
    assert "ValueError: boom from the app" in error["MESSAGE"], error
    by_worker = c.run("journalctl", "-u", "appserver.service", f"WORKER_PID={error['WORKER_PID']}", "-o", "cat", "--no-pager").stdout
    assert "Error handling request /error" in by_worker and "Booting worker" in by_worker
    listening = [str(e.get("MESSAGE")) for e in entries if "Listening at:" in str(e.get("MESSAGE"))]
    assert any(f"http://127.0.0.1:{PORT}" in m and "[systemd (http)]" in m for m in listening), listening


def test_templated_instance_serves_its_own_app(container):
    c = container
    c.run("systemctl", "start", "appserver@demo.socket")
    r = requests.get(f"http://127.0.0.1:{DEMO_PORT}/", timeout=30)
    assert r.status_code == 200 and r.content == b"demo instance"
    props = wait_for(lambda: (p := c.show("appserver@demo.service", "ActiveState", "StatusText"))
                     and "workers serving" in p["StatusText"] and p, message="the demo instance's status")
    assert props["ActiveState"] == "active"
    c.run("systemctl", "stop", "appserver@demo.service", "appserver@demo.socket")


def test_a_failed_reloads_traceback_is_in_the_units_journal_when_journald_lags(container):
    """A reload whose new app cannot import: its workers fail at once. journald files a native entry
    under a unit by reading the sender's /proc when it gets to the entry, so a worker's own traceback,
    read after the worker exited, would be filed under no unit and missing from `journalctl -u` (a failed
    rollout under load said nothing of why). Here journald is held (SIGSTOP) through the whole reload:
    the traceback must still be in the unit's journal, told by the arbiter with the worker's WORKER_PID."""
    c = container
    app = c.share / "apps" / "lastwords.py"
    app.write_text(DEMO_APP)
    c.run("systemctl", "start", "appserver@lastwords.socket")
    c.run("systemctl", "start", "appserver@lastwords.service")
    main_pid = wait_for(lambda: (p := c.show("appserver@lastwords.service", "MainPID", "StatusText"))
                        and "workers serving" in p["StatusText"] and p["MainPID"], message="the instance ready")
    app.write_text('import os\nGREETING = os.environ["LASTWORDS_GREETING"]\n' + DEMO_APP)

    def reload_failed():
        status = c.run("appserver", "status", "--json", "--pid", main_pid, check=False, timeout=10)
        return status.returncode == 0 and "reload failed" in str(json.loads(status.stdout).get("last_error"))

    c.run("systemctl", "kill", "--signal=SIGSTOP", "systemd-journald.service")
    try:
        c.run("systemctl", "kill", "--kill-who=main", "--signal=SIGHUP", "appserver@lastwords.service")
        wait_for(reload_failed, timeout=30, message="the reload to fail")
    finally:
        c.run("systemctl", "kill", "--signal=SIGCONT", "systemd-journald.service")
    c.run("journalctl", "--sync")
    assert requests.get(f"http://127.0.0.1:{LASTWORDS_PORT}/", timeout=10).content == b"demo instance", "the old workers serve on"
    journal = c.run("journalctl", "-u", "appserver@lastwords.service", "-o", "json", "--no-pager").stdout
    entries = [json.loads(line) for line in journal.splitlines() if line.strip()]
    told = [e for e in entries if "KeyError: 'LASTWORDS_GREETING'" in str(e.get("MESSAGE"))]
    assert told, "\n".join(str(e.get("MESSAGE"))[:200] for e in entries[-30:])
    assert all(e["PRIORITY"] == "3" and e["_PID"] == main_pid and e["WORKER_PID"] != main_pid for e in told), told
    assert str(told[0]["MESSAGE"]).startswith(f"[{main_pid}] [ERROR] Worker (pid:{told[0]['WORKER_PID']}): Exception in worker process"), told[0]
    assert any("reload failed: the new app did not boot" in str(e.get("MESSAGE")) for e in entries)
    c.run("systemctl", "stop", "appserver@lastwords.service", "appserver@lastwords.socket")


def test_a_stalled_journald_does_not_stall_the_server(container):
    """journald held (SIGSTOP): its socket queue takes ten datagrams of every sender, and a sender that
    waits for room (as sd_journal_sendv does) would stop the worker at its next error line. The server
    answers on, each answer logging a traceback, and once journald runs again every one of them is in
    the unit's journal (those the queue could not take went through the stream)."""
    c = container
    start_ready(c)
    main_pid = c.show("appserver.service", "MainPID")["MainPID"]
    codes = []
    c.run("systemctl", "kill", "--signal=SIGSTOP", "systemd-journald.service")
    try:
        for i in range(30):
            codes.append(requests.get(f"http://127.0.0.1:{PORT}/error", headers={"X-Request-ID": f"stalled-{i}"}, timeout=10).status_code)
        arbiter = c.run("appserver", "status", "--json", "--pid", main_pid, check=False, timeout=10)
    finally:
        c.run("systemctl", "kill", "--signal=SIGCONT", "systemd-journald.service")
    assert codes == [500] * 30
    assert arbiter.returncode == 0 and json.loads(arbiter.stdout)["pid"] == int(main_pid), "the arbiter answers too"
    c.run("journalctl", "--sync")
    journal = c.run("journalctl", "-u", "appserver.service", "-o", "json", "--no-pager").stdout
    told = set()
    for entry in (json.loads(line) for line in journal.splitlines() if line.strip()):
        message = str(entry.get("MESSAGE"))
        if "Error handling request /error" in message:
            told.add(entry.get("REQUEST_ID") or message.split("request_id=", 1)[-1].split()[0])
    assert told >= {f"stalled-{i}" for i in range(30)}, sorted(told)


def test_stop_lets_a_slow_request_finish(container):
    c = container
    c.run("systemctl", "start", "appserver.socket")
    requests.get(f"http://127.0.0.1:{PORT}/", timeout=30)
    assert_stop_lets_a_slow_request_finish(c)


def assert_stop_lets_a_slow_request_finish(c):
    """A 3 s request is in flight when `systemctl stop` comes: it gets its answer, and the stop is a success."""
    result = {}
    t = threading.Thread(target=lambda: result.update(r=requests.get(f"http://127.0.0.1:{PORT}/slow?s=3", timeout=30)))
    t.start()
    time.sleep(1)
    c.run("systemctl", "stop", "appserver.service")
    t.join()
    assert result["r"].status_code == 200 and result["r"].content == b"slow done"
    props = c.show("appserver.service", "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}, props


def test_units_verify_clean_and_security_exposure(container):
    c = container
    units = [f"/etc/systemd/system/{u}" for u in ("appserver.socket", "appserver.service", "appserver@.socket", "appserver@.service")]
    verify = c.run("systemd-analyze", "verify", "--man=no", *units, check=False)
    assert verify.returncode == 0 and verify.stdout.strip() == "" and verify.stderr.strip() == "", verify
    security = c.run("systemd-analyze", "security", "appserver.service", "--no-pager").stdout
    exposure = float(security.split("Overall exposure level for appserver.service:")[1].split()[0])
    assert exposure <= 2.0, security[-1500:]


def start_ready(c):
    """Starts the socket and the service afresh and waits until it reports its workers."""
    c.run("systemctl", "restart", "appserver.socket")
    c.run("systemctl", "start", "appserver.service")
    wait_for(lambda: "workers serving" in c.show("appserver.service", "StatusText")["StatusText"], message="ready")


def watchdog_drop_in(c, seconds):
    c.run("sh", "-c", f"""mkdir -p /etc/systemd/system/appserver.service.d
printf '[Service]\\nWatchdogSec={seconds}\\nTimeoutAbortSec=2\\n' > /etc/systemd/system/appserver.service.d/watchdog.conf
systemctl daemon-reload""")


def test_stuck_worker_does_not_stop_the_watchdog(container):
    c = container
    watchdog_drop_in(c, 3)
    start_ready(c)
    before = c.show("appserver.service", "NRestarts", "MainPID")

    def hang():
        try:
            requests.get(f"http://127.0.0.1:{PORT}/hang", timeout=12)
        except requests.RequestException:
            pass

    t = threading.Thread(target=hang, daemon=True)
    t.start()
    time.sleep(8)   # well past WatchdogSec: the other worker is healthy, so pings go on
    after = c.show("appserver.service", "NRestarts", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and after["NRestarts"] == before["NRestarts"] and after["MainPID"] == before["MainPID"], after
    assert requests.get(f"http://127.0.0.1:{PORT}/", timeout=10).status_code == 200


def test_stopped_arbiter_is_restarted_by_the_watchdog(container):
    c = container
    watchdog_drop_in(c, 3)
    start_ready(c)
    before = c.show("appserver.service", "MainPID", "NRestarts")
    c.run("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "appserver.service")
    results = []

    def ask():
        try:
            results.append(requests.get(f"http://127.0.0.1:{PORT}/pid", timeout=40).status_code)
        except requests.RequestException as e:
            results.append(repr(e))

    # Connections made while the server is stuck wait on systemd's socket and get answered.
    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    after = wait_for(lambda: (p := c.show("appserver.service", "MainPID", "NRestarts", "ActiveState"))
                     and p["NRestarts"] != before["NRestarts"] and p["ActiveState"] == "active" and p, timeout=40,
                     message="a restart by the watchdog")
    assert after["MainPID"] != before["MainPID"]
    journal = c.run("journalctl", "-u", "appserver.service", "--no-pager").stdout
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal
    for t in threads:
        t.join()
    assert results == [200] * 5, results
    c.run("sh", "-c", "rm /etc/systemd/system/appserver.service.d/watchdog.conf && systemctl daemon-reload")


def test_usr2_upgrade_moves_main_pid_without_a_restart(container):
    c = container
    start_ready(c)
    before = c.show("appserver.service", "MainPID", "NRestarts")
    c.run("systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", "appserver.service")
    after = wait_for(lambda: (p := c.show("appserver.service", "MainPID", "NRestarts", "ActiveState", "StatusText"))
                     and p["MainPID"] not in ("0", before["MainPID"]) and "workers serving" in p["StatusText"] and p,
                     timeout=30, message="MAINPID to move to the new arbiter")
    assert after["ActiveState"] == "active" and after["NRestarts"] == before["NRestarts"], after
    # systemd's watchdog clock does not restart when the main process changes, and the new arbiter's
    # pings before the hand-over were dropped (NotifyAccess=main): a ping for it must come at once, not
    # on its next cadence (WatchdogSec / 2 = 15 s later, when the old arbiter's last ping could already
    # be that old: the watchdog then killed an upgraded server, now and then, under load).
    def fed_since_hand_over():
        p = c.show("appserver.service", "MainPID", "ExecMainStartTimestampMonotonic", "WatchdogTimestampMonotonic")
        return p["MainPID"] == after["MainPID"] and int(p["WatchdogTimestampMonotonic"]) >= int(p["ExecMainStartTimestampMonotonic"]) and p
    wait_for(fed_since_hand_over, timeout=3, message="a watchdog ping for the new main process soon after the hand-over")
    assert requests.get(f"http://127.0.0.1:{PORT}/", timeout=10).status_code == 200
    # The old arbiter is gone; the service is still the same, now run by the new one.
    wait_for(lambda: c.run("sh", "-c", f"test ! -e /proc/{before['MainPID']}", check=False).returncode == 0,
             message="the old arbiter to exit")
    assert c.show("appserver.service", "ActiveState")["ActiveState"] == "active"
    # systemd supervises the new arbiter as its own child: a stop is graceful (a request in flight
    # finishes) and ends in success, not in a SIGKILL of an "alien" main process.
    journal = c.run("journalctl", "-u", "appserver.service", "--no-pager").stdout
    assert "which is not our child" not in journal
    assert_stop_lets_a_slow_request_finish(c)


GENERATION_APP = """import os
GENERATION = {generation}

def application(environ, start_response):
    body = ("%s %s" % (GENERATION, os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
GEN_PORT = 18082


def test_systemctl_reload_is_truthful_and_upgrades_in_place_under_load(container):
    """ExecReload runs `appserver reload`: success once the new generation serves, failure (old generation still
    serving) when the new app does not import, and an in-place upgrade when the binary on disk changed. Under
    wrk load from the host: no request fails, MainPID moves only on the upgrade, NRestarts stays 0."""
    c = container
    app = Path("/proc") / str(c.leader) / "root" / "mnt" / "share" / "apps" / "generation.py"

    def write(generation=None):
        text = GENERATION_APP.format(generation=generation) if generation else "raise RuntimeError('broken release')\n"
        app.write_text(text)

    def served():
        generation, arbiter = requests.get(f"http://127.0.0.1:{GEN_PORT}/", timeout=10).text.split()
        return int(generation), int(arbiter)

    def reload():
        return c.run("systemctl", "reload", "appserver@gen.service", check=False, timeout=120)

    write(1)
    c.run("sh", "-c", f"""set -e
printf 'app = "generation:application"\\nchdir = "/mnt/share/apps"\\nworkers = 2\\n' > /etc/appserver/gen.toml
mkdir -p /etc/systemd/system/appserver@gen.socket.d
printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{GEN_PORT}\\n' > /etc/systemd/system/appserver@gen.socket.d/port.conf
systemctl daemon-reload
systemctl start appserver@gen.socket appserver@gen.service""")
    first = int(c.show("appserver@gen.service", "MainPID")["MainPID"])
    assert served() == (1, first)

    result = {}
    load = threading.Thread(target=lambda: result.update(out=subprocess.run(
        ["wrk", "-t2", "-c16", "-d12s", f"http://127.0.0.1:{GEN_PORT}/"], capture_output=True, text=True, timeout=60).stdout))
    load.start()
    time.sleep(1)
    write(2)
    assert reload().returncode == 0
    assert served() == (2, first), "exit 0 means the new generation serves"

    time.sleep(1)
    write(None)
    failed = reload()
    assert failed.returncode != 0, failed
    assert served() == (2, first), "the old generation keeps serving"
    assert c.show("appserver@gen.service", "ActiveState")["ActiveState"] == "active"

    time.sleep(1)
    write(3)
    # A package upgrade: a new binary renamed over the old one, then `systemctl reload`.
    c.run("sh", "-c", "cp /usr/bin/appserver /usr/bin/appserver.new && mv /usr/bin/appserver.new /usr/bin/appserver")
    started = time.monotonic()
    assert reload().returncode == 0
    handover = time.monotonic() - started
    new = int(c.show("appserver@gen.service", "MainPID")["MainPID"])
    assert new not in (0, first) and served() == (3, new)

    time.sleep(1)
    write(4)
    assert reload().returncode == 0
    assert served() == (4, new), "a plain reload again, by the new arbiter"
    load.join()
    out = result["out"]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert errors is None and "Non-2xx" not in out and int(re.search(r"(\d+) requests in", out).group(1)) > 1000, out
    props = c.show("appserver@gen.service", "ActiveState", "NRestarts", "MainPID")
    assert props == {"ActiveState": "active", "NRestarts": "0", "MainPID": str(new)}, props
    journal = c.run("journalctl", "-u", "appserver@gen.service", "--no-pager").stdout
    assert "reload failed: the new app did not boot" in journal and "upgrading instead of reloading" in journal
    print(f"upgrade by systemctl reload took {handover:.2f} s; wrk: {out.splitlines()[-3:]}")
    c.run("systemctl", "stop", "appserver@gen.service", "appserver@gen.socket")


PYTHON_APP = """import sys

def application(environ, start_response):
    body = ("%d.%d %s" % (sys.version_info[0], sys.version_info[1], sys.prefix)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
PY_PORT = 18083


def other_python():
    """A CPython of another minor version with its appserver build (make python-hosts): (version, prefix, build)."""
    hosts = Path(os.environ.get("APPSERVER_HOSTS", ROOT / ".build-pythons" / "hosts"))
    for version in ("3.12", "3.13", "3.10"):
        for python in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")):
            if (hosts / f"appserver-python{version}").exists():
                return version, python.parents[1], hosts / f"appserver-python{version}"
    return None


def test_a_templated_instance_on_another_python_through_the_hand_over(container):
    """The stock units, /usr/bin/appserver and an app whose virtualenv is 3.X's: appserver-python3.X in
    /usr/local/bin (systemd's PATH) serves it, as the service's main process, reloads and stops cleanly."""
    found = other_python()
    if found is None:
        pytest.skip("no CPython 3.10/3.12/3.13 with its appserver build here (make python-hosts)")
    version, prefix, build = found
    c = container
    share = Path(c.share)
    # The interpreter's files (not its tests or site-packages) where the service can read them.
    target = share / f"python{version}"
    subprocess.run(["rsync", "-a", "--exclude=test/", "--exclude=site-packages/", "--exclude=__pycache__/",
                    "--exclude=config-*/", f"{prefix}/bin", f"{prefix}/lib", str(target)], check=True)
    shutil.copy(build, share / f"appserver-python{version}")
    (share / "apps" / "pyversion.py").write_text(PYTHON_APP)
    for path in [target, *target.rglob("*"), share / "apps" / "pyversion.py", share / f"appserver-python{version}"]:
        os.chmod(path, 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    script = f"""set -e
install -m 755 /mnt/share/appserver-python{version} /usr/local/bin/
LD_LIBRARY_PATH=/mnt/share/python{version}/lib /mnt/share/python{version}/bin/python{version} -m venv --without-pip /srv/venv{version}
printf 'app = "pyversion:application"\\nchdir = "/mnt/share/apps"\\nvirtualenv = "/srv/venv{version}"\\n' > /etc/appserver/py.toml
mkdir -p /etc/systemd/system/appserver@py.socket.d
printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{PY_PORT}\\n' > /etc/systemd/system/appserver@py.socket.d/port.conf
systemctl daemon-reload
systemctl start appserver@py.socket
"""
    c.run("sh", "-c", script)
    r = requests.get(f"http://127.0.0.1:{PY_PORT}/", timeout=30)
    assert r.status_code == 200 and r.text == f"{version} /srv/venv{version}", r.text
    props = wait_for(lambda: (p := c.show("appserver@py.service", "MainPID", "StatusText", "ActiveState"))
                     and "workers serving" in p["StatusText"] and p, message="the instance's status")
    exe = c.run("readlink", f"/proc/{props['MainPID']}/exe").stdout.strip()
    assert exe == f"/usr/local/bin/appserver-python{version}", exe
    result = c.run("systemctl", "reload", "appserver@py.service", check=False)
    assert result.returncode == 0, result
    assert requests.get(f"http://127.0.0.1:{PY_PORT}/", timeout=10).text.startswith(version)
    c.run("systemctl", "stop", "appserver@py.service", "appserver@py.socket")
    result = c.show("appserver@py.service", "Result", "ActiveState")
    assert result == {"Result": "success", "ActiveState": "inactive"}, result
