"""Instructions per request of one worker, under valgrind's callgrind: repeatable to a fraction of a
percent whatever else the machine does, so a change of a few instructions per request shows where
wrk's req/s cannot tell it from noise.

The server runs under callgrind (which follows the worker through fork) twice, with a short and a
long bounded wrk run; the figure is the difference of the worker's instructions over the difference
of the responses wrk counted, so the worker's start and stop cancel out.

Usage: bench/run.sh instructions [--configs default,metrics,...] [--benches wsgi-hello,asgi-hello,flask-json,fastapi-json,
       starlette-routes,wsgi-stream,asgi-stream,wsgi-hello-headers,asgi-hello-headers,wsgi-hello-close,
       echo-4k,asgi-echo-4k,wsgi-hello-uwsgi] [--seconds 8] [--peers granian] [--connections 4] [--cache] [--functions N]
       [--sites N]
  APPSERVER_BASELINE=/path/to/appserver runs each config with that build too, first: `baseline` for default,
  `baseline-NAME` for the others (the same arguments, another build).
  --peers counts a peer's worker the same way (its command from bench.py): user-space instructions only,
  so a comparison that the machine's noise cannot move, though not one of time (the kernel's work, and
  what threads waiting on each other cost, are not in it).

The last column, requests a wait (the worker's calls of epoll_wait and epoll_pwait, differenced the same
way), says how many requests one turn of the event loops carried: a loop turn costs a few hundred
instructions of its own, so two builds' counts compare only between runs that batched alike (a run
whose worker served half as many requests counted a few hundred more a WSGI hello request: RESULTS.md,
twenty-fourth pass).

--functions N splits a request's instructions by whose code they are (owner_of: the server's Swift modules,
SwiftNIO, the standard library's generics specialized in the server, the Swift runtime's retain and release,
CPython), with the calls of retain and release each owner's code made, and lists the N functions outside
CPython with the most instructions of their own and the N that call retain and release most: where the
server's part of a request is, and how much of it the server's own modules could cut at all.

--cache turns on callgrind's cache simulation, sized as this machine's caches (sysfs) with its L2 as the
last level: the L1 instruction, L1 data and L2 misses a request, and a table of them by object file (the
server's library, the Swift runtime, python3.X, libc, the app's extension modules). A request's misses are
what it costs beyond its instructions when something large runs beside it: the same server code misses
more beside Flask than beside a hello app. The simulation is user space only (the kernel's work and what
it evicts are not in it) and has no prefetcher, so it counts misses, not their time. Use it with
--connections 64, the batches of the wrk tables (a turn of the loop then carries dozens of requests).
`bench/run.sh interpreter --cache` counts the app's loop alone the same way.

--sites N goes one step further than --functions: for the N functions of the server's objects (its modules,
SwiftNIO, the generics specialized in it) that call retain and release most, each call site with its calls a
request and where it is in the source, the inlined frames innermost first (llvm-symbolizer on the unstripped
build: the copy valgrind runs has no debug info). A site is one `call swift_retain` instruction; several sites
on one line are the same value retained more than once, or several values. It names the line that asked for a
retain or release the code did not need (a local kept to the end of its scope, an owned argument, a method
called through an `unowned(unsafe)` reference), which is where the thirty-first pass's cuts were found.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import uwsgi_load
from bench import PORT as BENCH_PORT, SERVERS, wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The build to measure: Debian's python3 build, or APPSERVER_BIN (one for another CPython, bench/pythons.py).
APPSERVER = Path(os.environ.get("APPSERVER_BIN", ROOT / ".build" / "release" / "appserver"))
PORT = 8775
# name: (module, interface, wrk arguments)
BENCHES = {"wsgi-hello": ("wsgi_hello", "wsgi", []), "asgi-hello": ("asgi_hello", "asgi", []),
           "flask-json": ("flask_json", "wsgi", []), "fastapi-json": ("fastapi_json", "asgi", []),
           # A sync `def` endpoint (a hop to anyio's worker thread and back a request).
           "fastapi-sync": ("fastapi_sync", "asgi", []),
           "starlette-routes": ("starlette_routes", "asgi", []),
           # Starlette's FileResponse of 16 KiB: a stat on anyio's worker thread, then Path Send.
           "starlette-file-16k": ("starlette_file_16k", "asgi", []),
           # ~45 us of counting a call, almost no memory touched (bench/apps/asgi_spin.py).
           "wsgi-spin": ("wsgi_spin", "wsgi", []), "asgi-spin": ("asgi_spin", "asgi", []),
           # 16 chunks of 64 KiB a response: the body's copies (or not) and the write path per chunk.
           "wsgi-stream": ("wsgi_stream", "wsgi", []),
           "asgi-stream": ("asgi_stream", "asgi", []),
           # 24 header lines as a browser behind a proxy sends them (bench/headers.lua): the parser's share.
           "wsgi-hello-headers": ("wsgi_hello", "wsgi", ["-s", str(HERE / "headers.lua")]),
           "asgi-hello-headers": ("asgi_hello", "asgi", ["-s", str(HERE / "headers.lua")]),
           # A connection a request (nginx's uwsgi_pass, a proxy_pass without upstream keepalive):
           # accepting, setting up and closing a connection on top of the request.
           "wsgi-hello-close": ("wsgi_hello", "wsgi", ["-H", "Connection: close"]),
           # A 4 KiB POST echoed back: the body's way in (wsgi.input, the receive message) and out.
           "echo-4k": ("wsgi_echo", "wsgi", ["-s", str(HERE / "post4k.lua")]),
           "asgi-echo-4k": ("asgi_echo", "asgi", ["-s", str(HERE / "post4k.lua")]),
           # nginx's uwsgi_pass: a uwsgi packet on a connection of its own (bench/uwsgi_load.py, not wrk).
           "wsgi-hello-uwsgi": ("wsgi_hello", "wsgi", [])}
# Benches whose load goes to a second listener of another protocol (the first stays HTTP, for
# `answered`): its arguments, and the load that counts the answers instead of wrk.
UWSGI_PORT = PORT + 2
LISTENERS = {"wsgi-hello-uwsgi": (["--bind", f"uwsgi://127.0.0.1:{UWSGI_PORT}"],
                                  lambda seconds, load: uwsgi_load.run(UWSGI_PORT, seconds))}
CONFIGS = {
    "default": "",
    "metrics": f"--metrics-bind 127.0.0.1:{PORT + 1}",
    "no-request-id": "--request-id-header ''",
    # App threads: the hand-offs between the I/O thread and an app thread (callgrind runs one thread
    # at a time, so this counts their instructions, not their waits).
    "threads-4": "--threads 4",
    # No Path Send: the ASGI scope without `extensions` (what offering it costs a request).
    "no-sendfile": "--no-sendfile",
    # An access log (to /dev/null: the line's formatting and write, and the app's access logger asked).
    "access-log": "--access-logfile /dev/null",
}


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def worker_of(pid):
    """The process serving the requests of a server that answered: its first child, or the server
    itself when it serves from its own process (a peer with one worker may, Uvicorn does)."""
    return (children(pid) or [pid])[0]


def wrk(seconds, extra=(), connections=4):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *extra, f"http://127.0.0.1:{PORT}/"], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def answered(timeout):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=timeout) as response:
                return response.status
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


# What the launcher (`appserver`) runs the server with, in python3.X; a build with CPython linked in
# (appserver-embedded, or an older build as APPSERVER_BASELINE) has none beside it.
HOSTED_LIBRARIES = ("libappserver-hosted.so", "libappserver-preload.so")


def valgrind_copy(binary, workdir):
    """A copy of the server that valgrind 3.19 can read (not the DWARF 5 that Swift's clang writes: debug
    info stripped), and the valgrind options it needs: the launcher's libraries are copied beside it, and
    valgrind follows its exec into python3.X (an embedded build's exec of itself, for the malloc cache's
    size, the same way)."""
    binary, target = Path(binary), Path(workdir) / "appserver"
    if not (binary.parent / HOSTED_LIBRARIES[0]).exists():
        subprocess.run(["objcopy", "--strip-debug", str(binary), str(target)], check=True)
        return target, ["--trace-children=yes"]
    shutil.copy(binary, target)
    for library in HOSTED_LIBRARIES:
        subprocess.run(["objcopy", "--strip-debug", str(binary.parent / library), str(Path(workdir) / library)], check=True)
    return target, ["--trace-children=yes"]


def appserver_command(binary, extra, module, interface, listener_arguments=()):
    return [str(binary), "--virtualenv", sys.prefix, "--bind", f"127.0.0.1:{PORT}", *listener_arguments, "--workers", "1",
            "--interface", interface, "--chdir", str(HERE / "apps"), *shlex.split(extra), f"{module}:app"]


def peer_command(peer, module, interface):
    """bench.py's command line for the peer, on this script's port."""
    argv = SERVERS[peer][0](interface, module)
    argv = [str(PORT) if arg == str(BENCH_PORT) else arg.replace(f":{BENCH_PORT}", f":{PORT}") for arg in argv]
    # A console script runs in its venv's python, which is what valgrind has to start.
    return [sys.executable, *argv] if Path(argv[0]).read_bytes()[:2] == b"#!" else argv


def run_once(command, valgrind_options, load, seconds, workdir, cwd=None, loader=wrk, by_function=False, sites=False):
    """The worker's (the server's first child's) instructions over its whole life, the requests it served,
    its loop turns, its costs by object with the cache simulation on, by function with `by_function`, and
    with `sites` the call sites of retain and release in the server's objects (call_sites)."""
    out_pattern = os.path.join(workdir, "callgrind.%p")
    # With `sites` a cost line's one position is its instruction's address, written in full (not relative to
    # the line before), instead of its source line: costs_by_object reads either alike.
    dump_options = ["--dump-instr=yes", "--dump-line=no", "--compress-pos=no"] if sites else ["--dump-instr=no"]
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_pattern}", *dump_options, *valgrind_options, *command]
    server = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONHASHSEED="0"))
    try:
        wait_port(timeout=120, port=PORT)   # valgrind starts slowly
        answered(timeout=300)   # the worker has imported the app (a framework takes long under valgrind)
        worker = worker_of(server.pid)
        served = loader(seconds, load)
    finally:
        stop_valgrind(server)
    dump = Path(workdir) / f"callgrind.{worker}"
    wanted = by_function or "--cache-sim=yes" in valgrind_options
    return (summary(dump), served, waits(dump), costs_by_object(dump, by_function) if wanted else {},
            call_sites(dump) if sites else {})


def summary(dump):
    """The instructions a callgrind dump counted."""
    return int(re.search(r"^summary:\s+(\d+)", Path(dump).read_text(errors="replace"), re.M).group(1))


def cache_options():
    """Callgrind's cache simulation sized as this machine's caches: its L1 instruction and data caches, and
    its L2 as the simulated last level (a miss there goes to the shared L3, or memory)."""
    levels = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        read = lambda name: (index / name).read_text().strip()
        size = int(read("size").rstrip("K")) * 1024
        levels[(int(read("level")), read("type"))] = f"{size},{read('ways_of_associativity')},{read('coherency_line_size')}"
    return ["--cache-sim=yes", f"--I1={levels[(1, 'Instruction')]}", f"--D1={levels[(1, 'Data')]}", f"--LL={levels[(2, 'Unified')]}"]


# Callgrind's event names, and the columns made of them.
CACHE_COLUMNS = {"instructions": ("Ir",), "L1i misses": ("I1mr",), "L1d misses": ("D1mr", "D1mw"),
                 "L2 misses": ("ILmr", "DLmr", "DLmw")}


# The Swift runtime's reference counting entry points, whose calls --functions counts by caller.
RETAIN_RELEASE = re.compile(r"^swift_(unknownObject|bridgeObject|nonatomic_)?(retain|release)(_n)?$")
RETAINS, RETAIN_COST = "retain/release calls", "retain/release Ir"


def named(line, names, clean=lambda name: name):
    """The object or function a `key=(id) name` line names, remembered in `names` under its id, or a
    `key=(id)` line repeats: callgrind spells a name out the first time only. `clean` shapes a new name."""
    ident, _, name = line.partition("=")[2].partition(")")
    if name.strip():
        names[ident] = clean(name.strip())
    return names[ident]


def object_name(path):
    return Path(path).name


def function_name(name):
    """A function's name without callgrind's recursion depth (`'2`)."""
    return name.split("'")[0]


def cost_lines(dump):
    """A callgrind dump's cost lines with whose they are: yields (object, function, call, fields), where
    `fields` are the line's position and counts, and `call` is (callee, count) when the line is the
    inclusive cost of that many calls (the line after a `calls=N` line), None when it is the function's
    own. The `events:` line's names come first, as (None, None, None, names). In callgrind's format
    `ob=` and `fn=` say whose the cost lines after them are, and `cob=`/`cfn=` what the next `calls=`
    line calls."""
    objects, functions = {}, {}
    owner = function = callee = calls = None
    with open(dump, errors="replace") as lines:
        for line in lines:
            if line.startswith("events:"):
                yield None, None, None, line.split()[1:]
            elif line.startswith(("ob=", "cob=")):
                name = named(line, objects, object_name)
                if line.startswith("ob="):
                    owner = name
            elif line.startswith(("fn=", "cfn=")):
                name = named(line, functions, function_name)
                if line.startswith("fn="):
                    function = name
                else:
                    callee = name
            elif line.startswith("calls="):
                calls = int(line[6:].split()[0])
            elif line[:1].isdigit() or line[:1] in "+-*":
                yield owner, function, (callee, calls) if calls is not None else None, line.split()
                calls = None


def costs_by_object(dump, by_function=False):
    """A dump's self cost by object file: {file name: {event: count}}, or with `by_function` by object and
    function: {(file name, function): {event: count}}, where each function also has the calls it made to
    retain and release (RETAINS) and their inclusive instructions (RETAIN_COST: a release that frees an
    object includes its freeing). A cost line is a position (a source line, or an address) and the counts
    of the `events:` line."""
    events, totals, width, instructions = [], {}, 0, 0
    for owner, function, call, fields in cost_lines(dump):
        if owner is None:
            events = fields + ([RETAINS, RETAIN_COST] if by_function else [])
            width, instructions = len(events), events.index("Ir")
            continue
        row = totals.setdefault((owner, function) if by_function else owner, [0] * width)
        counts = fields[1:]
        if call is None:
            for position, count in enumerate(counts):
                row[position] += int(count)
        elif by_function and RETAIN_RELEASE.match(call[0] or "") and len(counts) > instructions:
            row[-2] += call[1]
            row[-1] += int(counts[instructions])
    return {name: dict(zip(events, counts)) for name, counts in totals.items()}


def cache_columns(by_object):
    """The CACHE_COLUMNS of an object's (or a sum's) events."""
    return {column: sum(by_object.get(event, 0) for event in events) for column, events in CACHE_COLUMNS.items()}


def difference(long, short, served):
    """Each key's events, a long run's minus a short one's, over the requests between them."""
    return {key: {event: (value - short.get(key, {}).get(event, 0)) / served for event, value in events.items()}
            for key, events in long.items()}


def per_request(long, short, served):
    """By object, the CACHE_COLUMNS of a long run minus a short one, over the requests between them."""
    return {name: cache_columns(events) for name, events in difference(long, short, served).items()}


def by_object(functions):
    """Events by (object, function) summed by object."""
    objects = {}
    for (obj, _), columns in functions.items():
        total = objects.setdefault(obj, dict.fromkeys(columns, 0.0))
        for column, value in columns.items():
            total[column] += value
    return objects


def cache_table(label, objects, unit="request"):
    """Prints the by-object cache figures, the objects with the most instructions first."""
    print(f"\n{label}, a {unit}:\n")
    print("| object | " + " | ".join(CACHE_COLUMNS) + " |")
    print("|---|" + "---|" * len(CACHE_COLUMNS))
    rows = sorted(objects.items(), key=lambda item: -item[1]["instructions"])
    for name, columns in rows:
        if columns["instructions"] >= 50:
            print(f"| {name} | " + " | ".join(f"{value:,.1f}" for value in columns.values()) + " |")
    print("| all | " + " | ".join(f"{sum(c[column] for _, c in rows):,.1f}" for column in CACHE_COLUMNS) + " |", flush=True)


# The server's own objects in valgrind_copy's work directory: the launcher's copy and its libraries.
SERVER_OBJECTS = ("appserver", *HOSTED_LIBRARIES)


def owner_of(obj, function):
    """Whose code a function is: in the server's objects, the Swift module its mangled name starts with
    (`$s13AppServerHTTP...`; SwiftNIO's modules as one), the standard library's generics specialized there
    (`$sS...`, `$ss...`), or the C shims; in the Swift runtime, retain and release apart from the rest;
    CPython as one (the app's Python and the C API the server calls to build a scope or an environ)."""
    if obj in SERVER_OBJECTS:
        module = re.match(r"\$s(\d+)", function)
        if module:
            name = function[module.end():module.end() + int(module.group(1))]
            return "SwiftNIO" if name.startswith(("NIO", "_NIO", "CNIO")) else name
        if function.startswith("$s"):
            return "Swift standard library (specialized in the server)"
        if function.startswith(("c_nio_", "CNIO")):
            return "SwiftNIO"
        return "C in the server (CPythonShim, preload)" if function.startswith("appserver_") else "other code in the server"
    if obj == "libswiftCore.so":
        retain = any(word in function for word in ("retain", "release", "Retain", "Release", "Increment", "Decrement"))
        return "Swift runtime: retain and release" if retain else "Swift runtime: the rest"
    if obj.startswith(("python3", "libpython3")):
        return "CPython"
    return obj


def demangled(names):
    """Swift names as `swift demangle --simplified` prints them (the names as they are without it)."""
    tool = shutil.which("swift-demangle") or shutil.which("swift")
    if not tool or not names:
        return {name: name for name in names}
    argv = [tool] if tool.endswith("swift-demangle") else [tool, "demangle"]
    out = subprocess.run([*argv, "--simplified", "--compact"], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return dict(zip(names, lines)) if out.returncode == 0 and len(lines) == len(names) else {name: name for name in names}


def owner_tables(label, functions, count):
    """Prints a request's instructions by owner (owner_of), with the calls of retain and release by the owner
    of the function that made them; then the `count` functions outside CPython with the most instructions of
    their own, and the `count` that made the most calls of retain and release."""
    owners = {}
    for (obj, function), events in functions.items():
        row = owners.setdefault(owner_of(obj, function), [0.0, 0.0, 0.0])
        for position, event in enumerate(("Ir", RETAINS, RETAIN_COST)):
            row[position] += events.get(event, 0)
    total = sum(row[0] for row in owners.values())
    print(f"\n{label}, a request by owner: its instructions, and the calls of retain and release its code made\n"
          "(their instructions include what a release frees):\n")
    print("| owner | instructions | share | retain/release calls | their instructions |")
    print("|---|---|---|---|---|")
    for key, (own, retains, cost) in sorted(owners.items(), key=lambda item: -item[1][0]):
        if own >= 50 or retains >= 1:
            print(f"| {key} | {own:,.0f} | {own / total:.1%} | {retains:,.1f} | {cost:,.0f} |")
    print(f"| all | {total:,.0f} | | {sum(row[1] for row in owners.values()):,.1f} | |")
    outside = [(events.get("Ir", 0), events.get(RETAINS, 0), obj, function) for (obj, function), events in functions.items()
               if owner_of(obj, function) != "CPython"]
    by_own = sorted(outside, reverse=True)[:count]
    by_retains = sorted(outside, key=lambda row: -row[1])[:count]
    names = demangled(sorted({function for *_, function in by_own + by_retains}))
    for rows, what in ((by_own, "the most instructions of their own"), (by_retains, "the most calls of retain and release")):
        print(f"\n{label}, the {count} functions outside CPython with {what}:\n")
        print("| function | owner | instructions a request | retain/release calls |")
        print("|---|---|---|---|")
        for own, retains, obj, function in rows:
            name = names[function].replace("|", "\\|")
            print(f"| `{name[:110]}` | {owner_of(obj, function)} | {own:,.1f} | {retains:,.1f} |")
    print(flush=True)


def call_sites(dump):
    """The calls of retain and release that the server's objects made, by site: {(object, function, address,
    callee): calls}. Read from a dump written with --dump-instr=yes --dump-line=no --compress-pos=no, where
    the cost line after a `calls=` line starts with the address of the call instruction."""
    sites = {}
    for owner, function, call, fields in cost_lines(dump):
        if call and owner in SERVER_OBJECTS and RETAIN_RELEASE.match(call[0] or "") and fields[0].startswith("0x"):
            key = (owner, function, int(fields[0], 16), call[0])
            sites[key] = sites.get(key, 0) + call[1]
    return sites


def symbolizer():
    """The toolchain's llvm-symbolizer (it reads what its compiler wrote), else Debian's."""
    swift = shutil.which("swift")
    beside = Path(os.path.realpath(swift)).parent / "llvm-symbolizer" if swift else None
    return str(beside) if beside and beside.exists() else shutil.which("llvm-symbolizer")


def source_frames(binary, addresses, back=160):
    """Each address's frames as llvm-symbolizer gives them, innermost (inlined) first: {address: (exact,
    [(function, file:line)])}. `binary` is the unstripped build (its debug info). Most retains and releases
    are the compiler's own and have no line (`<compiler-generated>:0`): such a site gets the frames of the
    nearest address up to `back` bytes before it that has one, the code it follows, and `exact` False."""
    tool = symbolizer()
    if not tool or not addresses:
        return {}
    queries = [address - offset for address in addresses for offset in range(back + 1)]
    out = subprocess.run([tool, f"--obj={binary}", "--inlining", "--functions=linkage"],
                         input="\n".join(hex(query) for query in queries), capture_output=True, text=True).stdout
    blocks = out.strip("\n").split("\n\n")
    frames = {}
    for index, address in enumerate(addresses):
        for offset in range(back + 1):
            lines = blocks[index * (back + 1) + offset].splitlines()
            chain = [(lines[i], lines[i + 1].rsplit(":", 1)[0]) for i in range(0, len(lines) - 1, 2)]
            if chain and not chain[0][1].endswith(":0"):
                frames[address] = (offset == 0, chain)
                break
    return frames


def sites_tables(label, sites, binary, count):
    """Prints, for the `count` functions of the server's objects that made the most calls of retain and
    release, each site that made at least 0.5 a request: the callee, the calls a request, and the source
    lines from the innermost inlined function out to the function itself."""
    totals = {}
    for (obj, function, address, callee), calls in sites.items():
        totals[(obj, function)] = totals.get((obj, function), 0.0) + calls
    top = sorted(totals, key=lambda key: -totals[key])[:count]
    originals = {"appserver": Path(binary), **{library: Path(binary).parent / library for library in HOSTED_LIBRARIES}}
    frames = {}
    for obj in {obj for obj, _ in top}:
        addresses = sorted({address for (o, f, address, calls) in sites if o == obj and (o, f) in top})
        frames.update({(obj, address): found for address, found in source_frames(originals[obj], addresses).items()})
    names = demangled(sorted({name for _, chain in frames.values() for name, _ in chain} | {f for _, f in top}))
    short = lambda path: re.sub(r"^.*/(Sources|\.build/checkouts)/", "", path)
    print(f"\n{label}, the {count} functions of the server's objects that call retain and release most, by call site\n"
          "(source: the inlined frames, innermost first, then the function's own line; `after` when the site has\n"
          "no line of its own, the compiler's, and the line is of the code just before it):\n")
    print("| function | site | callee | calls a request | source |")
    print("|---|---|---|---|---|")
    for obj, function in top:
        rows = sorted(((address, callee, calls) for (o, f, address, callee), calls in sites.items()
                       if (o, f) == (obj, function) and calls >= 0.5), key=lambda row: row[0])
        name = names.get(function, function).replace("|", "\\|")
        print(f"| `{name[:100]}` | | | {totals[(obj, function)]:,.1f} | |")
        for address, callee, calls in rows:
            exact, chain = frames.get((obj, address), (True, []))
            inner = [f"{names.get(frame, frame)[:60]} ({short(place)})" for frame, place in chain[:-1]]
            own = short(chain[-1][1]) if chain else "?"
            source = ("" if exact else "after ") + " < ".join([*inner, own]).replace("|", "\\|")
            print(f"| | {hex(address)} | {callee} | {calls:,.2f} | {source} |")
    print(flush=True)


WAIT_FUNCTIONS = {"epoll_wait", "epoll_pwait"}


def waits(dump):
    """How often the dump's process called epoll_wait or epoll_pwait (its event loops' turns)."""
    return sum(call[1] for _, _, call, _ in cost_lines(dump) if call and call[0] in WAIT_FUNCTIONS)


def stop_valgrind(server):
    """SIGTERM to the server under valgrind (callgrind writes its files on the way out), SIGKILL if it hangs."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(binary, extra, module, interface, load, seconds, workdir, peer=None, listener=((), wrk), cache=(), by_function=False,
            sites=False):
    """Two runs, short and long: the difference of their instructions over the difference of their
    requests leaves out the start and the stop. `peer` measures that server instead of `binary`;
    `listener` is another listener's arguments and the load for it; `cache`, cache_options() or none.
    Returns the instructions a request, the requests measured, the requests a loop turn, and the cache
    figures a request by object, or by object and function with `by_function` (empty without either), and
    with `sites` the calls of retain and release a request by site (call_sites)."""
    if peer:
        # A peer imports the app from its working directory.
        command, options, cwd = peer_command(peer, module, interface), ["--trace-children=yes"], HERE / "apps"
    else:
        copy, options = valgrind_copy(binary, workdir)
        command, cwd = appserver_command(copy, extra, module, interface, listener[0]), None
    options = [*options, *cache]
    short = run_once(command, options, load, max(1, seconds // 4), workdir, cwd, listener[1], by_function, sites)
    long = run_once(command, options, load, seconds, workdir, cwd, listener[1], by_function, sites)
    served, turns = long[1] - short[1], long[2] - short[2]
    return ((long[0] - short[0]) / served, served, served / turns if turns > 0 else float("nan"),
            (difference if by_function else per_request)(long[3], short[3], served),
            {key: (calls - short[4].get(key, 0)) / served for key, calls in long[4].items()})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--benches", default="wsgi-hello,asgi-hello")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--peers", default="", help="peers of bench.py to count too, e.g. granian")
    parser.add_argument("--connections", type=int, default=4, help="wrk's connections (the uwsgi load has its own)")
    parser.add_argument("--cache", action="store_true", help="simulate this machine's caches: misses a request, by object")
    parser.add_argument("--functions", type=int, default=0, metavar="N",
                        help="a request's instructions by owner (the server's modules, SwiftNIO, the runtime, CPython) and the top N functions")
    parser.add_argument("--sites", type=int, default=0, metavar="N",
                        help="the call sites of retain and release, with their source lines, in the N server functions that call them most")
    args = parser.parse_args()
    cache = cache_options() if args.cache else []
    names = [name for name in args.configs.split(",") if name]
    configs = [(name, APPSERVER, CONFIGS[name], None) for name in names]
    if os.environ.get("APPSERVER_BASELINE"):
        baseline = Path(os.environ["APPSERVER_BASELINE"])
        configs[:0] = [("baseline" if name == "default" else f"baseline-{name}", baseline, CONFIGS[name], None) for name in names]
    configs += [(peer, None, "", peer) for peer in args.peers.split(",") if peer]
    extra_columns = list(CACHE_COLUMNS)[1:] if cache else []
    print("| bench | config | instructions per request | requests measured | requests a wait |"
          + "".join(f" {column} a request |" for column in extra_columns))
    print("|---|---|---|---|---|" + "---|" * len(extra_columns))
    breakdowns = []
    for bench in args.benches.split(","):
        module, interface, load = BENCHES[bench]
        for name, binary, extra, peer in configs:
            if peer and (interface not in SERVERS[peer][1] or bench in LISTENERS):
                continue
            loader = lambda seconds, load: wrk(seconds, load, args.connections)
            with tempfile.TemporaryDirectory() as workdir:
                instructions, served, batch, costs, sites = measure(binary, extra, module, interface, load, args.seconds, workdir,
                                                                    peer, LISTENERS.get(bench, ((), loader)), cache,
                                                                    args.functions > 0, args.sites > 0 and not peer)
            objects = {obj: cache_columns(events) for obj, events in by_object(costs).items()} if args.functions else costs
            misses = [sum(columns[column] for columns in objects.values()) for column in extra_columns]
            print(f"| {bench} | {name} | {instructions:,.0f} | {served} | {batch:.1f} |"
                  + "".join(f" {value:,.1f} |" for value in misses), flush=True)
            breakdowns.append((f"{bench}, {name}", objects, costs, sites, binary))
    for label, objects, costs, sites, binary in breakdowns:
        if cache:
            cache_table(label, objects)
        if args.functions:
            owner_tables(label, costs, args.functions)
        if args.sites and binary:
            sites_tables(label, sites, binary, args.sites)


if __name__ == "__main__":
    main()
