"""sd_notify and journal output, checked against a notification socket the test listens on (the
real systemd tests boot systemd in a container)."""
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import requests

from conftest import APPS, BINARY, VENV, Server, free_port, wait_until


class NotifySocket:
    """A stand-in for systemd's NOTIFY_SOCKET: collects every message the server sends, and (as systemd
    does, SO_PASSCRED) which process sent it."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.senders = []
        self.running = True
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self):
        while self.running:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            pid = next((struct.unpack("iII", payload[:12])[0] for level, kind, payload in ancillary
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            self.senders.append(pid)
            self.messages.append(data.decode())

    def from_pid(self, pid, field):
        """How many messages from process `pid` carried `field`."""
        return sum(1 for sender, message in zip(list(self.senders), list(self.messages))
                   if sender == pid and field in message.split("\n"))

    def fields(self):
        return [line for message in list(self.messages) for line in message.split("\n")]

    def count(self, field):
        return sum(1 for line in self.fields() if line == field)

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def test_ready_status_watchdog_reload_and_stopping(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    server = Server("plain:app", "--workers", "2", "--timeout", "3", "--graceful-timeout", "4", tmp_path=tmp_path,
                    env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    try:
        wait_until(lambda: notify.count("READY=1") == 1, message="READY=1")
        assert server.log().count("Booting worker") >= 2, "READY=1 only after the workers booted"
        status = [f for f in notify.fields() if f.startswith("STATUS=")]
        assert any("2 workers serving" in s for s in status), status
        wait_until(lambda: notify.count("WATCHDOG=1") >= 3, message="watchdog pings")

        # One worker stuck in the app does not stop the pings: the other one is healthy.
        threading.Thread(target=lambda: _quiet_get(server.url + "/hang"), daemon=True).start()
        time.sleep(0.5)
        pings = notify.count("WATCHDOG=1")
        wait_until(lambda: notify.count("WATCHDOG=1") >= pings + 3, message="pings while a worker hangs")

        server.signal(signal.SIGHUP)
        wait_until(lambda: notify.count("RELOADING=1") == 1 and notify.count("READY=1") == 2, message="RELOADING=1 then READY=1")
        fields = notify.fields()
        assert fields.index("RELOADING=1") < len(fields) - 1 - fields[::-1].index("READY=1")

        for _ in range(5):
            requests.get(server.url + "/")
        wait_until(lambda: any("requests served" in f and not f.startswith("STATUS=2 workers serving, generation 2, 0 ") for f in notify.fields()),
                   message="a status with requests")
        server.signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        assert notify.count("STOPPING=1") == 1
    finally:
        server.stop()
        notify.close()


def test_the_watchdog_follows_the_main_process_across_an_upgrade(tmp_path):
    """systemd takes watchdog pings from the main process that WATCHDOG_PID names. After USR2 the new
    arbiter is the main process (MAINPID=): it must ping, or systemd kills it when WatchdogSec runs out."""
    notify = NotifySocket(tmp_path / "notify")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000")
    with open(tmp_path / "server.log", "w") as log:
        # As systemd starts it: WATCHDOG_PID is the server's own pid.
        proc = subprocess.Popen(["sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"', str(BINARY), "--virtualenv", VENV,
                                 "--bind", f"127.0.0.1:{port}", "plain:app"], cwd=APPS, env=env, stdout=log, stderr=log)
    new = None
    try:
        wait_until(lambda: notify.from_pid(proc.pid, "WATCHDOG=1") >= 2, message="pings from the first arbiter")
        proc.send_signal(signal.SIGUSR2)
        handover = wait_until(lambda: next((f for f in notify.fields() if f.startswith("MAINPID=")), None),
                              message="MAINPID= naming the new arbiter")
        new = int(handover.split("=")[1])
        assert proc.wait(20) == 0
        wait_until(lambda: notify.from_pid(new, "WATCHDOG=1") >= 3, message="pings from the new arbiter")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        if proc.poll() is None:
            proc.kill()
        if new:
            os.kill(new, signal.SIGTERM)   # the arbiter our server's USR2 started
            wait_until(lambda: not os.path.exists(f"/proc/{new}") or "Z" in open(f"/proc/{new}/stat").read().split()[2],
                       timeout=20, message="the new arbiter to stop")
        notify.close()


def _quiet_get(url):
    try:
        requests.get(url, timeout=30)
    except requests.RequestException:
        pass


def test_log_lines_carry_syslog_priorities_on_the_journal(tmp_path):
    log_path = tmp_path / "journal-stand-in.log"
    port = free_port()
    with open(log_path, "w") as f:
        info = os.fstat(f.fileno())
        # JOURNAL_STREAM names the device and inode of stderr when stderr is the journal.
        env = dict(os.environ, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
        env.pop("VIRTUAL_ENV", None)
        proc = subprocess.Popen([str(BINARY), "--virtualenv", VENV, "--bind", f"127.0.0.1:{port}", "--access-logfile", "-", "plain:app"],
                                cwd=APPS, env=env, stdout=f, stderr=f)
        try:
            wait_until(lambda: _ok(f"http://127.0.0.1:{port}/error"), message="a 500 from /error")
            wait_until(lambda: "ValueError: boom" in log_path.read_text(), message="the traceback")
        finally:
            proc.terminate()
            proc.wait(15)
    lines = log_path.read_text().splitlines()
    assert any(l.startswith("<6>[") and "[INFO] Booting worker" in l for l in lines), lines[:5]
    assert any(l.startswith("<3>[") and "[ERROR] Error handling request /error" in l for l in lines)
    traceback_lines = [l for l in lines if "Traceback" in l or "ValueError: boom" in l]
    assert traceback_lines and all(l.startswith("<3>") for l in traceback_lines), traceback_lines
    # The access log on stdout, the same journal stream: each line whole, at info.
    access = [l for l in lines if '"GET /error HTTP/1.1" 500' in l]
    assert access and all(re.match(r'^<6>127\.0\.0\.1 - - \[[^]]+\] "GET /error HTTP/1\.1" 500 ', l) for l in access), access


def _ok(url):
    try:
        return requests.get(url, timeout=2).status_code == 500
    except requests.RequestException:
        return False
