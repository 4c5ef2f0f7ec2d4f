"""The command line and config file: clear errors with exit status 2, and where sockets come from."""
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import APPS, BINARY, VENV, free_port, wait_until


def run(*args, cwd=APPS, env=None):
    full_env = dict(os.environ)
    full_env.pop("VIRTUAL_ENV", None)
    full_env.update(env or {})
    return subprocess.run([str(BINARY), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, message", [
    (["--workers", "zero", "plain:app"], "invalid value 'zero' for 'workers': expected a whole number"),
    (["--workers", "0", "plain:app"], "invalid value '0' for 'workers': must be from 1 to 1024"),
    (["--bind", "nonsense:port:x", "plain:app"], "bind"),
    (["--log-level", "loud", "plain:app"], "invalid value 'loud' for 'loglevel'"),
    (["--env", "NOEQUALS", "plain:app"], "expected KEY=VALUE"),
    (["--no-such-flag", "plain:app"], "Unknown option '--no-such-flag'"),
    (["missing_module:app"], "cannot find the app module 'missing_module'"),
    (["not an app"], "is not an app reference"),
    ([], "no app given"),
    (["--chdir", "/nonexistent/dir", "plain:app"], "no such directory"),
    (["--virtualenv", "/tmp", "plain:app"], "not a virtualenv"),
    (["--max-requests-jitter", "5", "plain:app"], "needs max_requests"),
])
def test_bad_input_is_one_clear_message_and_status_2(args, message):
    result = run(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Fatal error" not in result.stderr and "Stack dump" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


def test_config_file_errors(tmp_path):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text('bind = ["127.0.0.1:9"]\nworkerz = 2\n')
    result = run("-c", str(bad_key), "plain:app")
    assert result.returncode == 2 and "unknown setting 'workerz'" in result.stderr and "line 2" in result.stderr
    bad_syntax = tmp_path / "bad_syntax.toml"
    bad_syntax.write_text('workers = [1, \n')
    result = run("-c", str(bad_syntax), "plain:app")
    assert result.returncode == 2 and str(bad_syntax) in result.stderr
    result = run("-c", str(tmp_path / "missing.toml"), "plain:app")
    assert result.returncode == 2 and "cannot be read" in result.stderr


def test_check_config_and_version(tmp_path):
    config = tmp_path / "app.toml"
    config.write_text(f'app = "plain:app"\nworkers = 3\nthreads = 2\nbind = ["127.0.0.1:9001", "unix:{tmp_path}/s.sock"]\nvirtualenv = "{VENV}"\n')
    result = run("-c", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "3 workers x 2 threads" in result.stdout
    assert result.stderr == ""
    result = run("-c", str(config), "--workers", "5", "--check-config")
    assert "5 workers" in result.stdout, "the command line wins over the file"
    # What the arbiter would log at start is said on stderr too; the check still passes.
    result = run("-c", str(config), "--worker-connections", "50", "--limit-request-line", "16384", "--check-config")
    assert result.returncode == 0 and "3 workers x 2 threads" in result.stdout
    notes = result.stderr.splitlines()
    assert len(notes) == 2 and notes[0].startswith("appserver: note: worker_connections has no effect: ")
    assert notes[1] == "appserver: warning: limit_request_line 16384 is more than the most allowed, 8190: using 8190 (as Gunicorn does)"
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip()[0].isdigit()
    result = run("--help")
    assert result.returncode == 0 and "--limit-request-field_size" in result.stdout


def test_virtualenv_from_environment(serve):
    server = serve("plain:app", env={"VIRTUAL_ENV": VENV})
    assert os.path.realpath(requests.get(server.url + "/environ").json()["sys.prefix"]) == os.path.realpath(VENV)


def test_config_file_settings_are_used(serve, tmp_path):
    port = free_port()
    config = tmp_path / "app.toml"
    config.write_text(f'# a comment\nbind = "127.0.0.1:{port}"\nworkers = 2\n[env]\n')
    config.write_text(f'bind = "127.0.0.1:{port}"\nworkers = 2\nenv = ["GREETING=hi"]\n')
    server = serve("plain:app", "-c", str(config), port=port, bind=[], workers=2)
    assert len(server.workers()) == 2


def test_unix_socket_and_ipv6(serve, tmp_path):
    sock_path = tmp_path / "app.sock"
    port = free_port()
    server = serve("plain:app", bind=[f"unix:{sock_path}", f"[::1]:{port}"], port=port, wait=False)
    wait_until(lambda: "Booting worker" in server.log() and sock_path.exists(), message="the unix socket")

    def ask_unix():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(1000)

    assert wait_until(lambda: b"Hello, World!" in ask_unix(), message="an answer on the unix socket")
    with socket.create_connection(("::1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"Hello, World!" in s.recv(1000)
    # REMOTE_ADDR/REMOTE_PORT: an IPv6 peer's own address and port (twice: not kept like IPv4's); none on a unix socket.
    for _ in range(2):
        with socket.create_connection(("::1", port), timeout=5) as s:
            s.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            env = json.loads(data.partition(b"\r\n\r\n")[2])
            assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("::1", str(s.getsockname()[1]))
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        env = json.loads(data.partition(b"\r\n\r\n")[2])
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("", "")
    server.stop()
    assert not sock_path.exists(), "the unix socket file is removed on exit"


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_sockets_from_systemd_socket_activation(tmp_path):
    port = free_port()
    log = open(tmp_path / "log", "w")
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web",
         str(BINARY), "--virtualenv", VENV, "--bind", "127.0.0.1:1", "plain:app"],
        cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Listening on" in (tmp_path / "log").read_text(), message="systemd-socket-activate to listen")
        # The first connection starts the server (socket activation), then waits in the backlog.
        r = requests.get(f"http://127.0.0.1:{port}/environ", timeout=20)
        assert r.status_code == 200
        env_seen = r.json()
        assert "LISTEN_FDS" not in env_seen and "LISTEN_PID" not in env_seen
        text = (tmp_path / "log").read_text()
        assert f"Listening at: http://127.0.0.1:{port}" in text and "[systemd (web)]" in text
        assert "127.0.0.1:1" not in text.split("Listening at:")[1].splitlines()[0]
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_several_named_sockets_from_systemd(tmp_path):
    port4, port6 = free_port(), free_port()
    sock_path = tmp_path / "app.sock"
    log = open(tmp_path / "log", "w")
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port4}", "-l", f"[::1]:{port6}", "-l", str(sock_path),
         "--fdname=web:web6:local", str(BINARY), "--virtualenv", VENV, "plain:app"],
        cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Listening on" in (tmp_path / "log").read_text(), message="systemd-socket-activate to listen")
        assert requests.get(f"http://127.0.0.1:{port4}/", timeout=20).content == b"Hello, World!"
        assert requests.get(f"http://[::1]:{port6}/", timeout=20).content == b"Hello, World!"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"Hello, World!" in s.recv(1000)
        text = (tmp_path / "log").read_text()
        assert "[systemd (web)]" in text and "[systemd (web6)]" in text and f"unix:{sock_path} (" in text and "[systemd (local)]" in text
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_tcp_listeners_bound_the_unsent_bytes_of_their_connections(tmp_path):
    """TCP_NOTSENT_LOWAT goes on the listening socket (connections inherit it); a unix socket has none
    and is served as before, without a warning."""
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = tmp_path / "app.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    assert tcp.getsockopt(socket.IPPROTO_TCP, 25) == 0  # TCP_NOTSENT_LOWAT: unset until the server sets it
    port = tcp.getsockname()[1]
    # The sockets reach the server as fds 3 and 4 of a socket activation, as systemd passes them.
    launcher = ("import os, sys\n"
                "os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4)\n"
                "os.environ.update(LISTEN_FDS='2', LISTEN_PID=str(os.getpid()))\n"
                "os.execv(sys.argv[3], sys.argv[3:])\n")
    log = open(tmp_path / "log", "w")
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(tcp.fileno()), str(unix.fileno()), str(BINARY), "--virtualenv", VENV, "plain:app"],
        cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(tcp.fileno(), unix.fileno()))
    try:
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=20).content == b"Hello, World!"
        assert tcp.getsockopt(socket.IPPROTO_TCP, 25) == 64 * 1024
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(unix_path))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"Hello, World!" in s.recv(1000)
        # A response larger than the bound still arrives whole.
        big = requests.get(f"http://127.0.0.1:{port}/stream", timeout=20)
        assert big.status_code == 200 and big.content == b"".join(bytes([65 + i % 26]) * 65536 for i in range(16))
        assert "warning" not in (tmp_path / "log").read_text().lower()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        tcp.close()
        unix.close()


def server_end_of(pid, client):
    """The server's end of `client`'s TCP connection (IPv4), duplicated out of process `pid` with
    pidfd_getfd(2): a socket option the server set on it can then be read here."""
    def hex_address(address):
        host, port = address
        return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(host))[0], port)
    wanted = (hex_address(client.getpeername()), hex_address(client.getsockname()))
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if tuple(line.split()[1:3]) == wanted)
    target = next(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        duplicate = libc.syscall(438, pidfd, target, 0)  # SYS_pidfd_getfd on x86-64
        assert duplicate >= 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    return socket.socket(fileno=duplicate)


def test_accepted_connections_send_without_nagle_delay(serve):
    """TCP_NODELAY is set once, on the listening socket, and every accepted connection carries it
    (Linux copies it): a response's last small segment never waits for the client's delayed ACK."""
    server = serve("plain:app")
    worker = server.workers()[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(1000).startswith(b"HTTP/1.1 200 OK")
        with server_end_of(worker, client) as end:
            assert end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def other_python():
    """A CPython of another minor version than the embedded 3.11 (this machine kind has pyenv's)."""
    for version in ("3.12", "3.13", "3.10"):
        for candidate in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")) + [Path(f"/usr/bin/python{version}")]:
            if candidate.exists():
                return candidate, version
    return None, None


def test_a_virtualenv_of_another_python_is_refused_before_any_worker(tmp_path):
    python, version = other_python()
    if python is None:
        pytest.skip("no CPython other than 3.11 on this machine")
    venv = tmp_path / f"venv{version}"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
    for extra in ([], ["--check-config"]):
        out = subprocess.run([str(BINARY), "--virtualenv", str(venv), *extra, "plain:app"], cwd=APPS,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, out
        line = out.stderr.strip()
        assert f"made by Python {version}, and this appserver embeds Python 3.11" in line and "python3.11 -m venv" in line, line
        assert "\n" not in line and "Booting worker" not in out.stdout + out.stderr


def test_a_reload_into_a_virtualenv_of_another_python_fails_and_the_old_workers_serve(serve, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    server = serve("plain:app", "--virtualenv", str(venv))
    worker = server.workers()[0]
    config = venv / "pyvenv.cfg"
    # The virtualenv is made again by another Python (as `uv venv` writes it) and the server is reloaded.
    config.write_text("\n".join(l for l in config.read_text().splitlines() if not l.startswith("version")) + "\nversion_info = 3.12.1.final.0\n")
    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.log(), message="the reload to be refused")
    assert "made by Python 3.12" in server.log()
    assert server.workers() == [worker] and requests.get(server.url + "/", timeout=5).status_code == 200


def test_a_uvicorn_command_line_serves_as_it_is(serve):
    """The line a FastAPI project starts Uvicorn with works unchanged: --host/--port bind, Uvicorn's
    names for keep-alive and max-requests are appserver's, and its HTTP-layer tuning is named as having
    no effect here."""
    port = free_port()
    server = serve("fastapiapp:app", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--proxy-headers",
                   "--forwarded-allow-ips", "*", "--timeout-keep-alive", "9", "--http", "httptools", "--no-access-log",
                   bind=[], port=port, workers=2)
    assert f"Listening at: http://127.0.0.1:{port}" in server.log()
    assert "Uvicorn's --http has no effect" in server.log()
    assert requests.get(server.url + "/items/3", timeout=5).json() == {"id": 3, "q": None}
    printed = subprocess.run([str(BINARY), "--host", "127.0.0.1", "--port", str(port), "--timeout-keep-alive", "9",
                              "--limit-max-requests", "100", "--print-config", "fastapiapp:app"], capture_output=True, text=True, timeout=30)
    assert 'bind = ["127.0.0.1:' + str(port) + '"]' in printed.stdout and "keepalive = 9" in printed.stdout and "max_requests = 100" in printed.stdout
