"""The worker's CPU time a request, user and system apart (/proc/PID/stat over the measured run), for
this build and APPSERVER_BASELINE alternated, one worker pinned to CPU 1 and the load on CPU 0.

Where the load's own core is the bound (a connection a request: wrk's connect and the handshake's
softirq work), req/s cannot show a change in the server's cost, and on a noisy machine it moves more
than the change; the worker's CPU a request shows what the server spends, kernel work included (which
callgrind's instruction counts leave out). Prints each round and the medians, and the same split by
thread: the I/O thread (SwiftNIO's event loop, `NIO-ELT-*`: the socket reads and writes, whose kernel
work is most of a small request's) and the others (the app's: the Python thread or threads).
`--peers granian` measures a peer's worker the same way (its command from bench.py, all its threads
counted as "other"): the CPU a request is the per-core cost, time spent rather than req/s. The thread
columns count the threads alive at the end; a thread that ended during the run (Granian's come and go) is
in the process's total only. `--ceiling` runs bench.py's ceiling loop each round too, on the same core:
the app's CPU a call with no server, and each build's efficiency by CPU against it."""
import argparse
import os
import statistics

import bench
import instructions
import machine

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User and system seconds so far of a process (all its threads) or of a thread (/proc/PID/task/TID)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_by_thread_kind(pid):
    """User and system seconds so far of the process's I/O thread and of its other threads, apart."""
    kinds = {"io": [0.0, 0.0], "app": [0.0, 0.0]}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{task}/comm").read()
            user, system = cpu_seconds(f"{pid}/task/{task}")
        except (FileNotFoundError, ProcessLookupError):
            continue   # a thread that ended in between (anyio's and Granian's come and go)
        kind = kinds["io" if name.startswith("NIO-ELT") else "app"]
        kind[0] += user
        kind[1] += system
    return kinds


def measure(binary, bench_name, seconds, peer=None, steal_retries=2):
    """(user us, system us) a request and req/s for one run of `binary` (or of bench.py's `peer`), the
    same split by thread kind, and the run's steal (bench/machine.py: the worse of the two cores', percent)."""
    module, interface, wrk_extra = instructions.BENCHES[bench_name]
    # The command and listeners of `bench/run.sh instructions`, on its ports.
    listener, listener_load = instructions.LISTENERS.get(bench_name, ((), None))
    if peer:
        server, port = bench.start(peer, bench_name), bench.PORT
    else:
        argv = instructions.appserver_command(binary, "", module, interface, listener)
        server, port = bench.start("appserver", "wsgi-hello", argv=argv, port=instructions.PORT), instructions.PORT
    try:
        worker = instructions.worker_of(server.pid)   # the server is up and answered (bench.start)

        def load(duration):
            if listener_load:
                return listener_load(duration, None)
            result = bench.run_wrk(f"http://127.0.0.1:{port}/", duration, wrk_extra)
            return result["rps"] * duration

        # `taskset` pins the server; the load runs on CPU 0 (wrk is pinned by run_wrk, this process here).
        os.sched_setaffinity(0, {0})
        load(1)   # warm-up

        def run():
            before, threads_before = cpu_seconds(worker), cpu_by_thread_kind(worker)
            requests = load(seconds)
            return before, threads_before, requests, cpu_seconds(worker), cpu_by_thread_kind(worker)
        # A run stolen from by the hypervisor is made again (bench/machine.py), the least stolen one kept.
        (before, threads_before, requests, after, threads_after), steal, _ = machine.least_stolen(run, steal_retries)
    finally:
        bench.stop(server)
    per_request = lambda a, b: (a - b) / requests * 1e6
    by_thread = [per_request(threads_after[kind][i], threads_before[kind][i]) for kind in ("io", "app") for i in (0, 1)]
    return (per_request(after[0], before[0]), per_request(after[1], before[1]), requests / seconds, *by_thread, steal)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--benches", default="wsgi-hello-close")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--peers", default="", help="peers of bench.py to measure too, e.g. granian")
    parser.add_argument("--steal-retries", type=int, default=2,
                        help="a run that loses over 5%% of a measuring core to the hypervisor is made again up to this "
                             "many times, and the least stolen one kept")
    parser.add_argument("--ceiling", action="store_true",
                        help="each round, also the app's ceiling loop (bench.py's) on the same core: its CPU a call "
                             "over each build's CPU a request is the efficiency by CPU, round by round")
    args = parser.parse_args()
    builds = [("this build", bench.APPSERVER, None)]
    if bench.BASELINE:
        builds.insert(0, ("baseline", bench.BASELINE, None))
    builds += [(peer, None, peer) for peer in args.peers.split(",") if peer]
    print("| bench | build | user us / request | system us / request | req/s | rounds (user+system) "
          "| I/O thread user / system us | other threads user / system us | steal (worst round) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bench_name in args.benches.split(","):
        interface = instructions.BENCHES[bench_name][1]
        here = [build for build in builds if not build[2] or interface in bench.SERVERS[build[2]][1]]
        results = {name: [] for name, _, _ in here}
        ceilings = []   # us a call
        for _ in range(args.rounds):
            if args.ceiling and bench_name in bench.BENCHES:
                module, _, body, _ = bench.BENCHES[bench_name]
                calls = bench.ceiling_calls(module, body, interface)
                ceilings.append(1e6 / calls if calls else None)
            for name, binary, peer in here:
                results[name].append(measure(binary, bench_name, args.seconds, peer, args.steal_retries))
        for name, _, _ in here:
            runs = results[name]
            user, system, rps, io_user, io_system, app_user, app_system = (
                statistics.median(r[i] for r in runs) for i in range(7))
            rounds = ", ".join(f"{r[0] + r[1]:.1f}" for r in runs)
            print(f"| {bench_name} | {name} | {user:.1f} | {system:.1f} | {rps:.0f} | {rounds} "
                  f"| {io_user:.1f} / {io_system:.1f} | {app_user:.1f} / {app_system:.1f} "
                  f"| {machine.steal_text([r[7] for r in runs])} |", flush=True)
        if ceilings and all(ceilings):
            # The loop runs alone on its core, so its wall clock a call is its CPU a call.
            shares = {name: statistics.median(c / (r[0] + r[1]) for c, r in zip(ceilings, results[name]))
                      for name, _, _ in here}
            print(f"  {bench_name}: ceiling {statistics.median(ceilings):.1f} us a call (rounds "
                  + ", ".join(f"{c:.1f}" for c in ceilings) + "); efficiency by CPU (median of the rounds'): "
                  + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()), flush=True)


if __name__ == "__main__":
    main()
