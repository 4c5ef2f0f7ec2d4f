"""A real nginx (Debian's) in front of appserver, for the edge tests: started with a config of the
test's on loopback and unix sockets, TLS with a self-signed certificate made here, stopped by its pid."""
import http.client
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from conftest import free_port, terminate, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# The client's own address: not loopback's 127.0.0.1, so that it differs from the proxy's.
CLIENT = "127.0.0.5"

# nginx's uwsgi_params, with the Host header as the client sent it (Debian's file says $host, which
# drops the port that Django's CSRF origin check compares).
UWSGI_PARAMS = """
    uwsgi_param QUERY_STRING $query_string;
    uwsgi_param REQUEST_METHOD $request_method;
    uwsgi_param CONTENT_TYPE $content_type;
    uwsgi_param CONTENT_LENGTH $content_length;
    uwsgi_param REQUEST_URI $request_uri;
    uwsgi_param PATH_INFO $document_uri;
    uwsgi_param DOCUMENT_ROOT $document_root;
    uwsgi_param SERVER_PROTOCOL $server_protocol;
    uwsgi_param REQUEST_SCHEME $scheme;
    uwsgi_param HTTPS $https if_not_empty;
    uwsgi_param REMOTE_ADDR $remote_addr;
    uwsgi_param REMOTE_PORT $remote_port;
    uwsgi_param SERVER_PORT $server_port;
    uwsgi_param SERVER_NAME $server_name;
    uwsgi_param HTTP_HOST $http_host;
"""

PROXY_HEADERS = """
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
"""


def shared_dir():
    """A directory nginx's workers (www-data) can reach: pytest's own tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="appserver-edge-"))
    path.chmod(0o755)
    return path


def self_signed_certificate(directory):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def location_proxy(upstream):
    """proxy_pass to an upstream with keep-alive connections; websockets upgraded under /ws."""
    return f"""
        location /ws {{
            proxy_pass http://{upstream};
            {PROXY_HEADERS}
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
        location / {{
            proxy_pass http://{upstream};
            {PROXY_HEADERS}
            proxy_set_header Connection "";
        }}"""


def location_uwsgi(target):
    return f"""
        location / {{
            uwsgi_pass {target};
            {UWSGI_PARAMS}
        }}"""


class Nginx:
    def __init__(self, directory, locations="", upstreams="", stream=""):
        self.dir = directory
        self.https_port = free_port()
        self.http_port = free_port()
        self.error_log = directory / "nginx-error.log"
        cert, key = self_signed_certificate(directory)
        for sub in ("body", "proxy", "uwsgi", "fastcgi", "scgi"):
            (directory / sub).mkdir(exist_ok=True)
        config = f"""
            {"load_module " + STREAM_MODULE + ";" if stream else ""}
            daemon off;
            worker_processes 1;
            pid {directory}/nginx.pid;
            error_log {self.error_log} warn;
            events {{ worker_connections 1024; }}
            {("stream { " + stream + " }") if stream else ""}
            http {{
                access_log off;
                client_body_temp_path {directory}/body;
                proxy_temp_path {directory}/proxy;
                uwsgi_temp_path {directory}/uwsgi;
                fastcgi_temp_path {directory}/fastcgi;
                scgi_temp_path {directory}/scgi;
                client_max_body_size 64m;
                {upstreams}
                server {{
                    listen 127.0.0.1:{self.https_port} ssl;
                    listen 127.0.0.1:{self.http_port};
                    server_name localhost;
                    ssl_certificate {cert};
                    ssl_certificate_key {key};
                    {locations}
                }}
            }}
        """
        self.config = directory / "nginx.conf"
        self.config.write_text(config)
        check = subprocess.run([NGINX, "-t", "-c", str(self.config), "-p", str(directory), "-e", str(self.error_log)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr + config
        self.proc = subprocess.Popen([NGINX, "-c", str(self.config), "-p", str(directory), "-e", str(self.error_log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.http_port) and listening(self.https_port), 10, message="nginx to listen")

    def errors(self):
        """nginx's [error] lines (a failed or retried upstream request shows here)."""
        text = self.error_log.read_text() if self.error_log.exists() else ""
        return [line for line in text.splitlines() if "[error]" in line or "[crit]" in line]

    def stop(self):
        terminate(self.proc)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def fetch(port, method, path, body=None, headers=None, tls=True, source=CLIENT, timeout=30):
    """One request from the client's address; (status, headers with lower-case names, body)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ssl._create_unverified_context(),
                                           source_address=(source, 0))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
