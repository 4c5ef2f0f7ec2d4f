"""The .deb under a real systemd 252 (systemd-nspawn, no Swift in the container): install 1.0.0, serve by
socket activation, upgrade to 1.1.0 under wrk load with no failed request, then remove and purge."""
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

from conftest import NEW, OLD
from nspawn import Container, wait_for

PORT, DEMO_PORT = 18090, 18091

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-nspawn") is None or shutil.which("dpkg-buildpackage") is None or os.geteuid() != 0,
    reason="needs root, systemd-nspawn and dpkg-buildpackage (make deps)")

APP = """import os

def application(environ, start_response):
    body = ("%s %s" % (os.environ.get("APP_NAME", "?"), os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_lintian_reports_no_errors_or_warnings(debs):
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed (make deps)")
    result = subprocess.run(["lintian", "--display-info", str(debs[OLD])], capture_output=True, text=True, timeout=600)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert tags == [], result.stdout
    assert result.returncode == 0, result


def test_install_serve_upgrade_under_load_remove_and_purge(debs):
    share = Path(tempfile.mkdtemp(prefix="appserver-deb-share-"))
    os.chmod(share, 0o755)
    for version, deb in debs.items():
        shutil.copy(deb, share / f"appserver_{version}.deb")
    (share / "apps").mkdir(mode=0o755)
    (share / "apps" / "hello.py").write_text(APP)
    for path in share.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    c = Container(share, share.parent / f"{share.name}.log", swift_runtime=False)
    try:
        check_install_serve_upgrade_remove_purge(c)
    finally:
        c.stop()
        shutil.rmtree(share, ignore_errors=True)


def apt(c, *args):
    return c.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", "--no-install-recommends", *args,
                 timeout=180)


def check_install_serve_upgrade_remove_purge(c):
    # A fresh install: no Swift on this machine; units, config, user, man page, completion, docs;
    # nothing started or enabled, since no app is configured yet.
    assert c.run("test", "-e", "/opt/swift", check=False).returncode != 0
    apt(c, "install", f"/mnt/share/appserver_{OLD}.deb")
    assert c.run("appserver", "--version").stdout.strip() == OLD
    for path in ["/lib/systemd/system/appserver.socket", "/lib/systemd/system/appserver.service",
                 "/lib/systemd/system/appserver@.socket", "/lib/systemd/system/appserver@.service",
                 "/etc/appserver/appserver.toml", "/usr/share/man/man1/appserver.1.gz",
                 "/usr/share/bash-completion/completions/appserver", "/usr/share/doc/appserver/copyright",
                 "/usr/share/doc/appserver/changelog.gz", "/usr/share/doc/appserver/examples/hello/app.py"]:
        c.run("test", "-e", path)
    assert c.run("getent", "passwd", "appserver").stdout.startswith("appserver:")
    for unit in ["appserver.socket", "appserver.service"]:
        assert c.show(unit, "ActiveState", "UnitFileState") == {"ActiveState": "inactive", "UnitFileState": "disabled"}
    # The packaged example config is all comments: the server says what is missing.
    checked = c.run("appserver", "-c", "/etc/appserver/appserver.toml", "--check-config", check=False)
    assert checked.returncode == 2 and "no app given" in checked.stderr, checked

    # Configure the main service and one templated instance, each on its own port.
    c.run("sh", "-c", f"""set -e
printf 'app = "hello:application"\\nchdir = "/mnt/share/apps"\\nworkers = 2\\nenv = ["APP_NAME=main"]\\n' > /etc/appserver/appserver.toml
printf 'app = "hello:application"\\nchdir = "/mnt/share/apps"\\nenv = ["APP_NAME=demo"]\\n' > /etc/appserver/demo.toml
mkdir -p /etc/systemd/system/appserver.socket.d /etc/systemd/system/appserver@demo.socket.d
printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{PORT}\\n' > /etc/systemd/system/appserver.socket.d/port.conf
printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{DEMO_PORT}\\n' > /etc/systemd/system/appserver@demo.socket.d/port.conf
systemctl daemon-reload
systemctl enable --now appserver.socket appserver@demo.socket""")
    assert requests.get(f"http://127.0.0.1:{PORT}/", timeout=30).text.startswith("main ")
    assert requests.get(f"http://127.0.0.1:{DEMO_PORT}/", timeout=30).text.startswith("demo ")
    units = ["appserver.service", "appserver@demo.service"]
    before = {u: wait_for(lambda u=u: (p := c.show(u, "MainPID", "StatusText", "NRestarts"))
                          and f"appserver {OLD}" in p["StatusText"] and p, message=f"{u} ready") for u in units}
    user = c.run("ps", "-o", "user=", "-p", before["appserver.service"]["MainPID"]).stdout.strip()
    assert user == "appserver", "the package's system user runs the service"

    # The upgrade, under load on both: postinst reloads every running server, which upgrades in place.
    results = {}

    def load(port):
        results[port] = subprocess.run(["wrk", "-t1", "-c16", "-d10s", f"http://127.0.0.1:{port}/"],
                                       capture_output=True, text=True, timeout=60).stdout

    threads = [threading.Thread(target=load, args=(port,)) for port in (PORT, DEMO_PORT)]
    for t in threads:
        t.start()
    time.sleep(2)
    started = time.monotonic()
    upgrade = apt(c, "install", f"/mnt/share/appserver_{NEW}.deb")
    took = time.monotonic() - started
    for t in threads:
        t.join()
    for port, out in results.items():
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        served = int(re.search(r"(\d+) requests in", out).group(1))
        assert errors is None and "Non-2xx" not in out and served > 1000, out
    assert "could not be upgraded" not in upgrade.stderr, upgrade.stderr
    for unit in units:
        after = c.show(unit, "MainPID", "StatusText", "NRestarts", "ActiveState")
        assert after["MainPID"] != before[unit]["MainPID"] and after["NRestarts"] == "0" and after["ActiveState"] == "active", after
        status = c.run("appserver", "status", "--pid", after["MainPID"]).stdout
        assert f"appserver {NEW}" in status, status
        maps = c.run("grep", "libappserver-hosted", f"/proc/{after['MainPID']}/maps").stdout.splitlines()
        assert maps and all(line.endswith(" /usr/lib/appserver/libappserver-hosted.so") for line in maps), \
            "the new arbiter runs the installed server, not a deleted one"
    assert requests.get(f"http://127.0.0.1:{PORT}/", timeout=10).text.startswith("main ")
    print(f"apt install of {NEW} under load took {took:.1f} s; wrk: " +
          "; ".join(out.splitlines()[-3].strip() for out in results.values()))

    # Remove: every server stops gracefully; the configuration stays until purge.
    apt(c, "remove", "appserver")
    assert c.run("pgrep", "-f", "appserver", check=False).stdout.strip() == ""
    for unit in units + ["appserver.socket", "appserver@demo.socket"]:
        props = c.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        assert props["ActiveState"] == "inactive" and props["Result"] == "success", (unit, props)
    c.run("test", "-e", "/etc/appserver/appserver.toml")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{PORT}/", timeout=5)

    # Purge: no unit, process, user or config left.
    apt(c, "purge", "appserver")
    leftovers = c.run("sh", "-c", "ls -d /etc/appserver /lib/systemd/system/appserver* /usr/lib/sysusers.d/appserver.conf "
                      "/etc/systemd/system/appserver* /etc/systemd/system/*/appserver* /var/lib/appserver 2>/dev/null",
                      check=False).stdout.strip()
    assert leftovers == "", leftovers
    assert c.run("getent", "passwd", "appserver", check=False).returncode != 0
    assert c.run("getent", "group", "appserver", check=False).returncode != 0
    assert c.run("pgrep", "-f", "appserver", check=False).stdout.strip() == ""
    assert c.run("systemctl", "list-unit-files", "appserver*", "--no-legend", check=False).stdout.strip() == ""
    assert c.run("dpkg-query", "-W", "-f", "${Status}", "appserver", check=False).stdout.strip() in ("", "unknown ok not-installed")
