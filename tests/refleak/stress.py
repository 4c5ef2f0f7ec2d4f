"""The refleak rounds under contention, to catch what the reference-count test sees only now and then
(`make refleak-stress`, not part of `make test`). Several debug-interpreter servers run at once, each
taking its round of every request kind again and again for a bounded time, the two cores contended; a
server that dies (a negative reference count, a failed assertion) fails the run with its log's end.
This is how the lent-chunk fault of ForeignBuffer was found: about one 60 s run in twenty failed.

    python tests/refleak/stress.py [--servers 6] [--seconds 60] [--threads 4] [--asgi]"""
import argparse
import concurrent.futures
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_refleak  # noqa: E402 (the servers and rounds of the reference-leak test)

MAX_ROUNDS = 100_000   # a bound besides the time
# Requests of each kind a round: an ASGI round also waits out two requests the server times out (2 s).
PER_ROUND = {False: 5, True: 30}


def run_one(index, seconds, threads, asgi, workdir):
    """One server looping its rounds until `seconds` pass: the rounds it served, and None when it held or
    else what went wrong."""
    directory = pathlib.Path(workdir) / f"server{index}"
    directory.mkdir()
    args = ("--interface", "asgi") if asgi else ("--threads", str(threads))
    server = test_refleak.Server(test_refleak.BINARY, directory, "refleak_asgi:app" if asgi else "refleak_wsgi:app", *args)
    exercise = test_refleak.asgi_round(server) if asgi else test_refleak.wsgi_round(server)
    rounds = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and rounds < MAX_ROUNDS:
            exercise(PER_ROUND[asgi])
            rounds += 1
        return rounds, None
    except Exception as error:   # the client's view of a server that failed; its log says why
        return rounds, f"{type(error).__name__}: {error}\n{server.output()[-4000:]}"
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--asgi", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="appserver-refleak-stress-") as workdir:
        with concurrent.futures.ProcessPoolExecutor(args.servers) as pool:   # clients in processes: no shared GIL
            futures = [pool.submit(run_one, i, args.seconds, args.threads, args.asgi, workdir) for i in range(args.servers)]
            results = [future.result() for future in futures]
    failed = [(i, problem) for i, (_, problem) in enumerate(results) if problem]
    print(f"{args.servers} servers, {sum(rounds for rounds, _ in results)} rounds, {len(failed)} failed")
    for i, problem in failed:
        print(f"--- server {i}:\n{problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
