"""The worker's memory over two million requests of a header-heavy app (bench/apps/headers_*.py, 24
request headers from bench/headers.lua, 20 response headers): RSS sampled after a warm-up and then
every quarter of the way; a server that leaks shows as a line that keeps rising. One worker pinned to
CPU 1, wrk pinned to CPU 0, as in bench.py. Prints a markdown table."""
import argparse
import re
import subprocess
import sys
import time

from bench import APPS, APPSERVER, HERE, PORT, stop, wait_port


def worker_rss_kib(arbiter):
    children = open(f"/proc/{arbiter}/task/{arbiter}/children").read().split()
    assert len(children) == 1, children
    for line in open(f"/proc/{children[0]}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def load(requests, rate_guess):
    """wrk until about `requests` requests are done (wrk runs for a duration: it is sized from the rate)."""
    seconds = max(2, round(requests / rate_guess))
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{seconds}s", "-s", str(HERE / "headers.lua"),
                          f"http://127.0.0.1:{PORT}/"], capture_output=True, text=True, timeout=seconds + 60).stdout
    done = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert not errors and not non2xx, out
    return done, done / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--interfaces", default="wsgi,asgi")
    parser.add_argument("--binary", default=str(APPSERVER))
    args = parser.parse_args()
    print(f"| app | after warm-up (100k) | {' | '.join(f'+{q}/4' for q in range(1, 5))} | growth | requests |")
    print("|---|---|---|---|---|---|---|---|")
    for interface in args.interfaces.split(","):
        argv = [args.binary, "--virtualenv", sys.prefix, "--bind", f"127.0.0.1:{PORT}", "--workers", "1", "--threads", "1",
                "--interface", interface, "--chdir", str(APPS), f"headers_{interface}:app"]
        proc = subprocess.Popen(["taskset", "-c", "1", *argv], cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_port()
            time.sleep(1)
            total, rate = load(100_000, 20_000)
            samples = [worker_rss_kib(proc.pid)]
            for _ in range(4):
                done, rate = load(args.requests // 4, rate)
                total += done
                samples.append(worker_rss_kib(proc.pid))
        finally:
            stop(proc)
        mib = [f"{kib / 1024:.1f} MiB" for kib in samples]
        print(f"| {interface} headers | {' | '.join(mib)} | {(samples[-1] - samples[0]) / 1024:+.1f} MiB | {total:,} |", flush=True)


if __name__ == "__main__":
    main()
