"""Rolling upgrades across three servers (deploy/ansible) behind real load balancers, under wrk load.

The hosts are systemd-nspawn containers with systemd as PID 1, each in a network namespace of its own
(tests/systemd/fleet.py), reached by Ansible over ssh. The tests run in order on one fleet, as an
operator's day would: a first install of 1.0.0 (a .deb from the controller), a rolling upgrade to 1.1.0
(from the hosts' apt repository), a rollout that fails on the second host, a host drained for
maintenance, the fixed rollout through nginx, and a host powered off hard. The figures (requests, errors, time per host) are printed at the end of the run."""
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import FIGURES, NEW, OLD
from fleet import HOSTS, METRICS_PORT, Fleet, HAProxy, Load, Nginx, http_get, missing_tools

HAPROXY_PORT, NGINX_PORT = 18110, 18111

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, systemd-nspawn)"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (make deps)"),
]

# Release 1 of the app; release 2 reads a setting that each host's inventory must give it.
RELEASE_1 = """import socket

def application(environ, start_response):
    body = ("release 1 on %s" % socket.gethostname()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

RELEASE_2 = """import os
import socket

GREETING = os.environ["HELLO_GREETING"]   # release 2 needs it: a host whose inventory lacks it cannot boot

def application(environ, start_response):
    body = ("release 2 on %s: %s" % (socket.gethostname(), GREETING)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

def figure(text):
    FIGURES.append(f"fleet: {text}")


@pytest.fixture(scope="module")
def world(debs):
    """The fleet with 1.0.0 and release 1 installed by the playbook, and both load balancers."""
    directory = Path(tempfile.mkdtemp(prefix="appserver-fleet-"))
    os.chmod(directory, 0o755)
    for release, source in ((1, RELEASE_1), (2, RELEASE_2)):
        (directory / f"release-{release}").mkdir()
        (directory / f"release-{release}" / "hello.py").write_text(source)
    fleet = Fleet(directory)
    haproxy = nginx = None
    try:
        status, output, _ = fleet.playbook(inventory(fleet, directory, 1), "-e", f"appserver_deb={debs[OLD]}")
        assert status == 0, output[-6000:]
        fleet.publish(debs[OLD], debs[NEW])
        haproxy = HAProxy(directory, HAPROXY_PORT)
        nginx = Nginx(directory, NGINX_PORT)
        for name in HOSTS:
            haproxy.wait_status(name, "UP")
        yield fleet, haproxy, nginx, directory
    finally:
        for balancer in (haproxy, nginx):
            if balancer:
                balancer.stop()
        fleet.stop()
        shutil.rmtree(directory, ignore_errors=True)


def inventory(fleet, directory, release, greeting_on=("asfleet1", "asfleet2", "asfleet3")):
    app = {
        "name": "hello",
        "src": str(directory / f"release-{release}"),
        "listen": ["0.0.0.0:8000"],
        "config": {"app": "hello:application", "workers": 2, "metrics_bind": f"0.0.0.0:{METRICS_PORT}",
                   "drain_delay": 3, "graceful_timeout": 10, "env": "{{ hello_env }}"},
    }
    host_vars = {name: {"hello_env": [f"HELLO_GREETING=hello from {name}"] if name in greeting_on else []}
                 for name in HOSTS}
    return fleet.inventory([app], host_vars)


def journal(host):
    # For an assertion's message: a string is shown whole (a tuple's repr would be cut short).
    return host.run("journalctl", "-u", "appserver@hello.service", "-o", "short-monotonic", "--no-pager").stdout[-6000:]


def assert_no_restart(fleet):
    """No host's server was restarted by systemd (a crash, the watchdog)."""
    for name, host in fleet.hosts.items():
        props = host.show("appserver@hello.service", "NRestarts", "ActiveState")
        assert props == {"NRestarts": "0", "ActiveState": "active"}, f"{name}: {props}\n{journal(host)}"


def assert_no_failed_request(load, what):
    total, errors, non2xx, out = load.stop()
    assert errors == 0 and non2xx == 0 and total > 1000, f"{what}:\n{out}"
    return total


def test_first_install_serves_on_every_host(world):
    fleet, haproxy, _, _ = world
    for name in HOSTS:
        assert fleet.answer(name) == (200, f"release 1 on {name}")
        status = fleet.status(name)
        assert status["version"] == OLD and status["ready"], status
        assert http_get(HOSTS[name], METRICS_PORT, "/readyz")[0] == 200
    assert_no_restart(fleet)
    answers = {http_get("127.0.0.1", HAPROXY_PORT, "/")[1] for _ in range(9)}
    assert answers == {f"release 1 on {name}" for name in HOSTS}, "HAProxy balances over the three hosts"


def test_rolling_upgrade_under_load_through_haproxy(world, debs):
    fleet, haproxy, _, directory = world
    before = {name: fleet.hosts[name].show("appserver@hello.service", "MainPID")["MainPID"] for name in HOSTS}
    load = Load(HAPROXY_PORT)
    time.sleep(2)
    started = time.monotonic()
    # The first install took the .deb from the controller; this one comes from the hosts' repository.
    status, output, per_host = fleet.playbook(inventory(fleet, directory, 1), "-e", f"appserver_version={NEW}")
    took = time.monotonic() - started
    time.sleep(2)
    total = assert_no_failed_request(load, "the rolling upgrade through HAProxy")
    assert status == 0, output[-6000:]
    assert list(per_host) == list(HOSTS), f"one host at a time, in order: {per_host}\n{output[-3000:]}"
    for name, host in fleet.hosts.items():
        props = host.show("appserver@hello.service", "MainPID", "NRestarts", "ActiveState")
        assert props["NRestarts"] == "0" and props["ActiveState"] == "active", f"{name}: {props}\n{journal(host)}"
        assert props["MainPID"] != before[name], f"{name}: the arbiter was replaced in place (USR2)"
        status = fleet.status(name)
        assert status["version"] == NEW and status["ready"], (name, status)
        assert fleet.answer(name) == (200, f"release 1 on {name}")
    figure(f"rolling upgrade {OLD} -> {NEW} (apt repository) of 3 hosts through HAProxy under wrk -c64: {total} requests, "
           f"0 errors, {took:.0f} s in all; per host {per_host}")


def test_a_rollout_stops_at_the_first_host_that_fails(world, debs):
    """Release 2 on a fleet whose second host lacks its setting: host 1 moves, host 2 fails its reload
    and keeps serving release 1, host 3 is never touched; no client sees an error."""
    fleet, haproxy, _, directory = world
    load = Load(HAPROXY_PORT)
    time.sleep(2)
    status, output, per_host = fleet.playbook(inventory(fleet, directory, 2, greeting_on=("asfleet1", "asfleet3")),
                                              "-e", f"appserver_deb={debs[NEW]}")
    time.sleep(2)
    total = assert_no_failed_request(load, "the failed rollout through HAProxy")
    assert status != 0, output[-6000:]
    assert "NO MORE HOSTS LEFT" in output and "asfleet3" not in output.split("PLAY RECAP")[0], output[-6000:]
    assert "KeyError: 'HELLO_GREETING'" in output, "the failure says why (the journal's traceback)\n" + output[-6000:]
    assert fleet.answer("asfleet1") == (200, "release 2 on asfleet1: hello from asfleet1")
    for name in ("asfleet2", "asfleet3"):
        assert fleet.answer(name) == (200, f"release 1 on {name}"), name
        status = fleet.status(name)
        assert status["version"] == NEW and status["ready"], (name, status)
    assert_no_restart(fleet)
    untouched = fleet.hosts["asfleet3"].run("cat", "/srv/appserver/hello/hello.py").stdout
    assert untouched == RELEASE_1, "the rollout stopped before host 3"
    figure(f"rollout of release 2 failing on host 2 (of 3) through HAProxy: {total} requests, 0 errors; "
           f"stopped after {list(per_host)}")


def test_draining_a_host_through_haproxy(world):
    """`systemctl stop` turns /readyz to 503 and serves drain_delay (3 s) more: HAProxy's checks take
    the host out before it stops accepting; then it comes back."""
    fleet, haproxy, _, _ = world
    host = fleet.hosts["asfleet3"]
    load = Load(HAPROXY_PORT)
    time.sleep(2)
    started = time.monotonic()
    host.run("systemctl", "stop", "appserver@hello.socket", "appserver@hello.service")
    stopped = time.monotonic() - started
    assert haproxy.servers()["asfleet3"][0].startswith("DOWN"), haproxy.servers()
    served_while_down = haproxy.servers()["asfleet3"][1]
    time.sleep(2)
    assert haproxy.servers()["asfleet3"][1] == served_while_down, "no request went to the stopped host"
    host.run("systemctl", "start", "appserver@hello.socket", "appserver@hello.service")
    haproxy.wait_status("asfleet3", "UP")
    time.sleep(2)
    assert haproxy.servers()["asfleet3"][1] > served_while_down, "back in rotation"
    total = assert_no_failed_request(load, "draining a host through HAProxy")
    journal = host.run("journalctl", "-u", "appserver@hello.service", "-o", "cat", "--no-pager").stdout
    assert "draining: /readyz answers 503" in journal, journal[-3000:]
    assert_no_restart(fleet)
    figure(f"draining host 3 through HAProxy (systemctl stop, drain_delay 3 s, took {stopped:.1f} s) and "
           f"starting it again: {total} requests, 0 errors")


def test_the_fixed_rollout_and_a_drain_through_nginx(world, debs):
    """With host 2's setting added, the same rollout completes; through nginx, whose checks are passive
    (a host refusing a connection is skipped for fail_timeout and the request passed to the next)."""
    fleet, _, nginx, directory = world
    load = Load(NGINX_PORT)
    time.sleep(2)
    status, output, per_host = fleet.playbook(inventory(fleet, directory, 2), "-e", f"appserver_deb={debs[NEW]}")
    assert status == 0, output[-6000:]
    host = fleet.hosts["asfleet1"]
    host.run("systemctl", "stop", "appserver@hello.socket", "appserver@hello.service")
    time.sleep(2)
    host.run("systemctl", "start", "appserver@hello.socket", "appserver@hello.service")
    time.sleep(3)
    total = assert_no_failed_request(load, "the rollout and a drain through nginx")
    for name in HOSTS:
        assert fleet.answer(name) == (200, f"release 2 on {name}: hello from {name}")
        assert fleet.status(name)["version"] == NEW
    assert_no_restart(fleet)
    figure(f"rollout of release 2 to 3 hosts, then host 1 stopped and started, through nginx (passive checks): "
           f"{total} requests, 0 errors; per host {per_host}; requests nginx passed on to another host after "
           f"a failure: {len(nginx.upstream_errors())}")


def test_a_host_powered_off_hard_through_haproxy(world):
    """Not pass/fail on the count: how many requests a host's sudden death costs before HAProxy takes
    it out, and that the other two carry the load."""
    fleet, haproxy, _, _ = world
    load = Load(HAPROXY_PORT, seconds=20)
    time.sleep(3)
    before = haproxy.servers()
    fleet.hosts["asfleet3"].power_off_hard()
    killed = time.monotonic()
    haproxy.wait_status("asfleet3", "DOWN")
    out_after = time.monotonic() - killed
    after_down = haproxy.servers()
    time.sleep(3)
    end = haproxy.servers()
    total, errors, non2xx, out = load.stop()
    for name in ("asfleet1", "asfleet2"):
        assert end[name][0].startswith("UP") and end[name][1] > after_down[name][1], (name, end)
    assert end["asfleet3"][1] - after_down["asfleet3"][1] == 0, "no request sent to the dead host once it is DOWN"
    slowest = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)
    figure(f"host 3 powered off hard under wrk -c64 through HAProxy: {errors} socket errors and {non2xx} non-2xx "
           f"of {total} requests (HAProxy retries a request on another host when the connection fails, after "
           f"`timeout connect` 2 s, or no answer comes, after `timeout server` 5 s; the slowest took {slowest}); HAProxy marked it DOWN after {out_after:.1f} s; hosts 1 and 2 "
           f"served {end['asfleet1'][1] - before['asfleet1'][1]} and {end['asfleet2'][1] - before['asfleet2'][1]} "
           f"requests meanwhile")
