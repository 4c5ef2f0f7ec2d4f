"""What the interpreter's build costs an app: the same ceiling loop (bench/interpreter_loop.py: the app
called in a loop, no server, no sockets) under callgrind in Debian's /usr/bin/python3, the interpreter
Gunicorn, Uvicorn and Granian run in, and in the server's own interpreter (the worker imports the loop as
its app). Instructions a call, the difference of two loop lengths, so start-up and import cancel out.
The server's figure from `bench/run.sh instructions` minus this loop's in the server is what the server
itself adds to a request; this loop's two figures apart are what the interpreter's build adds.

With --wall, the same loops without valgrind, each pinned to CPU 1, alternated --runs times: calls a
second (medians), to see that the instructions are time.

With --cache, the loop in python3 under callgrind's cache simulation (bench/instructions.py --cache):
the misses a call by object file, to set beside the server's a request (`bench/run.sh instructions
--cache --connections 64`): what the same app's code misses more when a server's code and the other
requests of a loop turn run between its calls.

Usage: bench/run.sh interpreter [--apps wsgi_hello:wsgi,flask_json:wsgi,asgi_hello:asgi,...] [--wall [--runs 3]] [--cache]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import stop
from instructions import (APPSERVER, PORT, answered, cache_options, cache_table, children, costs_by_object, per_request,
                          stop_valgrind, summary, valgrind_copy, wait_port)

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
SHORT, LONG = 1000, 3000
DEFAULT_APPS = "wsgi_hello:wsgi,flask_json:wsgi,django_wsgi:wsgi,asgi_hello:asgi,starlette_routes:asgi,fastapi_json:asgi"


def environment(module, interface, calls):
    return dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=f"{HERE}:{APPS}",
                LOOP_MODULE=module, LOOP_INTERFACE=interface, LOOP_CALLS=str(calls))


def server_arguments(binary, interface):
    """One worker of `binary` serving the loop module as its app."""
    return [str(binary), "--virtualenv", sys.prefix, "--bind", f"127.0.0.1:{PORT}", "--workers", "1", "--interface", interface,
            "--timeout", "0", "--chdir", str(HERE), "--pythonpath", str(APPS), "interpreter_loop:app"]


def in_python(module, interface, calls, workdir, cache=()):
    """The loop imported by the bench venv's python (Debian's /usr/bin/python3 behind a venv): its
    instructions, or with `cache` (cache_options()) its costs by object."""
    dump = os.path.join(workdir, f"python.{calls}")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", *cache, sys.executable, "-c", "import interpreter_loop"],
                   env=environment(module, interface, calls), cwd=APPS, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    return costs_by_object(dump) if cache else summary(dump)


def in_server(binary, valgrind_options, module, interface, calls, workdir):
    """The loop imported by one worker of the server as its app; one request then shows it was loaded."""
    pattern = os.path.join(workdir, "server.%p")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={pattern}", *valgrind_options, *server_arguments(binary, interface)]
    server = subprocess.Popen(argv, env=environment(module, interface, calls), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(timeout=120, port=PORT)
        answered(timeout=1800)
        worker = children(server.pid)[0]
    finally:
        stop_valgrind(server)
    return summary(os.path.join(workdir, f"server.{worker}"))


LOOP_RATE = re.compile(r"interpreter_loop: ([\d.]+) calls/s")


def wall_python(module, interface, calls):
    out = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", "import interpreter_loop"], env=environment(module, interface, calls),
                         cwd=APPS, capture_output=True, text=True, timeout=600, check=True).stderr
    return float(LOOP_RATE.search(out).group(1))


def wall_server(module, interface, calls):
    argv = ["taskset", "-c", "1", *server_arguments(APPSERVER, interface)]
    server = subprocess.Popen(argv, env=environment(module, interface, calls), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        for line in server.stderr:
            if match := LOOP_RATE.search(line):
                return float(match.group(1))
            if time.time() > deadline:
                break
        raise RuntimeError("the worker did not report its loop")
    finally:
        stop(server)


def wall(apps, runs, seconds=3):
    print("| app | Debian's python3 calls/s | appserver's interpreter calls/s | python3 / appserver |")
    print("|---|---|---|---|")
    for entry in apps:
        module, interface = entry.split(":")
        calls = max(1000, int(wall_python(module, interface, 1000) * seconds))
        python, server = [], []
        for _ in range(runs):
            python.append(wall_python(module, interface, calls))
            server.append(wall_server(module, interface, calls))
        p, a = statistics.median(python), statistics.median(server)
        print(f"| {module} ({interface}) | {p:,.0f} | {a:,.0f} | {p / a:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", default=DEFAULT_APPS, help="module:interface,...")
    parser.add_argument("--wall", action="store_true", help="calls a second without valgrind instead of instructions")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", action="store_true", help="the python3 loop's cache misses a call, by object")
    args = parser.parse_args()
    if args.wall:
        return wall(args.apps.split(","), args.runs)
    if args.cache:
        for entry in args.apps.split(","):
            module, interface = entry.split(":")
            with tempfile.TemporaryDirectory() as workdir:
                short, long = (in_python(module, interface, calls, workdir, cache_options()) for calls in (SHORT, LONG))
            cache_table(f"{module} ({interface}) in a loop in python3", per_request(long, short, LONG - SHORT), unit="call")
        return
    print("| app | Debian's python3 | appserver's interpreter | appserver / python3 |")
    print("|---|---|---|---|")
    for entry in args.apps.split(","):
        module, interface = entry.split(":")
        with tempfile.TemporaryDirectory() as workdir:
            copy, options = valgrind_copy(APPSERVER, workdir)
            python = (in_python(module, interface, LONG, workdir) - in_python(module, interface, SHORT, workdir)) / (LONG - SHORT)
            server = (in_server(copy, options, module, interface, LONG, workdir)
                      - in_server(copy, options, module, interface, SHORT, workdir)) / (LONG - SHORT)
        print(f"| {module} ({interface}) | {python:,.0f} | {server:,.0f} | {server / python:.3f} |", flush=True)


if __name__ == "__main__":
    main()
