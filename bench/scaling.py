"""Scaling runs (../shared/BENCHMARKS.md, issue 16), beside the peers in the same run:

- cores: two workers on both cores, wrk unpinned (-t2 -c128), so server and load share the machine;
- connections: one worker pinned to CPU 1, wrk pinned to CPU 0, at -c16, -c256 and -c1024, then -c64
  with 10,000 idle keep-alive connections (each has had one answer) held open the whole run; the
  worker's RSS before and after they open gives its memory per idle connection.

Usage: bench/run.sh scaling [--servers appserver,granian] [--benches wsgi-hello,asgi-hello] [--runs 3]
                            [--seconds 10] [--idle 10000] [--no-cores] [--no-connections] [--steps 16,256,1024,idle]
"""
import argparse
import resource
import socket
import time
from pathlib import Path

import bench
from bench import PORT, run_wrk, start, stop

# Idle connections must outlive the run: appserver's keep-alive timeout is Gunicorn's 2 s by default.
IDLE_ARGUMENTS = {"appserver": ["--keep-alive", "600"], "uvicorn": ["--timeout-keep-alive", "600"],
                  "gunicorn-gthread": ["--keep-alive", "600"]}


def command(server, bench_name, workers, extra=()):
    """bench.py's command line for the server, with `workers` workers and `extra` arguments."""
    argv = bench.command(server, bench_name)
    if argv is None:
        return None
    for flag in ("--workers", "-w", "--processes"):
        if flag in argv:
            argv[argv.index(flag) + 1] = str(workers)
    if server == "nginx":
        config = Path(argv[argv.index("-c") + 1])
        config.write_text(config.read_text().replace("worker_processes 1;", f"worker_processes {workers};"))
        return argv
    return argv + list(extra)


def rss_of_tree(pid):
    """RSS (KiB) of a process and its descendants."""
    total, pending = 0, [pid]
    while pending:
        p = pending.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def open_idle(count, budget=60.0):
    """Up to `count` keep-alive connections, each answered once, left open; stops at the first that gets
    no answer within 5 s (a server that caps its connections), which stays open too, or after `budget`
    seconds (a server that answers new connections ever more slowly as they pile up)."""
    held = []
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    deadline = time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        held.append(s)
        try:
            s.sendall(request)
            if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                break
        except OSError:
            break
    return held


def still_open(held):
    """How many of the held connections the server has not closed."""
    alive = 0
    for s in held:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def median(runs):
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def report(title, rows):
    print(f"\n{title}\n\n| app | server | step | req/s (median) | p99 ms | socket errors / non-2xx | note |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="appserver,granian,uvicorn,gunicorn-gthread,nginx")
    parser.add_argument("--benches", default="wsgi-hello,asgi-hello")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--no-cores", action="store_true")
    parser.add_argument("--no-connections", action="store_true")
    parser.add_argument("--steps", default="16,256,1024,idle", help="which connection steps: 16,256,1024,idle")
    args = parser.parse_args()
    # 10,000 sockets here and as many in the server, which inherits this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = args.servers.split(",")
    benches = args.benches.split(",")

    if not args.no_cores:
        rows = []
        for bench_name in benches:
            results = {s: [] for s in servers}
            for _ in range(args.runs):
                for server in servers:
                    proc = start(server, bench_name, command(server, bench_name, 2), cpus=None)
                    if proc is None:
                        continue
                    try:
                        run_wrk(f"http://127.0.0.1:{PORT}/", 2, threads=2, connections=128, cpus=None)
                        results[server].append(run_wrk(f"http://127.0.0.1:{PORT}/", args.seconds, threads=2, connections=128, cpus=None))
                    finally:
                        stop(proc)
            for server, runs in results.items():
                if runs:
                    m = median(runs)
                    rows.append((bench_name, server, "2 workers, wrk -t2 -c128 unpinned", f"{m['rps']:.0f}", f"{m['p99']:.2f}",
                                 f"{sum(r['errors'] for r in runs)} / {sum(r['non2xx'] for r in runs)}", [round(r["rps"]) for r in runs]))
                    print(rows[-1], flush=True)
        report("Two workers on both cores", rows)

    if not args.no_connections:
        rows = []
        steps = [("-c16", 16, 0), ("-c256", 256, 0), ("-c1024", 1024, 0), (f"-c64 + {args.idle} idle", 64, args.idle)]
        steps = [step for step, name in zip(steps, ["16", "256", "1024", "idle"]) if name in args.steps.split(",")]
        for bench_name in benches:
            for label, connections, idle in steps:
                results, notes = {s: [] for s in servers}, {s: [] for s in servers}
                for _ in range(args.runs):
                    for server in servers:
                        proc = start(server, bench_name, command(server, bench_name, 1, IDLE_ARGUMENTS.get(server, []) if idle else []))
                        if proc is None:
                            continue
                        held = []
                        try:
                            run_wrk(f"http://127.0.0.1:{PORT}/", 2, connections=connections)
                            if idle:
                                time.sleep(0.5)
                                before = rss_of_tree(proc.pid)
                                held = open_idle(idle)
                                time.sleep(0.5)
                                per = (rss_of_tree(proc.pid) - before) * 1024 / len(held)
                            results[server].append(run_wrk(f"http://127.0.0.1:{PORT}/", args.seconds, connections=connections))
                            if idle:
                                notes[server].append(f"{len(held)} opened, {still_open(held)} still open after the run, {per:.0f} B each")
                        finally:
                            for s in held:
                                s.close()
                            stop(proc)
                for server, runs in results.items():
                    if runs:
                        m = median(runs)
                        rows.append((bench_name, server, label, f"{m['rps']:.0f}", f"{m['p99']:.2f}",
                                     f"{sum(r['errors'] for r in runs)} / {sum(r['non2xx'] for r in runs)}",
                                     "; ".join(notes[server]) or [round(r["rps"]) for r in runs]))
                        print(rows[-1], flush=True)
        report("Connections: one worker pinned, wrk pinned", rows)


if __name__ == "__main__":
    main()
