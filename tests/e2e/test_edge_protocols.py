"""PROXY protocol (v1, v2, from a test client and from nginx's stream module) and the uwsgi protocol's
bad packets and wrong-listener cases, against the real binary; each followed by a request that must
still be served."""
import json
import os
import shutil
import socket
import struct

import pytest

from conftest import raw_request, wait_until
from edge import CLIENT, Nginx, free_port, shared_dir


def proxy_v2(source, source_port, destination, destination_port, command=1, tlvs=b""):
    body = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack("!HH", source_port, destination_port) + tlvs
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def get_json(port, prefix, path="/whoami"):
    response = raw_request(port, prefix + f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return json.loads(body)


def test_proxy_protocol_v1_and_v2_from_a_client(serve):
    port, plain = free_port(), free_port()
    server = serve("edgeasgi:app", bind=[f"http+proxy://127.0.0.1:{port}", f"127.0.0.1:{plain}"], port=plain)
    assert "speaking http, PROXY protocol auto first" in server.log()
    me = get_json(port, f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {port}\r\n".encode())
    assert me["client"] == "203.0.113.7" and me["server"] == ["127.0.0.1", port], me
    me = get_json(port, proxy_v2("198.51.100.20", 50000, "127.0.0.1", port))
    assert me["client"] == "198.51.100.20", me
    me = get_json(port, b"PROXY TCP6 2001:db8::7 ::1 40000 443\r\n")
    assert me["client"] == "2001:db8::7", me
    # LOCAL (a proxy's health check): the connection's own address stands.
    assert get_json(port, proxy_v2("0.0.0.0", 0, "0.0.0.0", 0, command=0))["client"] == "127.0.0.1"
    # The SSL TLV (HAProxy's send-proxy-v2-ssl): the client used TLS.
    assert get_json(port, proxy_v2("198.51.100.20", 1, "127.0.0.1", 2, tlvs=b"\x20\x00\x05\x01\x00\x00\x00\x00"))["scheme"] == "https"

    # Without a valid header the connection is refused, never guessed: no answer at all.
    for bad in [b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\nGET / HTTP/1.1\r\n\r\n",
                b"PROXY TCP4 1.2.3.4\n", b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00"]:
        assert raw_request(port, bad, read_timeout=5) == b"", bad
    wait_until(lambda: "refused a connection on a PROXY protocol listener" in server.log(), 5, message="the refusal logged")
    # A plain listener of the same server does not expect the header, and says so when it gets one.
    response = raw_request(plain, f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {plain}\r\nGET / HTTP/1.1\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 400"), response
    wait_until(lambda: "a PROXY protocol header reached a listener that does not expect one" in server.log(), 5, message="the hint")
    assert get_json(port, b"PROXY UNKNOWN\r\n")["client"] == "127.0.0.1"


def test_proxy_protocol_from_a_peer_not_allowed_is_refused(serve):
    port = free_port()
    serve("edgeasgi:app", "--proxy-protocol", "--proxy-allow-from", "127.0.0.9",
          bind=[f"127.0.0.1:{port}"], port=port, wait=False)
    # `--proxy-protocol` alone means auto, for every listener without a scheme of its own.
    wait_until(lambda: can_answer_proxied(port), 20, message="the server")
    with socket.create_connection(("127.0.0.1", port), source_address=(CLIENT, 0), timeout=5) as s:
        s.sendall(f"PROXY TCP4 203.0.113.7 127.0.0.1 1 {port}\r\nGET /whoami HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(100) == b""


def can_answer_proxied(port):
    try:
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0), timeout=2) as s:
            s.sendall(f"PROXY TCP4 203.0.113.7 127.0.0.1 1 {port}\r\nGET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_proxy_protocol_from_nginx_stream(serve):
    port, plain = free_port(), free_port()
    serve("edgeasgi:app", "--proxy-protocol", "v1", bind=[f"127.0.0.1:{port}", f"http://127.0.0.1:{plain}"], port=plain)
    directory = shared_dir()
    stream_port = free_port()
    nginx = Nginx(directory, stream=f"server {{ listen 127.0.0.1:{stream_port}; proxy_pass 127.0.0.1:{port}; proxy_protocol on; }}")
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", stream_port), source_address=(CLIENT, 0), timeout=10) as s:
                s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), data
            assert json.loads(body)["client"] == CLIENT
        assert nginx.errors() == []
    finally:
        nginx.stop()
        shutil.rmtree(directory, ignore_errors=True)


def uwsgi_packet(variables, modifier1=0, body=b""):
    block = b""
    for name, value in variables:
        name, value = name.encode("latin-1"), value.encode("latin-1") if isinstance(value, str) else value
        block += struct.pack("<H", len(name)) + name + struct.pack("<H", len(value)) + value
    return struct.pack("<BHB", modifier1, len(block), 0) + block + body


GOOD = [("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/environ?x=1"), ("PATH_INFO", "/environ"), ("QUERY_STRING", "x=1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "198.51.100.4"), ("REMOTE_PORT", "4444"), ("HTTPS", "on"),
        ("SERVER_NAME", "shop.example"), ("SERVER_PORT", "443"), ("HTTP_HOST", "shop.example"), ("DOCUMENT_ROOT", "/srv"),
        ("HTTP_X_CUSTOM", "caf\xe9"), ("HTTP_X_TWICE", "a"), ("HTTP_X_TWICE", "b")]


def test_uwsgi_environ_and_bad_packets(serve):
    port, plain = free_port(), free_port()
    server = serve("plain:app", "--log-level", "debug", bind=[f"uwsgi://127.0.0.1:{port}", f"127.0.0.1:{plain}"], port=plain)

    def served():
        response = raw_request(port, uwsgi_packet(GOOD))
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), response
        assert b"transfer-encoding" not in head.lower() and b"connection:" not in head.lower()
        return json.loads(body)

    environ = served()
    assert environ["wsgi.url_scheme"] == "https" and environ["REMOTE_ADDR"] == "198.51.100.4", environ
    assert environ["SERVER_NAME"] == "shop.example" and environ["SERVER_PORT"] == "443" and environ["DOCUMENT_ROOT"] == "/srv"
    assert environ["PATH_INFO"] == "/environ" and environ["QUERY_STRING"] == "x=1"
    # A header byte that is not ASCII reaches WSGI as one latin-1 character.
    assert environ["HTTP_X_CUSTOM"] == "caf\xe9", environ
    # A header nginx passes twice is one environ value, joined (RFC 9110 5.3); the Host header is there too.
    assert environ["HTTP_X_TWICE"] == "a,b" and environ["HTTP_HOST"] == "shop.example", environ
    assert environ["REMOTE_PORT"] == "4444", environ
    # Half of a pair given: the packet's half as it is, the other from the client or the Host header;
    # none given: the connection's peer, and the Host header.
    for variables, expected in [
            ([("REMOTE_ADDR", "198.51.100.9"), ("SERVER_NAME", "other.example"), ("HTTP_HOST", "shop.example:8080")],
             {"REMOTE_ADDR": "198.51.100.9", "REMOTE_PORT": "0", "SERVER_NAME": "other.example", "SERVER_PORT": "8080"}),
            ([("REMOTE_PORT", "5555"), ("SERVER_PORT", "8443"), ("HTTP_HOST", "shop.example:8080")],
             {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555", "SERVER_NAME": "shop.example", "SERVER_PORT": "8443"}),
            ([("HTTP_HOST", "shop.example:8080")], {"REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "shop.example", "SERVER_PORT": "8080"})]:
        response = raw_request(port, uwsgi_packet([("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/environ"), *variables]))
        got = json.loads(response.partition(b"\r\n\r\n")[2])
        assert {key: got[key] for key in expected} == expected, (variables, got)

    # A body sized by CONTENT_LENGTH, and a response without a length: close-delimited, never chunked.
    response = raw_request(port, uwsgi_packet([("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/stream"), ("CONTENT_LENGTH", "3")], body=b"abc"))
    assert response.startswith(b"HTTP/1.1 200") and b"chunked" not in response.lower(), response[:300]

    bad = {
        "truncated": uwsgi_packet(GOOD)[:30],
        "vars block over the buffer": struct.pack("<BHB", 0, 65535, 0) + b"x" * 100,
        "modifier1": uwsgi_packet(GOOD, modifier1=5),
        "too many vars": uwsgi_packet([(f"K{i}", "") for i in range(1001)]),
        "a key past the block": b"\x00\x04\x00\x00\x09\x00AB",
        "bad CONTENT_LENGTH": uwsgi_packet([("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "12x")]),
    }
    for name, packet in bad.items():
        response = raw_request(port, packet, read_timeout=3)
        assert not response.startswith(b"HTTP/1.1 200"), (name, response)
        assert served()["REMOTE_ADDR"] == "198.51.100.4", name
    log = server.log()
    for reason in ["modifier1 5", "a vars block of 65535 bytes", "more than 1000 variables", "a key runs past the block",
                   "CONTENT_LENGTH '12x' is not a length", "closed in the middle of a packet's head"]:
        assert reason in log, reason

    # Somebody speaks HTTP to the uwsgi listener: a 400 that says what is wrong, and a warning.
    response = raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400") and b"uwsgi_pass" in response, response
    assert f"an HTTP request reached the uwsgi listener 127.0.0.1:{port}: point" in server.log()
    # A uwsgi packet on the HTTP listener: 400, and the log says what to change.
    response = raw_request(plain, uwsgi_packet(GOOD))
    assert response.startswith(b"HTTP/1.1 400"), response
    wait_until(lambda: "a uwsgi packet reached an HTTP listener" in server.log(), 5, message="the hint")
    assert served()["wsgi.url_scheme"] == "https"
    assert server.proc.poll() is None and len(server.workers()) == 1


def test_uwsgi_refuses_peers_not_allowed(serve):
    port, plain = free_port(), free_port()
    server = serve("plain:app", "--protocol", "uwsgi", "--uwsgi-allow-from", "127.0.0.1",
                   bind=[f"127.0.0.1:{port}", f"http://127.0.0.1:{plain}"], port=plain)
    with socket.create_connection(("127.0.0.1", port), source_address=(CLIENT, 0), timeout=5) as s:
        s.sendall(uwsgi_packet(GOOD))
        assert s.recv(100) == b""
    wait_until(lambda: "uwsgi_allow_ips does not name" in server.log(), 5, message="the refusal logged")
    assert raw_request(port, uwsgi_packet(GOOD)).startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_systemd_socket_named_uwsgi_speaks_uwsgi(tmp_path):
    import subprocess
    from conftest import APPS, BINARY, VENV
    http_port, uwsgi_port = free_port(), free_port()
    log_path = tmp_path / "log"
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    with open(log_path, "w") as log:
        # FileDescriptorName=uwsgi (here --fdname) makes a socket a uwsgi listener, whatever `protocol` says.
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{http_port}", "-l", f"127.0.0.1:{uwsgi_port}", "--fdname=web:shop.uwsgi",
             str(BINARY), "--virtualenv", VENV, "plain:app"], cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "Listening on" in log_path.read_text(), message="systemd-socket-activate to listen")
            response = raw_request(uwsgi_port, uwsgi_packet(GOOD), read_timeout=20)
            assert response.startswith(b"HTTP/1.1 200") and b"198.51.100.4" in response, response
            assert raw_request(http_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"Hello, World!")
            assert "[systemd (shop.uwsgi)] speaking uwsgi" in log_path.read_text()
        finally:
            proc.terminate()
            proc.wait(15)
