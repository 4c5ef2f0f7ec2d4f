"""Behind a real nginx: Django (WSGI) and FastAPI (ASGI) through proxy_pass to a unix socket with a
keep-alive upstream and through uwsgi_pass, with nginx terminating TLS; websockets; HUP and USR2 under
POST load; PROXY protocol from nginx's stream module; socket permissions for nginx's www-data."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import wait_until
from edge import CLIENT, PROXY_HEADERS, Nginx, fetch, free_port, location_proxy, location_uwsgi, shared_dir
from test_under_load import read_pid

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"),
                                reason="nginx not installed (make deps installs it)")


@pytest.fixture
def edge(serve, request):
    """edge(app, chain, *args) -> (server, nginx): appserver with a unix socket (proxy_pass chains) or
    a uwsgi listener (uwsgi_pass chains) and a plain HTTP one, and nginx in front."""
    started = []
    directory = shared_dir()

    def start(app, chain, *args, workers=1, umask_of_shell=0o022):
        sock = directory / "app.sock"
        if chain == "proxy":
            binds = [f"unix:{sock}"]
            nginx_args = dict(upstreams=f"upstream app {{ server unix:{sock}; keepalive 16; }}", locations=location_proxy("app"))
        elif chain == "uwsgi-tcp":
            port = free_port()
            binds = [f"uwsgi://127.0.0.1:{port}"]
            nginx_args = dict(locations=location_uwsgi(f"127.0.0.1:{port}"))
        else:  # uwsgi over a unix socket
            binds = [f"uwsgi://unix:{sock}"]
            nginx_args = dict(locations=location_uwsgi(f"unix:{sock}"))
        http_port = free_port()
        # Started as from a shell with the usual umask: the socket must still let www-data in.
        old = os.umask(umask_of_shell)
        try:
            server = serve(app, *args, bind=binds + [f"127.0.0.1:{http_port}"], port=http_port, workers=workers)
        finally:
            os.umask(old)
        nginx = Nginx(directory, **nginx_args)
        started.append(nginx)
        return server, nginx

    yield start
    for nginx in started:
        nginx.stop()
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for nginx in started:
            print("--- nginx error log\n" + (nginx.error_log.read_text() if nginx.error_log.exists() else ""))
    shutil.rmtree(directory, ignore_errors=True)


CHAINS = ["proxy", "uwsgi-tcp", "uwsgi-unix"]


def whoami(nginx, headers=None):
    status, _, body = fetch(nginx.https_port, "GET", "/whoami", headers=headers)
    assert status == 200, body
    return json.loads(body)


def common_checks(nginx):
    """JSON POST, a 20 MiB upload (checksum), a streamed 1 MiB response."""
    status, _, body = fetch(nginx.https_port, "POST", "/json", body=json.dumps({"a": [1, 2, "é"]}),
                            headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["got"] == {"a": [1, 2, "é"]}, body
    payload = os.urandom(20 << 20)
    status, _, body = fetch(nginx.https_port, "POST", "/upload", body=payload, headers={"Content-Type": "application/octet-stream"})
    assert status == 200, body
    assert json.loads(body) == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    status, headers, body = fetch(nginx.https_port, "GET", "/stream")
    assert status == 200 and body == b"x" * (1 << 20), (status, len(body))


@pytest.mark.parametrize("chain", CHAINS)
def test_django_behind_nginx_tls(edge, chain):
    server, nginx = edge("edgesite.wsgi:application", chain, "--threads", "4")
    me = whoami(nginx, headers={"X-Forwarded-For": "6.6.6.6", "X-User-Role": "admin", "X_User_Role": "forged"})
    # https from nginx's word (X-Forwarded-Proto over a trusted unix socket, or HTTPS in the uwsgi
    # packet), the client's own address, never the spoofed one; SECURE_SSL_REDIRECT does not loop.
    assert me["scheme"] == "https" and me["secure"] is True, me
    assert me["remote_addr"] == CLIENT, me
    assert me["absolute"] == f"https://127.0.0.1:{nginx.https_port}/next", me
    assert me["underscore_header"] == "admin", me   # X_User_Role dropped, never HTTP_X_USER_ROLE
    common_checks(nginx)

    # A form posted over https passes Django's CSRF origin check (403 if the scheme were http).
    status, headers, body = fetch(nginx.https_port, "GET", "/form")
    token = json.loads(body)["csrftoken"]
    cookie = re.search(r"csrftoken=([^;]+)", headers["set-cookie"]).group(1)
    origin = f"https://127.0.0.1:{nginx.https_port}"
    status, _, body = fetch(nginx.https_port, "POST", "/form", body=f"csrfmiddlewaretoken={token}&name=ada",
                            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}",
                                     "Origin": origin, "Referer": origin + "/form"})
    assert status == 200 and body == b"accepted ada", (status, body)

    # Over nginx's plain-http listener the same app sees http and redirects to https: the scheme is
    # what the client used, not a constant.
    status, headers, _ = fetch(nginx.http_port, "GET", "/whoami", tls=False)
    assert status == 301 and headers["location"].startswith("https://"), (status, headers)
    assert nginx.errors() == []


@pytest.mark.parametrize("chain", CHAINS)
def test_fastapi_behind_nginx_tls(edge, chain):
    server, nginx = edge("edgeasgi:app", chain)
    me = whoami(nginx, headers={"X-Forwarded-For": "6.6.6.6", "X_User_Role": "forged"})
    assert me["scheme"] == "https" and me["client"] == CLIENT, me
    assert me["absolute"] == f"https://127.0.0.1:{nginx.https_port}/whoami", me
    assert me["underscore_header"] is None, me
    common_checks(nginx)
    # FastAPI's slash redirect is absolute: it must point to https.
    status, headers, _ = fetch(nginx.https_port, "GET", "/items")
    assert status == 307 and headers["location"] == f"https://127.0.0.1:{nginx.https_port}/items/", headers
    assert nginx.errors() == []


def test_websockets_through_nginx(edge):
    from websockets.sync.client import connect
    server, nginx = edge("edgeasgi:app", "proxy")
    context = ssl._create_unverified_context()
    with connect(f"wss://127.0.0.1:{nginx.https_port}/ws", ssl=context, max_size=4 << 20) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "echo: héllo"
        payload = os.urandom(1 << 20)
        ws.send(payload)
        assert ws.recv(timeout=20) == payload
    assert nginx.errors() == []


def test_untrusted_peer_cannot_spoof_origin(serve):
    port = free_port()
    serve("edgeasgi:app", "--forwarded-allow-ips", "127.0.0.1", port=port)
    # From 127.0.0.5, which forwarded_allow_ips does not name: its X-Forwarded-* are not believed.
    status, _, body = fetch(port, "GET", "/whoami", tls=False,
                            headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    me = json.loads(body)
    assert status == 200 and me["client"] == CLIENT and me["scheme"] == "http", me
    # From 127.0.0.1, which it names: believed.
    status, _, body = fetch(port, "GET", "/whoami", tls=False, source="127.0.0.1",
                            headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    me = json.loads(body)
    assert me["client"] == "6.6.6.6" and me["scheme"] == "https", me
    # Scheme headers that contradict each other: 400 (Gunicorn's InvalidSchemeHeaders).
    status, _, _ = fetch(port, "GET", "/whoami", tls=False, source="127.0.0.1",
                         headers={"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off"})
    assert status == 400


def test_flask_mounted_under_a_prefix_by_nginx(serve):
    """nginx mounts the app at /shop with `proxy_set_header SCRIPT_NAME /shop` (Gunicorn's
    forwarder_headers): through TLS and a unix socket, Flask builds its URLs under /shop with https."""
    directory = shared_dir()
    sock = directory / "app.sock"
    server = serve("mountedflask:app", bind=[f"unix:{sock}"], port=free_port(), wait=False)
    wait_until(lambda: sock.exists() and "ready: 1 workers booted" in server.log(), message="the server on its socket")
    nginx = Nginx(directory, upstreams=f"upstream app {{ server unix:{sock}; keepalive 16; }}", locations=f"""
        location /shop/ {{
            proxy_pass http://app;
            {PROXY_HEADERS}
            proxy_set_header SCRIPT_NAME /shop;
            proxy_set_header Connection "";
        }}""")
    try:
        status, _, body = fetch(nginx.https_port, "GET", "/shop/hello")
        said = json.loads(body)
        assert status == 200 and said["script_name"] == "/shop" and said["path_info"] == "/hello", said
        assert said["url"] == "/shop/hello" and said["external"] == f"https://127.0.0.1:{nginx.https_port}/shop/hello", said
    finally:
        nginx.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_header_map_refuse(serve):
    port = free_port()
    serve("edgeasgi:app", "--header-map", "refuse", "--forwarded-allow-ips", "127.0.0.1", port=port)
    status, _, _ = fetch(port, "GET", "/whoami", tls=False, headers={"X_User_Role": "x"})
    assert status == 400
    status, _, _ = fetch(port, "GET", "/whoami", tls=False, headers={"X-User-Role": "x"})
    assert status == 200
    # SCRIPT_NAME is a trusted forwarder's to send (Gunicorn's forwarder_headers); from anyone else it is refused.
    status, _, _ = fetch(port, "GET", "/whoami", tls=False, source="127.0.0.1", headers={"SCRIPT_NAME": "/shop"})
    assert status == 200
    status, _, _ = fetch(port, "GET", "/whoami", tls=False, headers={"SCRIPT_NAME": "/shop"})
    assert status == 400


def test_unix_socket_mode_lets_nginx_in_and_umask_can_close_it(edge, serve):
    server, nginx = edge("edgeasgi:app", "proxy")
    sock = nginx.dir / "app.sock"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o777"
    assert "(mode 0777 root:root)" in server.log() or "(mode 0777 " in server.log()
    assert fetch(nginx.https_port, "GET", "/whoami")[0] == 200
    server.stop()
    # The same server with a umask that shuts other users out: nginx's www-data workers get EACCES.
    port = free_port()
    serve("edgeasgi:app", "--umask", "0o077", bind=[f"unix:{sock}", f"127.0.0.1:{port}"], port=port)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o700"
    status, _, _ = fetch(nginx.https_port, "GET", "/whoami")
    assert status == 502
    assert any("Permission denied" in line for line in nginx.errors()), nginx.errors()


def run_wrk_post(url, seconds, script_dir):
    script = script_dir / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = "{\\"a\\": 1}"\nwrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return total, (sum(map(int, errors.groups())) if errors else 0), (int(non2xx.group(1)) if non2xx else 0), out


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
@pytest.mark.parametrize("chain", ["proxy", "uwsgi-unix"])
def test_hup_and_usr2_under_post_load_through_nginx(edge, tmp_path, chain):
    pidfile = tmp_path / "app.pid"
    server, nginx = edge("edgeasgi:app", chain, "--workers", "2", "--pid", str(pidfile), workers=2)
    # nginx's plain-http listener: what it speaks to appserver is the chain's, https is not the point here.
    url = f"http://127.0.0.1:{nginx.http_port}/json"
    old = read_pid(pidfile)
    result = {}
    load = threading.Thread(target=lambda: result.update(out=run_wrk_post(url, 9, tmp_path)))
    started = time.monotonic()
    load.start()
    time.sleep(2)
    server.signal(signal.SIGHUP)
    time.sleep(max(0.0, 5 - (time.monotonic() - started)))
    os.kill(old, signal.SIGUSR2)
    load.join()
    total, errors, non2xx, out = result["out"]
    assert total > 500 and errors == 0 and non2xx == 0, out
    assert nginx.errors() == [], nginx.errors()
    new = read_pid(pidfile)
    assert new and new != old, server.log()
    assert server.proc.wait(15) == 0
    # The socket file survived the handover: the new arbiter serves it.
    status, _, body = fetch(nginx.https_port, "POST", "/json", body="[1]", headers={"Content-Type": "application/json"})
    assert status == 200, body
    os.kill(new, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{new}"), 20, message="the new arbiter to stop")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_and_group_own_the_socket_and_run_the_workers(serve):
    import pwd
    directory = shared_dir()
    try:
        sock = directory / "app.sock"
        port = free_port()
        server = serve("edgeasgi:app", "--user", "nobody", "--group", "www-data", "--umask", "0o007",
                       bind=[f"unix:{sock}", f"127.0.0.1:{port}"], port=port)
        info = os.stat(sock)
        assert (pwd.getpwuid(info.st_uid).pw_name, info.st_gid, oct(info.st_mode & 0o777)) == ("nobody", 33, "0o770")
        assert "(mode 0770 nobody:www-data)" in server.log()
        worker = server.workers()[0]
        with open(f"/proc/{worker}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["Uid"].split()[:2] == ["65534", "65534"] and status["Gid"].split()[:2] == ["33", "33"], status
        assert status["Groups"].split() == ["33"], status["Groups"]
        # The arbiter stays root (it binds, forks and signals).
        assert os.stat(f"/proc/{server.pid}").st_uid == 0
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_unknown_user_is_one_clear_line(tmp_path):
    from conftest import APPS, BINARY, VENV
    result = subprocess.run([str(BINARY), "--virtualenv", VENV, "--user", "no-such-user-here", "edgeasgi:app"],
                            cwd=APPS, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "appserver: error: invalid value 'no-such-user-here' for 'user': no such user", result.stderr
