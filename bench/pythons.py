"""appserver on each CPython it serves, 3.10 to 3.13: the hello and framework benches (bench.py: wrk, one
worker pinned, beside Granian on the same Python) and instructions per request (instructions.py), each
run with a bench virtualenv of that Python and the appserver built for it (`make python-hosts`; 3.11 is
the Debian build).

Usage: bench/run.sh pythons [--versions 3.10,3.11,3.12,3.13] [--runs 3] [--seconds 5] [--no-wrk] [--no-instructions]
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = "wsgi-hello,flask-json,asgi-hello,fastapi-json"
PACKAGES = ["granian", "flask", "fastapi", "uvloop"]


def interpreter(version):
    if version == "3.11":
        return Path("/usr/bin/python3.11")   # Debian's: the one the default build embeds
    candidates = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")) + [Path(f"/usr/bin/python{version}")]
    return next((c for c in candidates if c.exists()), None)


def binary(version):
    if version == "3.11":
        return ROOT / ".build" / "release" / "appserver"
    return ROOT / ".build-pythons" / "hosts" / f"appserver-python{version}"


def bench_venv(version, python):
    venv = ROOT / f".venv-bench-python{version}"
    if not (venv / "bin" / "granian").exists():
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *PACKAGES], check=True)
    return venv


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", default="3.10,3.11,3.12,3.13")
    parser.add_argument("--benches", default=BENCHES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--no-instructions", action="store_true")
    args = parser.parse_args()
    for version in args.versions.split(","):
        python, build = interpreter(version), binary(version)
        if python is None or not build.exists():
            print(f"## CPython {version}: skipped ({'no interpreter' if python is None else f'{build} is not built'})\n", flush=True)
            continue
        venv = bench_venv(version, python)
        freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
        versions = " ".join(l for l in freeze.split() if l.split("==")[0].lower() in PACKAGES)
        print(f"## CPython {version} ({subprocess.run([str(python), '-V'], capture_output=True, text=True).stdout.strip()}; {versions})\n", flush=True)
        env = dict(os.environ, APPSERVER_BIN=str(build))
        env.pop("APPSERVER_BASELINE", None)
        if not args.no_wrk:
            subprocess.run([str(venv / "bin" / "python"), str(HERE / "bench.py"), "--servers", "appserver,granian",
                            "--benches", args.benches, "--runs", str(args.runs), "--seconds", str(args.seconds)], env=env, check=True)
        if not args.no_instructions:
            subprocess.run([str(venv / "bin" / "python"), str(HERE / "instructions.py"), "--configs", "default",
                            "--benches", args.benches], env=env, check=True)
        print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
