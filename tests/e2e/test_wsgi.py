"""PEP 3333 as the app sees it: environ, wsgi.input, start_response, write, close, errors."""
import hashlib
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import VENV, raw_request, wait_until


def test_environ_has_every_required_key(serve):
    server = serve("plain:app", "--workers", "2", "--threads", "3", workers=2)
    r = requests.get(server.url + "/environ?a=1&b=%20", headers={"X-Custom": "v1", "Content-Type": "text/x"})
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["CONTENT_TYPE"] == "text/x"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["HTTP_X_CUSTOM"] == "v1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is True and env["wsgi.run_once"] is False
    assert env["has_input"] and env["has_errors"]
    assert os.path.realpath(env["sys.prefix"]) == os.path.realpath(VENV), "the app must run in the --virtualenv"
    # Exactly these keys: nothing the server used to make the environ (its template is grown with a placeholder
    # key) is left in it. The headers are requests' own, the test's two and the request id made for the request.
    assert env["keys"] == sorted([
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI", "CONTENT_TYPE", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST", "HTTP_USER_AGENT", "HTTP_ACCEPT",
        "HTTP_ACCEPT_ENCODING", "HTTP_CONNECTION", "HTTP_X_CUSTOM", "HTTP_X_REQUEST_ID", "wsgi.version", "wsgi.url_scheme",
        "wsgi.input", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.file_wrapper",
        "wsgi.input_terminated"])
    # More headers than the environ's table has room for: the table grows, every one arrives.
    many = {f"X-Field-{i}": f"value {i}" for i in range(60)}
    env = requests.get(server.url + "/environ", headers=many).json()
    assert all(env[f"HTTP_X_FIELD_{i}"] == f"value {i}" for i in range(60))


def test_environs_of_requests_with_many_headers_get_room_for_them(serve):
    """A worker whose requests keep outgrowing the environ's table makes its environs with room for them
    (a bigger table from the start instead of one re-hashed as the headers go in); small requests and big
    ones are served the same before and after."""
    server = serve("plain:app")
    with requests.Session() as session:
        small = session.get(server.url + "/environ").json()
        many = {f"X-Field-{i}": f"value {i}" for i in range(30)}
        for _ in range(40):
            env = session.get(server.url + "/environ", headers=many).json()
            assert all(env[f"HTTP_X_FIELD_{i}"] == f"value {i}" for i in range(30))
        after = session.get(server.url + "/environ").json()
    assert after["keys"] == small["keys"]
    assert after["sizeof"] > small["sizeof"], "the template did not grow"
    # Room for the thirty headers now: their environ is no bigger than a small request's.
    assert env["sizeof"] == after["sizeof"]


def test_threads_run_requests_that_wait_side_by_side(serve):
    """With --threads 4, four requests that each wait for the other three inside the app all finish: a
    thread waiting on I/O does not keep the next request from another thread. Then, while three wait,
    the fourth thread answers other requests, and the fourth of the meeting lets them go."""
    import concurrent.futures
    server = serve("plain:app", "--threads", "4")

    def get(path):
        return requests.get(server.url + path, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert [r.text for r in pool.map(get, ["/meet?a&4"] * 4)] == ["met"] * 4
        waiting = [pool.submit(get, "/meet?b&4") for _ in range(3)]
        # Answered by the fourth thread while the three wait in the app.
        wait_until(lambda: get("/waiting?b").text == "3", message="three requests waiting in the app")
        assert get("/").text == "Hello, World!"
        assert not any(f.done() for f in waiting)
        assert get("/meet?b&4").text == "met"
        assert [f.result().text for f in waiting] == ["met"] * 3


def test_path_info_is_percent_decoded_latin1(serve):
    server = serve("plain:app")
    data = raw_request(server.port, b"GET /environ/caf%C3%A9%20x HTTP/1.1\r\nHost: h:81\r\nConnection: close\r\n\r\n")
    env = json.loads(data.partition(b"\r\n\r\n")[2])
    # The UTF-8 bytes of "cafe" with an acute accent, each read as one latin-1 character (PEP 3333).
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9 x"
    assert env["RAW_URI"] == "/environ/caf%C3%A9%20x"
    assert env["SERVER_NAME"] == "h" and env["SERVER_PORT"] == "81"


def test_server_name_and_port_follow_each_requests_host(serve):
    """SERVER_NAME/SERVER_PORT come from the Host header, request by request, on one worker (which keeps
    the last Host's pair): a repeat, a change, an IPv6 literal with and without a port, no port, and no
    Host at all (HTTP/1.0: the address connected to)."""
    server = serve("plain:app")
    cases = [(b"h:81", "h", "81"), (b"h:81", "h", "81"), (b"example.com", "example.com", "80"),
             (b"[::1]:8080", "[::1]", "8080"), (b"[::1]", "[::1]", "80"), (b"h:81", "h", "81"),
             (b"h:8", "h", "8"), (None, "127.0.0.1", str(server.port)), (b"h:81", "h", "81")]
    for host, name, port in cases:
        head = b"GET /environ HTTP/1.0\r\n" if host is None else b"GET /environ HTTP/1.1\r\nHost: " + host + b"\r\n"
        data = raw_request(server.port, head + b"Connection: close\r\n\r\n")
        env = json.loads(data.partition(b"\r\n\r\n")[2])
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port), host
        assert env.get("HTTP_HOST") == (host.decode() if host else None)


def test_remote_addr_and_port_are_each_connections_own(serve):
    """The worker keeps REMOTE_ADDR/REMOTE_PORT strings by address, in a table that a newer address
    overwrites and that is emptied past a bound: over 4,500 connections from 50 loopback addresses,
    each request sees its own socket's address and port."""
    server = serve("plain:app")
    for i in range(4500):
        with socket.create_connection(("127.0.0.1", server.port), source_address=(f"127.0.0.{1 + i % 50}", 0)) as s:
            s.sendall(b"GET /environ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            env = json.loads(data.partition(b"\r\n\r\n")[2])
            assert (env["REMOTE_ADDR"], int(env["REMOTE_PORT"])) == s.getsockname(), i


def test_headers_with_underscores_are_dropped(serve):
    server = serve("plain:app")
    env = requests.get(server.url + "/environ", headers={"X_Forged": "1", "X-Real": "2"}).json()
    assert "HTTP_X_FORGED" not in env
    assert env["HTTP_X_REAL"] == "2"


def test_input_read_readline_readlines_and_iteration(serve):
    server = serve("plain:app")
    body = b"first line\nabcdef\nthird\nfourth\n"
    assert requests.post(server.url + "/lines", data=body).json() == ["first line\n", "abc", "def\n", ["third\n", "fourth\n"]]
    assert requests.post(server.url + "/iterlines", data=b"a\nb\nc").json() == ["a\n", "b\n", "c"]
    payload = os.urandom(1_000_000)
    assert requests.post(server.url + "/echo", data=payload).json()["md5"] == hashlib.md5(payload).hexdigest()


def test_app_exception_gives_500_and_next_request_works(serve):
    server = serve("plain:app")
    pid = server.workers()
    r = requests.get(server.url + "/error")
    assert r.status_code == 500
    assert requests.get(server.url + "/").content == b"Hello, World!"
    assert server.workers() == pid
    log = server.log()
    assert "Error handling request /error" in log
    assert "Traceback (most recent call last)" in log and "ValueError: boom from the app" in log


def test_exception_after_headers_closes_connection_and_calls_close(serve, tmp_path):
    marker = tmp_path / "closed"
    server = serve("plain:app", env={"CLOSED_MARKER": str(marker)})
    data = raw_request(server.port, b"GET /error-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"0\r\n\r\n" not in data, "a failed chunked body must not look complete"
    assert "RuntimeError: failure in the middle of the body" in server.log()
    wait_until(lambda: marker.exists() and marker.read_text().count("closed") == 1, message="close() to be called")
    requests.get(server.url + "/closing")
    wait_until(lambda: marker.read_text().count("closed") == 2, message="close() after a normal body")


def test_start_response_exc_info_replaces_the_status(serve):
    server = serve("plain:app")
    r = requests.get(server.url + "/exc-info")
    assert r.status_code == 503 and r.content == b"replaced by the error page"
    assert requests.get(server.url + "/twice").content == b"second call refused"


def test_write_callable(serve):
    server = serve("plain:app")
    assert requests.get(server.url + "/write").content == b"written directly then returned"


def test_file_wrapper_sends_the_file(serve, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    server = serve("plain:app", env={"FILE_TO_SEND": str(path)})
    r = requests.get(server.url + "/file")
    assert r.headers["Content-Length"] == str(len(data))
    assert r.content == data
    r = requests.get(server.url + "/file?1000")
    assert r.content == data[1000:]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_written_bytes_go_before_a_file_sent_after_them(serve, tmp_path, threads):
    """write() bytes reach the I/O thread by the response outbox, the file by its own task: with app
    threads (and 8 requests at once, so that threads post side by side) the file still comes after."""
    data = os.urandom(256 * 1024 + 5)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    server = serve("plain:app", "--threads", threads, env={"FILE_TO_SEND": str(path)})

    def fetch(_):
        with requests.Session() as session:
            return [session.get(server.url + "/write-then-file").content for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        bodies = [body for batch in pool.map(fetch, range(8)) for body in batch]
    assert len(bodies) == 40
    assert all(body == b"written first:" + data for body in bodies)


def test_wsgi_errors_goes_to_the_error_log(serve):
    server = serve("plain:app")
    assert requests.get(server.url + "/log").status_code == 200
    wait_until(lambda: "a line for wsgi.errors" in server.log(), message="the wsgi.errors line")


def test_invalid_response_header_is_a_500(serve):
    server = serve("plain:app")
    assert requests.get(server.url + "/bad-header").status_code == 500
    assert "invalid response header" in server.log()


def test_validator_wrapped_app_raises_nothing(serve):
    server = serve("plain:validated")
    s = requests.Session()
    assert s.get(server.url + "/").content == b"Hello, World!"
    assert s.post(server.url + "/echo", data=b"abc").json()["length"] == 3
    assert s.post(server.url + "/lines", data=b"one\ntwo\nthree\n").status_code == 200
    assert s.post(server.url + "/iterlines", data=b"x\ny").json() == ["x\n", "y"]
    assert s.get(server.url + "/stream").status_code == 200
    assert s.get(server.url + "/closing").content == b"abc"
    assert s.get(server.url + "/environ").status_code == 200
    assert s.head(server.url + "/").status_code == 200
    log = server.log()
    assert "Error handling request" not in log, log
    assert "AssertionError" not in log and "WSGIWarning" not in log, log


def test_script_name_mounts_the_app_as_gunicorn_does(serve, tmp_path):
    """SCRIPT_NAME in the server's environment (-e, or systemd's Environment=) is where the app is
    mounted: a request's path must lie below it and PATH_INFO is the rest, so Flask's url_for includes
    it. A trusted forwarder's SCRIPT_NAME header (nginx's proxy_set_header) says it per request; an
    untrusted peer's is dropped as any header with '_' is."""
    server = serve("mountedflask:app", "-e", "SCRIPT_NAME=/app/")
    said = requests.get(server.url + "/app/hello", timeout=5).json()
    assert said == {"script_name": "/app", "path_info": "/hello", "url": "/app/hello",
                    "external": f"http://127.0.0.1:{server.port}/app/hello", "forwarded_script_name": None}
    assert requests.get(server.url + "/app%2Fhello", timeout=5).status_code == 500   # not below /app as sent
    response = requests.get(server.url + "/hello", timeout=5)
    assert response.status_code == 500
    wait_until(lambda: "Configuration problem: request path '/hello' is not below SCRIPT_NAME '/app'" in server.log(), message="the reason")
    # From loopback (trusted by default): the header wins over the environment's mount.
    said = requests.get(server.url + "/shop/hello", headers={"SCRIPT_NAME": "/shop"}, timeout=5).json()
    assert said["script_name"] == "/shop" and said["path_info"] == "/hello" and said["url"] == "/shop/hello"
    assert said["forwarded_script_name"] == "/shop"

    untrusting = serve("mountedflask:app", "--forwarded-allow-ips", "192.0.2.1")
    said = requests.get(untrusting.url + "/hello", headers={"SCRIPT_NAME": "/evil"}, timeout=5).json()
    assert said["script_name"] == "" and said["path_info"] == "/hello" and said["forwarded_script_name"] is None
