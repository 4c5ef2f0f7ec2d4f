"""Throughput of whole chains behind a real nginx (Debian's): nginx and the app server share CPU 1,
wrk runs on CPU 0, one worker each; WSGI hello over each way nginx can talk to a Python server.
Chains, alternated run by run (median of --runs):
  appserver-http    nginx proxy_pass -> appserver on a unix socket (keep-alive upstream)
  appserver-http-close  the same without upstream keep-alive (nginx's default: a connection a request)
  appserver-uwsgi   nginx uwsgi_pass -> appserver speaking uwsgi on a unix socket
  uwsgi-uwsgi       nginx uwsgi_pass -> uWSGI --socket (the classic pairing), when installed
  gunicorn-http     nginx proxy_pass -> Gunicorn gthread 4 on a unix socket
Usage: bench/run.sh nginx [--runs 3] [--seconds 10]"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import run_wrk, stop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
APPSERVER = Path(os.environ.get("APPSERVER_BIN", ROOT / ".build" / "release" / "appserver"))
BIN = Path(sys.prefix) / "bin"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PORT = 8766

CHAINS = {
    "appserver-http": ("proxy", lambda sock: [str(APPSERVER), "--virtualenv", sys.prefix, "--bind", f"unix:{sock}", "--workers", "1",
                                              "--threads", "1", "--chdir", str(APPS), "wsgi_hello:app"]),
    "appserver-http-close": ("proxy-close", lambda sock: [str(APPSERVER), "--virtualenv", sys.prefix, "--bind", f"unix:{sock}", "--workers", "1",
                                                          "--threads", "1", "--chdir", str(APPS), "wsgi_hello:app"]),
    "appserver-uwsgi": ("uwsgi", lambda sock: [str(APPSERVER), "--virtualenv", sys.prefix, "--bind", f"uwsgi://unix:{sock}", "--workers", "1",
                                               "--threads", "1", "--chdir", str(APPS), "wsgi_hello:app"]),
    "uwsgi-uwsgi": ("uwsgi", lambda sock: [str(BIN / "uwsgi"), "--socket", str(sock), "--chmod-socket=666", "--master", "--processes", "1",
                                           "--threads", "4", "--module", "wsgi_hello:app", "--disable-logging", "--need-app"]),
    "gunicorn-http": ("proxy", lambda sock: [str(BIN / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "4", "-b", f"unix:{sock}",
                                             "wsgi_hello:app"]),
}


def nginx_config(directory, kind, sock):
    if kind == "proxy":
        location = "proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $http_host;"
        upstream = f"upstream app {{ server unix:{sock}; keepalive 64; }}"
    elif kind == "proxy-close":
        # nginx's default: a new upstream connection for every request, as uwsgi_pass always does.
        location = f"proxy_pass http://unix:{sock}:; proxy_set_header Host $http_host;"
        upstream = ""
    else:
        params = " ".join(f"uwsgi_param {k} ${v};" for k, v in [
            ("QUERY_STRING", "query_string"), ("REQUEST_METHOD", "request_method"), ("CONTENT_TYPE", "content_type"),
            ("CONTENT_LENGTH", "content_length"), ("REQUEST_URI", "request_uri"), ("PATH_INFO", "document_uri"),
            ("SERVER_PROTOCOL", "server_protocol"), ("REQUEST_SCHEME", "scheme"), ("REMOTE_ADDR", "remote_addr"),
            ("REMOTE_PORT", "remote_port"), ("SERVER_PORT", "server_port"), ("SERVER_NAME", "server_name"), ("HTTP_HOST", "http_host")])
        location = f"uwsgi_pass unix:{sock}; {params}"
        upstream = ""
    return f"""
        daemon off; worker_processes 1; pid {directory}/nginx.pid; error_log {directory}/error.log error;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy; uwsgi_temp_path {directory}/uwsgi;
            fastcgi_temp_path {directory}/fastcgi; scgi_temp_path {directory}/scgi;
            {upstream}
            server {{ listen 127.0.0.1:{PORT} backlog=4096; location / {{ {location} }} }}
        }}"""


def wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out")


def start(chain, directory):
    kind, command = CHAINS[chain]
    sock = directory / "app.sock"
    argv = command(sock)
    if not Path(argv[0]).exists():
        return None
    server = subprocess.Popen(["taskset", "-c", "1", *argv], cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(APPS)}, start_new_session=True)
    wait_for(sock.exists)
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, kind, sock))
    nginx = subprocess.Popen(["taskset", "-c", "1", NGINX, "-c", str(config), "-p", str(directory), "-e", str(directory / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def answers():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2) as r:
                return r.status == 200 and r.read() == b"Hello, World!"
        except OSError:
            return False
    wait_for(answers)
    return server, nginx


def wrk(seconds):
    return run_wrk(f"http://127.0.0.1:{PORT}/", seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", default=",".join(CHAINS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    chains = args.chains.split(",")
    results = {c: [] for c in chains}
    for run in range(args.runs):
        for chain in chains:
            directory = Path(tempfile.mkdtemp(prefix="appserver-bench-nginx-"))
            directory.chmod(0o755)
            started = start(chain, directory)
            if started is None:
                continue
            try:
                wrk(2)  # warm-up
                results[chain].append(wrk(args.seconds))
                print(f"run {run + 1} {chain:16} {results[chain][-1]['rps']:>9.0f} r/s", flush=True)
            finally:
                for proc in started:
                    stop(proc)
                shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"| chain (WSGI hello, nginx + server on one core) | req/s (median of {args.runs}) | p50 ms | p99 ms | socket errors / non-2xx |")
    print("|---|---|---|---|---|")
    for chain in chains:
        runs = results[chain]
        if not runs:
            continue
        m = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        print(f"| {chain} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {sum(r['errors'] for r in runs)} / {sum(r['non2xx'] for r in runs)} |")


if __name__ == "__main__":
    main()
