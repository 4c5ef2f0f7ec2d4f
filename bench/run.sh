#!/usr/bin/env bash
# The benchmark harness: a bench venv from Debian's python3 with the peers, then bench.py.
# Usage: bench/run.sh [--servers appserver,granian,...] [--benches wsgi-hello,...] [--runs 3] [--seconds 10]
#        bench/run.sh memory [--workers 4] [--runs 3]  (PSS of the whole server, Django, vs Gunicorn)
#        bench/run.sh instructions [--benches wsgi-hello,asgi-hello] [--peers granian] [--connections 64] [--cache] [--functions 30] [--sites 12]  (callgrind: instructions, requests a loop turn, cache misses by object file, instructions by owner and function, retain/release call sites by source line)
#        bench/run.sh interpreter [--apps flask_json:wsgi,...] [--cache]  (callgrind: an app's loop in Debian's python3 and in the server's interpreter)
#        bench/run.sh rss [--requests 2000000]  (the worker's RSS over two million header-heavy requests)
#        bench/run.sh pythons [--versions 3.10,3.11,3.12,3.13]  (each CPython's build, beside Granian on that Python)
#        bench/run.sh scaling [--servers ...] [--idle 10000]  (two workers on both cores; -c16/-c256/-c1024 and idle connections)
#        bench/run.sh cpu [--benches wsgi-hello-close,wsgi-hello-uwsgi] [--rounds 5] [--peers granian] [--ceiling]  (the worker's CPU time a request by thread, vs APPSERVER_BASELINE and peers; --ceiling: efficiency by CPU against the app-call ceiling)
#        bench/run.sh nginx [--chains appserver-http,appserver-uwsgi,...] [--runs 3] [--seconds 10]  (chains behind nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
if [ ! -x "$VENV/bin/uvicorn" ] || [ ! -x "$VENV/bin/django-admin" ]; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check gunicorn granian flask fastapi 'uvicorn[standard]' uvloop 'django>=4.2,<6'
    # uWSGI compiles from source (needs python3-dev); the bench runs without it if that fails.
    "$VENV/bin/pip" install -q --disable-pip-version-check uwsgi || echo "uwsgi did not build; benchmarking without it"
fi
"$VENV/bin/pip" freeze | grep -iE '^(gunicorn|granian|uwsgi|flask|fastapi|starlette|uvicorn|uvloop|httptools)=' > bench/out.versions 2>/dev/null || true
# A mode's script is bench/MODE.py (nginx's is behind_nginx.py); without a mode, the wrk table.
case "${1:-}" in
    memory|instructions|interpreter|rss|pythons|scaling|cpu) mode=$1; shift; exec "$VENV/bin/python" "bench/$mode.py" "$@" ;;
    nginx) shift; exec "$VENV/bin/python" bench/behind_nginx.py "$@" ;;
esac
exec "$VENV/bin/python" bench/bench.py "$@"
