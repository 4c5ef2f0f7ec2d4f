"""Three hosts for the fleet test: systemd-nspawn containers, each booted with systemd in a network
namespace of its own on a bridge made here (198.18.0.0/24, the range reserved for network benchmark
tests, routed nowhere from this machine), reached by Ansible over ssh with a key made here; and the load
balancers in front of them, HAProxy and nginx, run on this machine's loopback. Everything is started
by the test and stopped by its pid; the bridge is removed at the end."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from nspawn import ROOT, Container, ensure_tree, wait_for

BRIDGE = "asfleet0"
NETWORK = "198.18.0"
GATEWAY = f"{NETWORK}.1"
HOSTS = {f"asfleet{n}": f"{NETWORK}.1{n}" for n in (1, 2, 3)}
APP_PORT, METRICS_PORT = 8000, 9101
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def missing_tools():
    """What this machine lacks for the fleet test ('' when nothing)."""
    needs = {"systemd-nspawn": "systemd-container", "haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk",
             "ssh": "openssh-client", "ssh-keygen": "openssh-client", "ip": "iproute2", "dpkg-scanpackages": "dpkg-dev"}
    missing = [package for tool, package in needs.items() if shutil.which(tool) is None]
    if not ANSIBLE_PLAYBOOK.exists():
        missing.append("ansible-core (tests/requirements.txt)")
    return ", ".join(missing)


def make_bridge():
    """The bridge the hosts' links join, with this machine's address on it; refuses to touch a
    198.18.0.0/24 that something else on this machine already uses."""
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        remove_bridge()   # left by an earlier run of this test that was killed
    taken = subprocess.run(["ip", "-o", "route", "show", "to", "match", f"{NETWORK}.0/24"], capture_output=True,
                           text=True, check=True).stdout
    assert not any(line.startswith(f"{NETWORK}.") for line in taken.splitlines()), f"{NETWORK}.0/24 is in use:\n{taken}"
    for command in (["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", f"{GATEWAY}/24", "dev", BRIDGE],
                    ["link", "set", BRIDGE, "up"]):
        subprocess.run(["ip", *command], check=True)


def remove_bridge():
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


class Fleet:
    """The three hosts, sshd started in each, and what Ansible needs to reach them."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.key = directory / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "appserver-fleet-test", "-f", str(self.key)],
                       check=True)
        self.share = share = directory / "share"
        share.mkdir(mode=0o755)
        shutil.copy(f"{self.key}.pub", share / "authorized_keys")
        # Every host boots the same tree, so they share its host key: the known_hosts has it per address.
        host_key = (ensure_tree() / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text("".join(f"{address} {' '.join(host_key)}\n" for address in HOSTS.values()))
        make_bridge()
        self.hosts = {}
        try:
            for name, address in HOSTS.items():
                host = Container(share, directory / f"{name}.log", swift_runtime=False, machine=name,
                                 network=(BRIDGE, f"{address}/24"))
                self.hosts[name] = host
                # The tree's /etc/hostname is this machine's: each host gets its own name.
                host.run("sh", "-c", f"echo {name} > /etc/hostname && hostname {name} && install -d -m 700 /root/.ssh && "
                                     "install -m 600 /mnt/share/authorized_keys /root/.ssh/authorized_keys && systemctl start ssh")
        except BaseException:
            self.stop()
            raise

    def publish(self, *debs):
        """An apt repository of these packages, the only one the hosts use (they have no other network)."""
        repo = self.share / "repo"
        repo.mkdir(mode=0o755, exist_ok=True)
        for deb in debs:
            shutil.copy(deb, repo)
        packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True,
                                  text=True, check=True).stdout
        (repo / "Packages").write_text(packages)
        for path in repo.iterdir():
            path.chmod(0o644)
        for host in self.hosts.values():
            host.run("sh", "-c", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && echo 'deb [trusted=yes] "
                                 "file:/mnt/share/repo ./' > /etc/apt/sources.list.d/appserver.list")

    def inventory(self, apps, host_vars):
        """An inventory file for rolling-upgrade.yml: group `appserver` with `appserver_apps`."""
        path = self.dir / "inventory.yml"
        hosts = {name: {"ansible_host": address, **host_vars.get(name, {})} for name, address in HOSTS.items()}
        path.write_text(json.dumps({"appserver": {"hosts": hosts, "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
            "appserver_apps": apps,
        }}}, indent=1))
        return path

    def playbook(self, inventory, *extra, timeout=900):
        """ansible-playbook rolling-upgrade.yml: (exit status, output, {host: seconds its batch took})."""
        proc = subprocess.Popen([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "rolling-upgrade.yml", *extra],
                                cwd=ANSIBLE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                                     "ANSIBLE_LOCAL_TEMP": str(self.dir / "ansible-tmp")})
        # With serial: 1 each host is a batch of its own, opened by a PLAY [...] header: a batch's time
        # runs from its header to the next (or to the recap).
        lines, per_host, batch = [], {}, None
        bound = threading.Timer(timeout, proc.kill)   # a hung run ends; the assertion below says so
        bound.start()
        for line in proc.stdout:
            now = time.monotonic()
            lines.append(line)
            if line.startswith(("PLAY [", "PLAY RECAP")):
                if batch and batch[1]:
                    per_host[batch[1]] = round(now - batch[0], 1)
                batch = (now, None)
            elif batch and not batch[1] and (m := re.match(r"^(?:ok|changed|fatal|failed|skipping): \[(\w+)\]", line)):
                batch = (batch[0], m.group(1))
        proc.wait(timeout=60)
        bound.cancel()
        output = "".join(lines)
        assert proc.returncode != -signal.SIGKILL, f"ansible-playbook ran past {timeout} s:\n" + output[-5000:]
        return proc.returncode, output, per_host

    def status(self, name, app="hello"):
        host = self.hosts[name]
        pid = host.show(f"appserver@{app}.service", "MainPID")["MainPID"]
        return json.loads(host.run("appserver", "status", "--json", "--pid", pid).stdout)

    def answer(self, name):
        """The app's answer from one host, directly (not through a load balancer)."""
        return http_get(HOSTS[name], APP_PORT, "/")

    def stop(self):
        for host in self.hosts.values():
            host.stop()
        remove_bridge()


def http_get(host, port, path, timeout=10):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


class HAProxy:
    """Debian's HAProxy on 127.0.0.1:port, balancing the hosts with active health checks on /readyz."""

    def __init__(self, directory: Path, port: int):
        self.port = port
        self.socket = directory / "haproxy.sock"
        servers = "\n".join(f"    server {name} {address}:{APP_PORT}" for name, address in HOSTS.items())
        self.config = directory / "haproxy.cfg"
        self.config.write_text(f"""global
    stats socket {self.socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    # How long a request to a host that vanished waits before it is retried on another.
    timeout server 5s
    timeout check 1s
    # A request whose connection failed or came back empty (a keep-alive connection the host closed
    # as it was sent) goes to another host.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend fleet
    bind 127.0.0.1:{port}
    default_backend hello

backend hello
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check port {METRICS_PORT} inter 500ms fall 2 rise 2
{servers}
""")
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(directory / "haproxy.log", "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)

    def servers(self):
        """{server: (status, total sessions)} from the stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        columns = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(columns, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: (r["status"], int(r["stot"] or 0)) for r in rows if r["svname"] in HOSTS}

    def wait_status(self, name, status, timeout=30):
        wait_for(lambda: os.path.exists(self.socket) and self.servers().get(name, ("",))[0].startswith(status),
                 timeout, f"HAProxy to see {name} {status}")

    def stop(self):
        self.proc.send_signal(signal.SIGUSR1)   # HAProxy's graceful stop
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Nginx:
    """Debian's nginx on 127.0.0.1:port with the hosts as an `upstream`: passive health checks only (a
    host that fails a request is left out for fail_timeout; the request goes to the next one)."""

    def __init__(self, directory: Path, port: int):
        self.port = port
        self.dir = directory / "nginx"
        self.dir.mkdir(mode=0o755)
        self.error_log = self.dir / "error.log"
        servers = "\n".join(f"        server {address}:{APP_PORT} max_fails=1 fail_timeout=5s;" for address in HOSTS.values())
        temp_paths = "\n".join(f"    {kind}_temp_path {self.dir}/{kind};" for kind in ("client_body", "proxy", "uwsgi",
                                                                                        "fastcgi", "scgi"))
        self.config = self.dir / "nginx.conf"
        self.config.write_text(f"""daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}
    upstream hello {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 5s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
        }}
    }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        check = subprocess.run([nginx, "-t", "-c", str(self.config), "-e", str(self.error_log)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([nginx, "-c", str(self.config), "-e", str(self.error_log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def upstream_errors(self):
        """nginx's [error] lines: each a request that failed on one host (and was passed to the next)."""
        text = self.error_log.read_text() if self.error_log.exists() else ""
        return [line for line in text.splitlines() if "[error]" in line]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Load:
    """wrk through a load balancer, bounded by `seconds` and stopped early (SIGINT, wrk then prints its
    totals) by `stop()`."""

    def __init__(self, port, seconds=300, connections=64):
        self.proc = subprocess.Popen(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                                      f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        self.seconds = seconds
        self.started = time.monotonic()

    def stop(self):
        """(requests, socket errors, non-2xx answers, wrk's output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate(timeout=self.seconds + 30)[0]
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        total = int(re.search(r"(\d+) requests in", out).group(1))
        return total, (sum(map(int, errors.groups())) if errors else 0), (int(non2xx.group(1)) if non2xx else 0), out
