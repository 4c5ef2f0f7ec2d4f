"""A real systemd 252 as PID 1 for tests: a debootstrapped Debian bookworm booted with
systemd-nspawn (never plain unshare: that would let its services reconfigure this machine).

The root tree is built once (debootstrap, about a minute) and cached outside git as
rootfs-cache/bookworm-<hash of the package list>.tar; each boot uses --volatile=overlay, so the tree is
never changed by a test. By default the container shares this machine's network (a socket it listens on
is reachable on 127.0.0.1 here); `Container(network=Host(...))` gives it a network namespace of its own
on a bridge the test made (tests/systemd/fleet.py)."""
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "rootfs-cache"
# openssh-server and python3-apt: the fleet test's hosts, which Ansible reaches over ssh and whose apt
# module needs python3-apt. sshd is disabled in the tree (a container on this machine's network would
# take its port 22) and started only in containers with a network of their own.
PACKAGES = "systemd,systemd-sysv,dbus,python3,libpython3.11,libsystemd0,curl,procps,openssh-server,python3-apt"
FLAVOUR = hashlib.sha256(PACKAGES.encode()).hexdigest()[:8]
TARBALL = CACHE / f"bookworm-{FLAVOUR}.tar"
TREE = CACHE / f"bookworm-{FLAVOUR}-root"


def mirror():
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def ensure_tree():
    """The bookworm tree, from the cached tarball (built when missing)."""
    if (TREE / "usr/lib/systemd/systemd").exists():
        return TREE
    CACHE.mkdir(exist_ok=True)
    if not TARBALL.exists():
        build = CACHE / "bookworm-build"
        shutil.rmtree(build, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(build), mirror()],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["systemctl", f"--root={build}", "disable", "ssh.service", "ssh.socket"],
                       check=True, capture_output=True)
        subprocess.run(["tar", "-C", str(build), "-cf", str(TARBALL) + ".part", "."], check=True)
        os.rename(str(TARBALL) + ".part", TARBALL)
        shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(TREE, ignore_errors=True)
    TREE.mkdir()
    subprocess.run(["tar", "-C", str(TREE), "-xf", str(TARBALL)], check=True)
    return TREE


class Container:
    """One booted container; `run` executes a command inside it (nsenter into its PID 1's namespaces)."""

    def __init__(self, share: Path, log: Path, swift_runtime=True, machine="appserver-test", network=None):
        """`swift_runtime`: bind the host's /opt/swift for a binary that links the Swift runtime
        dynamically (the .deb's binary links it statically and must run without it).
        `network`: (bridge, address/prefix) for a network namespace of its own, attached to that bridge
        (its interface host0 gets the address); by default the container shares this machine's network."""
        tree = ensure_tree()
        self.share = share
        self.machine = machine
        self.log = open(log, "w")
        networking = [f"--network-bridge={network[0]}"] if network else []
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--volatile=overlay", "-D", str(tree),
             f"--bind={share}:/mnt/share", *(["--bind-ro=/opt/swift"] if swift_runtime else []), "--console=pipe",
             f"--machine={machine}", *networking],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.leader = self._find_leader()
        if network:
            # This machine's `ip` in the container's network namespace only (minbase has no iproute2).
            for command in (["addr", "add", network[1], "dev", "host0"], ["link", "set", "host0", "up"]):
                subprocess.run(["nsenter", "--target", str(self.leader), "--net", "ip", *command], check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not boot: {state}")

    def _find_leader(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited; see its log")
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and comm == "systemd":
                    return int(pid)
            time.sleep(0.05)
        raise RuntimeError("no PID 1 in the container")

    def run(self, *command, check=True, timeout=60):
        result = subprocess.run(
            ["nsenter", "--target", str(self.leader), "--mount", "--uts", "--ipc", "--pid", "--net", "--cgroup", "--", *command],
            capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def show(self, unit, *properties):
        out = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.strip().splitlines())

    def power_off_hard(self):
        """Pulls the plug: SIGKILL to the container's PID 1 ends every process in it at once, and its
        network namespace (with its end of the link) goes with them."""
        os.kill(self.leader, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff", check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()   # systemd-nspawn, which we started
            self.proc.wait()
        self.log.close()


def wait_for(predicate, timeout=30.0, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")
