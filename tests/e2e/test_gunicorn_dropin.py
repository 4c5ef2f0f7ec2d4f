"""A Gunicorn deployment switches without rewriting: gunicorn.conf.py with server hooks, Gunicorn's
command lines and GUNICORN_CMD_ARGS, TOML 1.0 files, refused settings, --print-config, --preload,
app factories and the --reload dev server."""
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from conftest import APPS, BINARY, VENV, Server, free_port, wait_until
from test_systemd_notify import NotifySocket
from test_under_load import read_pid

DROPIN = APPS / "dropin"


def run(*args, cwd=APPS, env=None, timeout=60):
    full_env = dict(os.environ)
    full_env.pop("VIRTUAL_ENV", None)
    full_env.update(env or {})
    return subprocess.run([str(BINARY), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def hook_lines(path):
    if not path.exists():
        return []
    return [line.split(" ") for line in path.read_text().splitlines()]


def counts(path):
    return Counter(line[0] for line in hook_lines(path))


def cmdline(pid):
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_gunicorn_conf_py_with_hooks_across_ttin_kill_hup_and_stop(tmp_path):
    """Each hook runs in the right process, the right number of times."""
    hooks = tmp_path / "hooks.log"
    port = free_port()
    server = Server("factory:app", tmp_path=tmp_path, cwd=DROPIN, bind=[],
                    env={"HOOK_LOG": str(hooks), "BIND": f"127.0.0.1:{port}", "WORKERS": "2"})
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    arbiter = server.pid
    try:
        server.wait_ready(workers=2)
        # ./gunicorn.conf.py was read without -c, as Gunicorn does; its raw_env reached the app.
        assert f"Config file: {DROPIN / 'gunicorn.conf.py'}" in server.log()
        assert "'cpu_guess' is not a setting; ignored" in server.log()
        assert "worker_connections has no effect" in server.log()
        for path in ["/a", "/b", "/c"]:
            response = requests.get(server.url + path, timeout=5)
            assert response.status_code == 200 and "env=yes" in response.text
        # wait_ready's probe (GET /) was the first request.
        wait_until(lambda: counts(hooks)["post_request"] == 4, message="post_request x4")
        # proc_name: Gunicorn's process titles.
        assert cmdline(arbiter) == "appserver: master [dropin]"
        assert all(cmdline(pid) == "appserver: worker [dropin]" for pid in server.workers())

        server.signal(signal.SIGTTIN)
        wait_until(lambda: counts(hooks)["post_worker_init"] == 3, message="a third worker")
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: counts(hooks)["post_worker_init"] == 4, message="the killed worker replaced")
        server.signal(signal.SIGHUP)
        wait_until(lambda: counts(hooks)["post_worker_init"] == 6 and counts(hooks)["child_exit"] == 4 and len(server.workers()) == 2,
                   timeout=30, message="the reload")
        assert requests.get(server.url + "/d", timeout=5).status_code == 200
        wait_until(lambda: counts(hooks)["post_request"] == 5, message="post_request after the reload")
    finally:
        server.stop()
    assert server.proc.returncode == 0
    lines = hook_lines(hooks)
    seen = counts(hooks)
    assert seen == {"on_starting": 1, "when_ready": 1, "pre_fork": 6, "post_fork": 6, "post_worker_init": 6,
                    "pre_request": 5, "post_request": 5, "nworkers_changed": 2, "on_reload": 1,
                    "child_exit": 6, "worker_exit": 5, "on_exit": 1}, seen
    by_name = {}
    for line in lines:
        by_name.setdefault(line[0], []).append(line)
    # Arbiter hooks run in the arbiter, worker hooks in the worker they are about.
    for name in ["on_starting", "when_ready", "pre_fork", "on_reload", "child_exit", "nworkers_changed", "on_exit"]:
        assert all(int(line[1]) == arbiter for line in by_name[name]), name
    assert by_name["when_ready"][0][2:] == ["2", "dropin"], "server.cfg has the config file's settings"
    assert [line[2] for line in by_name["pre_fork"]] == ["1", "2", "3", "4", "5", "6"], "worker.age counts up"
    workers = {int(line[1]) for line in by_name["post_fork"]}
    assert len(workers) == 6 and arbiter not in workers
    assert all(int(line[1]) == int(line[2]) and int(line[3]) == arbiter for line in by_name["post_fork"]), "worker.pid, server.pid"
    assert {int(line[1]) for line in by_name["post_worker_init"]} == workers
    assert {int(line[1]) for line in by_name["pre_request"]} <= workers
    assert [line[2:] for line in by_name["pre_request"]] == [["GET", "/"], ["GET", "/a"], ["GET", "/b"], ["GET", "/c"], ["GET", "/d"]]
    assert all(line[3] == "200" for line in by_name["post_request"])
    assert by_name["nworkers_changed"][0][1:] == [str(arbiter), "3", "2"] and by_name["nworkers_changed"][1][1:] == [str(arbiter), "2", "3"]
    # worker_exit runs in the exiting worker (not in the SIGKILLed one); child_exit names every worker that ended.
    exited = {int(line[1]) for line in by_name["worker_exit"]}
    assert victim not in exited and exited < workers and all(int(line[1]) == int(line[2]) for line in by_name["worker_exit"])
    assert {int(line[2]) for line in by_name["child_exit"]} == workers
    assert lines[-1][0] == "on_exit"


@pytest.mark.parametrize("args, check", [
    (["-k", "uvicorn.workers.UvicornWorker", "fastapiapp:app"], lambda r: r.json() == {"message": "Hello, World!"}),
    (["-k", "uvicorn_worker.UvicornWorker", "--worker-class=uvicorn_worker.UvicornWorker", "starletteapp:app"], lambda r: r.status_code == 404 and r.text == "Not Found"),  # Starlette itself answered
    (["-k", "gthread", "--threads", "4", "plain:app"], lambda r: True),
    (["--worker-class=sync", "-w2", "plain:app"], lambda r: True),
])
def test_gunicorn_command_lines(serve, args, check):
    server = serve(*args[-1:], *args[:-1], workers=2 if "-w2" in args else 1)
    assert check(requests.get(server.url + "/", timeout=5))
    if "gthread" in args:
        assert requests.get(server.url + "/environ", timeout=5).json()["wsgi.multithread"] is True
    interface = "asgi" if any("Uvicorn" in a for a in args) else "wsgi"
    assert f"Using worker: {interface}" in server.log()


def test_gunicorn_cmd_args_and_precedence(tmp_path):
    config = tmp_path / "app.toml"
    config.write_text('workers = 3\ntimeout = 40\nkeepalive = 9\nmax_requests = 10\n')
    env = {"GUNICORN_CMD_ARGS": "--timeout 50 --max-requests 20 --name 'from env'", "APPSERVER_CMD_ARGS": "--max-requests 30"}
    result = run("-c", str(config), "--keep-alive", "7", "--print-config", "plain:app", env=env)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert printed["workers"] == "3", "the file over the defaults"
    assert printed["timeout"] == "50", "GUNICORN_CMD_ARGS over the file"
    assert printed["max_requests"] == "30", "APPSERVER_CMD_ARGS over GUNICORN_CMD_ARGS"
    assert printed["keepalive"] == "7", "the command line over all"
    assert printed["proc_name"] == '"from env"'
    # A server whose whole configuration is GUNICORN_CMD_ARGS, as in a Dockerfile.
    port = free_port()
    server = Server("plain:app", tmp_path=tmp_path, bind=[], env={"GUNICORN_CMD_ARGS": f"--bind=127.0.0.1:{port} -w2 --access-logfile -"})
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(workers=2)
        assert requests.get(server.url + "/", timeout=5).text == "Hello, World!"
        wait_until(lambda: '"GET / HTTP/1.1" 200' in server.log(), message="the access log")
    finally:
        server.stop()


def test_toml_file_with_every_toml_form(serve, tmp_path):
    config = tmp_path / "every.toml"
    config.write_text(r'''
# Comments, then every TOML 1.0 form a setting can take.
workers = 0x2                          # hexadecimal
umask = 0o22                           # octal
max_requests = 1_000                   # underscores
max_requests_jitter = 0b1010           # binary
timeout = 30.0                         # a float that is a whole number
graceful_timeout = +10
proxy_headers = true
access_log_format = """
%(h)s "%(r)s" %(s)s\
"""
pythonpath = 'lib,vendor'               # a literal string
raw_env = [
  "DROPIN_FROM_CONFIG=hello world",     # a multi-line array
  'PATHS=C:\no\escapes',
]
secure_scheme_headers = { "X-Scheme" = "https", 'X-Forwarded-Ssl' = "on" }
forwarded_allow_ips = ["127.0.0.1", "10.0.0.0/8"]
"root_path" = "/api"                   # a quoted key

[logconfig_dict]
version = 1
disable_existing_loggers = false
[logconfig_dict.root]
level = "WARNING"
''')
    result = run("-c", str(config), "--print-config", "plain:app")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert printed["workers"] == "2" and printed["umask"] == '"0o22"' and printed["max_requests"] == "1000"
    assert printed["max_requests_jitter"] == "10" and printed["timeout"] == "30" and printed["graceful_timeout"] == "10"
    assert printed["access_log_format"] == r'"%(h)s \"%(r)s\" %(s)s"'
    assert printed["raw_env"] == r'["DROPIN_FROM_CONFIG=hello world", "PATHS=C:\\no\\escapes"]'
    assert printed["secure_scheme_headers"] == '{ "X-FORWARDED-SSL" = "on", "X-SCHEME" = "https" }'
    assert printed["root_path"] == '"/api"' and printed["pythonpath"] == '"lib,vendor"'
    assert "WARNING" in printed["logconfig_dict"]
    server = serve("factory:app", "-c", str(config), workers=2, cwd=DROPIN)
    assert requests.get(server.url + "/", timeout=5).text.endswith("env=hello world")


def test_toml_errors_name_the_line_and_the_nearest_setting(tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text('workers = 2\nmax_request = 5\n')
    result = run("-c", str(typo), "plain:app")
    assert result.returncode == 2 and "unknown setting 'max_request' (did you mean 'max_requests'?)" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('workers = 2\nbind = "unterminated\n')
    result = run("-c", str(broken), "plain:app")
    assert result.returncode == 2 and "line 2" in result.stderr and str(broken) in result.stderr
    hook = tmp_path / "hook.toml"
    hook.write_text('post_fork = "mymodule.post_fork"\n')
    result = run("-c", str(hook), "plain:app")
    assert result.returncode == 2 and "define it in a Python config file" in result.stderr


@pytest.mark.parametrize("args, hint", [
    (["-k", "gevent"], "use gthread"),
    (["--worker-class", "eventlet"], "use gthread"),
    (["--certfile", "/etc/ssl/cert.pem"], "TLS ends at the proxy"),
    (["--keyfile=/etc/ssl/key.pem"], "TLS ends at the proxy"),
    (["--paste", "development.ini"], "give the WSGI callable"),
    (["--log-syslog"], "the journal"),
    (["--spew"], "debugger"),
    (["--dirty-workers", "2"], "task queue"),
    (["--http-protocols", "h2,h1"], "HTTP/2"),
    (["--strip-header-spaces"], "strict"),
    (["--logger-class", "myapp.Logger"], "logconfig_dict"),
])
def test_refused_settings_say_why_and_what_instead(args, hint):
    result = run(*args, "plain:app")
    assert result.returncode == 2, result
    assert "is not supported: " in result.stderr and hint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_refused_in_a_python_config_file_and_accepted_when_off(tmp_path):
    off = tmp_path / "off.py"
    off.write_text('certfile = None\nkeyfile = None\nsyslog = False\nspew = False\ndirty_workers = 0\nworkers = 2\n')
    assert run("-c", str(off), "--check-config", "plain:app").returncode == 0
    on = tmp_path / "on.py"
    on.write_text('workers = 2\nkeyfile = "/etc/ssl/key.pem"\n')
    result = run("-c", str(on), "plain:app")
    assert result.returncode == 2 and "'keyfile' is not supported" in result.stderr and str(on) in result.stderr


def test_print_config_round_trip(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        'import os\nbind = ["127.0.0.1:8123", "unix:/tmp/x y.sock"]\nworkers = 3\nworker_class = "uvicorn.workers.UvicornWorker"\n'
        'raw_env = ["A=1", "QUOTE=say \\"hi\\""]\nsecure_scheme_headers = {"X-FORWARDED-PROTO": "https"}\n'
        'forwarded_allow_ips = "*"\nlimit_request_line = 16384\nworker_connections = 500\nproc_name = "shop"\n'
        'logconfig_dict = {"version": 1, "root": {"level": "INFO"}}\numask = 0o007\npreload_app = True\n')
    first = run("-c", str(config), "--print-config", "plain:app")
    assert first.returncode == 0, first.stderr
    assert "limit_request_line = 8190" in first.stdout, "capped as Gunicorn caps it"
    printed = tmp_path / "printed.toml"
    printed.write_text(first.stdout)
    second = run("-c", str(printed), "--print-config")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert run("-c", str(printed), "--check-config").returncode == 0


def test_capped_limit_is_a_warning_and_the_cap_holds(serve):
    server = serve("plain:app", "--limit-request-line=16384")
    assert "limit_request_line 16384 is more than the most allowed, 8190: using 8190" in server.log()
    assert requests.get(server.url + "/?" + "a" * 8000, timeout=5).status_code == 200
    assert requests.get(server.url + "/?" + "a" * 9000, timeout=5).status_code == 414


def test_app_factory_and_wsgi_app(serve, tmp_path):
    server = serve("factory:create_app('hey', excl=True)", cwd=DROPIN)
    assert requests.get(server.url + "/", timeout=5).text.startswith("hey! ")
    config = tmp_path / "conf.py"
    config.write_text('wsgi_app = "factory:create_app(greeting=\'from wsgi_app\')"\n')
    server = serve(f"--config={config}", cwd=DROPIN)   # no APP argument: wsgi_app names it
    assert requests.get(server.url + "/", timeout=5).text.startswith("from wsgi_app ")
    result = run("factory:create_app(os.getcwd())", cwd=DROPIN)
    assert result.returncode != 0 and "literal values" in result.stdout + result.stderr


def test_hooks_that_raise(serve, tmp_path):
    config = tmp_path / "raising.py"
    config.write_text(
        "def pre_request(worker, req):\n    if req.path == '/boom':\n        raise RuntimeError('pre_request says no')\n"
        "def post_request(worker, req, environ, resp):\n    raise ValueError('post_request broke')\n")
    server = serve("plain:app", "-c", str(config))
    assert requests.get(server.url + "/boom", timeout=5).status_code == 500
    response = requests.get(server.url + "/", timeout=5)
    assert response.status_code == 200 and response.text == "Hello, World!"
    wait_until(lambda: "Exception in post_request hook" in server.log() and "ValueError: post_request broke" in server.log(),
               message="the post_request traceback")
    assert "pre_request says no" in server.log()
    # A hook that fails at start-up stops the server, as in Gunicorn, with the traceback.
    failing = tmp_path / "failing.py"
    failing.write_text("def when_ready(server):\n    raise RuntimeError('not ready at all')\n")
    result = run("-c", str(failing), "-b", f"127.0.0.1:{free_port()}", "--virtualenv", VENV, "plain:app")
    assert result.returncode == 1
    assert "Exception in when_ready hook" in result.stderr and "RuntimeError: not ready at all" in result.stderr


def test_request_hooks_of_an_asgi_app_are_warned_about(serve, tmp_path):
    # As under Gunicorn's UvicornWorker, an ASGI request runs neither hook; the worker says so, once.
    marker = tmp_path / "ran"
    config = tmp_path / "hooks.py"
    config.write_text(f"def pre_request(worker, req):\n    open({str(marker)!r}, 'a').write('pre')\n"
                      f"def post_request(worker, req, environ, resp):\n    open({str(marker)!r}, 'a').write('post')\n")
    server = serve("scopeecho:app", "-c", str(config))
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    warning = "the config file's pre_request and post_request hooks do not run for an ASGI app"
    assert server.log().count(warning) == 1 and not marker.exists()


def test_a_slow_arbiter_hook_does_not_stall_watchdog_pings(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    config = tmp_path / "slow.py"
    config.write_text("import time\ndef on_reload(server):\n    server.log.info('slow on_reload begins')\n    time.sleep(3)\n")
    server = Server("plain:app", "-c", str(config), tmp_path=tmp_path, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    try:
        server.wait_ready()
        wait_until(lambda: notify.count("WATCHDOG=1") >= 2, message="watchdog pings")
        server.signal(signal.SIGHUP)
        wait_until(lambda: "slow on_reload begins" in server.log(), message="the hook")
        before = notify.count("WATCHDOG=1")
        wait_until(lambda: notify.count("WATCHDOG=1") >= before + 3, timeout=10, message="pings while the hook sleeps")
        assert "reload done" not in server.log(), "the pings came while the hook was still running"
        wait_until(lambda: "reload done" in server.log(), timeout=20, message="the reload")
    finally:
        server.stop()
        notify.close()


def private_dirty_kib(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return 0


def test_preload_shares_the_app_and_hup_still_works(serve):
    env = {"DJANGO_SETTINGS_MODULE": "djangoproj.settings"}
    cwd = APPS / "djangoproj"
    plain = serve("djangoproj.wsgi:application", "-w", "2", cwd=cwd, env=env, workers=2)
    preloaded = serve("djangoproj.wsgi:application", "-w", "2", "--preload", cwd=cwd, env=env, workers=2)
    for server in (plain, preloaded):
        for _ in range(40):
            assert requests.get(server.url + "/?q=x", timeout=5).status_code == 200
    assert "Preloaded the app djangoproj.wsgi:application in the arbiter" in preloaded.log()
    own = {name: sorted(private_dirty_kib(pid) for pid in server.workers()) for name, server in (("plain", plain), ("preloaded", preloaded))}
    print(f"worker private dirty KiB: {own}")
    # Django lives in the arbiter's pages, shared: each preloaded worker has megabytes less of its own.
    assert max(own["preloaded"]) + 4096 < min(own["plain"]), own
    before = set(preloaded.workers())
    preloaded.signal(signal.SIGHUP)
    wait_until(lambda: "reload done" in preloaded.log(), timeout=30, message="the reload")
    # "reload done" says the new generation serves; an old worker that logged its exit may not be reaped yet.
    wait_until(lambda: len(preloaded.workers()) == 2 and not before & set(preloaded.workers()), timeout=30,
               message="the old workers gone after HUP")
    assert requests.get(preloaded.url + "/", timeout=5).json()["message"] == "Hello from Django"


def test_reload_serves_edited_code_and_survives_a_syntax_error(serve, tmp_path):
    module = tmp_path / "devapp.py"

    def write(body):
        module.write_text("def app(environ, start_response):\n"
                          "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                          f"    return [{body!r}.encode()]\n")
    write("version 1")
    helper = tmp_path / "templates"
    helper.mkdir()
    (helper / "page.html").write_text("one")
    server = serve("devapp:app", "--reload", "--reload-extra-file", "templates/*.html", cwd=tmp_path)
    assert requests.get(server.url + "/", timeout=5).text == "version 1"

    def serves(text):
        try:
            return requests.get(server.url + "/", timeout=5).text == text
        except requests.RequestException:
            return False

    started = time.monotonic()
    write("version 2")
    wait_until(lambda: serves("version 2"), timeout=15, message="the edited code")
    print(f"edit to new code served: {time.monotonic() - started:.2f} s")
    module.write_text("def app(environ, start_response)\n    broken\n")
    wait_until(lambda: "SyntaxError" in server.log() and "reload failed" in server.log(), timeout=15, message="the syntax error")
    assert serves("version 2"), "the old code keeps serving"
    write("version 3")
    wait_until(lambda: serves("version 3"), timeout=15, message="recovery")
    (helper / "page.html").write_text("two")
    wait_until(lambda: "page.html changed" in server.log(), timeout=15, message="the extra file")


def test_a_logconfig_dict_for_gunicorns_loggers_is_warned_about(serve, tmp_path):
    # Real gunicorn.conf.py files style gunicorn.error and gunicorn.access, often with a formatter class;
    # the server's own logs are not Python loggers, and it says so rather than ignoring the styling silently.
    config = tmp_path / "styled.py"
    config.write_text(
        "import logging\nclass Json(logging.Formatter):\n    pass\n"
        "logconfig_dict = {'version': 1, 'formatters': {'json': {'()': Json}},\n"
        "    'handlers': {'out': {'class': 'logging.StreamHandler', 'formatter': 'json'}},\n"
        "    'loggers': {'gunicorn.error': {'handlers': ['out']}, 'gunicorn.access': {'handlers': ['out']}}}\n")
    server = serve("plain:app", "-c", str(config))
    assert requests.get(server.url + "/", timeout=5).text == "Hello, World!"
    assert "[WARNING] logconfig_dict configures gunicorn.access, gunicorn.error: appserver's own error and access logs" in server.log()


def test_capture_output_and_logconfig_dict(tmp_path):
    error_log, app_log = tmp_path / "error.log", tmp_path / "app.log"
    config = tmp_path / "logging.conf.py"
    config.write_text(f'''
import logging
errorlog = {str(error_log)!r}
capture_output = True

class Tagged(logging.Filter):
    def filter(self, record):
        record.tag = "tagged"
        return True

# A filter given as a class object, as real configs do: no JSON could carry it.
logconfig_dict = {{
    "version": 1,
    "filters": {{"tag": {{"()": Tagged}}}},
    "formatters": {{"plain": {{"format": "%(name)s %(levelname)s %(tag)s %(message)s"}}}},
    "handlers": {{"file": {{"class": "logging.FileHandler", "filename": {str(app_log)!r}, "formatter": "plain", "filters": ["tag"]}}}},
    "loggers": {{"factory": {{"handlers": ["file"], "level": "INFO"}}}},
}}
''')
    server = Server("factory:app", "-c", str(config), cwd=DROPIN, tmp_path=tmp_path)
    try:
        # The error log is a file here, so the server's own output says nothing: wait for an answer.
        wait_until(lambda: _get(server.url + "/") is not None, timeout=20, message="the server to answer")
        assert requests.get(server.url + "/print", timeout=5).status_code == 200
        assert requests.get(server.url + "/log", timeout=5).status_code == 200
        wait_until(lambda: error_log.exists() and "printed by the app" in error_log.read_text(), message="the app's print in the error log")
        wait_until(lambda: app_log.exists() and "factory WARNING tagged logged by the app" in app_log.read_text(), message="the app's logging")
        assert "Booting worker" in error_log.read_text()
        # logrotate: the file moves, USR1 reopens it, and the app's prints follow into the new one.
        error_log.rename(tmp_path / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_until(lambda: error_log.exists(), message="the reopened error log")

        def printed_to_new_file():
            requests.get(server.url + "/print", timeout=5)
            return "printed by the app" in error_log.read_text()
        wait_until(printed_to_new_file, message="prints in the new error log")
    finally:
        server.stop()


def test_daemon_detaches_and_writes_its_pid(tmp_path):
    port, pidfile, error_log = free_port(), tmp_path / "app.pid", tmp_path / "error.log"
    result = run("-D", "--pid", str(pidfile), "--error-logfile", str(error_log), "-b", f"127.0.0.1:{port}",
                 "--virtualenv", VENV, "plain:app", timeout=30)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    pid = wait_until(lambda: read_pid(pidfile), message="the pid file")
    try:
        assert os.getsid(pid) != os.getsid(0), "a session of its own"
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/") == "Hello, World!", message="the daemon to serve")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), message="the daemon to stop")
    assert "Shutting down: Master" in error_log.read_text()


def _get(url):
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return None


def test_worker_int_worker_abort_and_pre_exec_hooks(tmp_path):
    hooks, pidfile = tmp_path / "hooks.log", tmp_path / "app.pid"
    config = tmp_path / "signals.conf.py"
    config.write_text(f'''
import os
timeout = 2
def _record(*words):
    with open({str(hooks)!r}, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")
def worker_int(worker):
    _record("worker_int", os.getpid(), worker.pid)
def worker_abort(worker):
    _record("worker_abort", os.getpid(), worker.pid)
def pre_exec(server):
    _record("pre_exec", os.getpid())
''')
    server = Server("factory:app", "-c", str(config), "--pid", str(pidfile), "-w", "2", cwd=DROPIN, tmp_path=tmp_path)
    new = None
    try:
        server.wait_ready(workers=2)
        first = server.workers()[0]
        os.kill(first, signal.SIGINT)
        wait_until(lambda: ["worker_int", str(first), str(first)] in hook_lines(hooks), message="worker_int in the worker")
        threading.Thread(target=lambda: _get(server.url + "/hang"), daemon=True).start()
        wait_until(lambda: counts(hooks)["worker_abort"] == 1, timeout=20, message="worker_abort after the timeout")
        aborted = hook_lines(hooks)[-1]
        assert aborted[1] == aborted[2] and int(aborted[1]) != server.pid
        # Its last words, told by the arbiter once it reaped the worker.
        wait_until(lambda: f"[{server.pid}] [CRITICAL] Worker (pid:{aborted[1]}): worker timed out: a request made no progress"
                   in server.log(), message="the aborted worker's last words")
        server.signal(signal.SIGUSR2)
        # None while there is no file: on USR2 the old arbiter renames it to .oldbin (as Gunicorn does)
        # before the new one writes its own.
        new = wait_until(lambda: (pid := read_pid(pidfile)) not in (None, server.pid) and pid, timeout=30, message="the new arbiter")
        assert ["pre_exec", str(server.pid)] in hook_lines(hooks), "pre_exec ran in the old arbiter"
        wait_until(lambda: _get(server.url + "/") is not None and server.proc.poll() is not None, timeout=30, message="the handover")
    finally:
        server.stop()
        if new:
            os.kill(new, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{new}").exists(), message="the new arbiter to stop")


def test_a_failing_post_fork_hook_stops_the_server_with_its_traceback(tmp_path):
    config = tmp_path / "failing.conf.py"
    config.write_text('def post_fork(server, worker):\n    raise RuntimeError("no database here")\n')
    server = Server("plain:app", "-c", str(config), "-w", "1", tmp_path=tmp_path)
    assert server.proc.wait(30) == 3
    log = server.log()
    told = f"[{server.pid}] [ERROR] Worker (pid:"
    assert told in log and "): Exception in worker process: the post_fork hook failed:\nTraceback" in log.split(told, 1)[1], log
    assert log.count("RuntimeError: no database here") == 1, "the traceback once, in the worker's last words\n" + log
    assert log.index("RuntimeError: no database here") < log.index("Worker failed to boot: the worker could not start the app"), log
    server.stop()


def test_statsd_metrics_with_gunicorns_names(tmp_path):
    import socket as socketlib
    receiver = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    lines = []

    def collect():
        while receiver.fileno() >= 0:
            try:
                lines.extend(receiver.recv(65536).decode().split("\n"))
            except (socketlib.timeout, OSError):
                if receiver.fileno() < 0:
                    return
    threading.Thread(target=collect, daemon=True).start()
    address = f"127.0.0.1:{receiver.getsockname()[1]}"
    server = Server("plain:app", "-w", "2", "--statsd-host", address, "--statsd-prefix", "shop", "--dogstatsd-tags", "env:test",
                    tmp_path=tmp_path)
    try:
        server.wait_ready(workers=2)
        for _ in range(5):
            assert requests.get(server.url + "/", timeout=5).status_code == 200
        assert requests.get(server.url + "/no-such-page", timeout=5).status_code == 404

        def total(name):
            return sum(int(line.split(":")[1].split("|")[0]) for line in list(lines) if line.startswith(name + ":"))
        wait_until(lambda: total("shop.gunicorn.requests") >= 7, message="gunicorn.requests")   # wait_ready's probe too
        wait_until(lambda: total("shop.gunicorn.request.status.404") == 1, message="the 404")
        assert total("shop.gunicorn.request.status.200") >= 6
        assert any(line.startswith("shop.gunicorn.request.duration:") and "|ms" in line for line in lines)
        assert "shop.gunicorn.workers:2|g|#env:test" in lines
        server.signal(signal.SIGTTIN)
        wait_until(lambda: "shop.gunicorn.workers:3|g|#env:test" in lines, message="the gauge after TTIN")
        assert all(line.endswith("|#env:test") for line in list(lines) if line)
    finally:
        server.stop()
        receiver.close()


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound"])
def test_bind_fd_serves_a_socket_the_supervisor_passed(tmp_path, listening):
    """Gunicorn's `--bind fd://N`: a socket bound by the process that starts the server (a supervisor,
    a test harness) is served as given, and listened on first if it is only bound. Before, the form
    the help text names was refused as an unknown scheme."""
    import socket as socketlib
    passed = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    passed.bind(("127.0.0.1", 0))
    if listening:
        passed.listen(16)
    port = passed.getsockname()[1]
    pidfile = tmp_path / "app.pid"
    server = Server("plain:app", "-w", "2", "--pid", str(pidfile), port=port, bind=[f"fd://{passed.fileno()}"],
                    tmp_path=tmp_path, pass_fds=(passed.fileno(),))
    passed.close()   # the server holds its own copy
    new = None
    try:
        server.wait_ready(workers=2)
        assert f"Listening at: http://127.0.0.1:{port} ({server.pid}) [passed as fd://" in server.log(), server.log()
        for _ in range(10):
            assert requests.get(server.url + "/", timeout=5).status_code == 200
        # A USR2 upgrade hands it on like any other listener.
        server.signal(signal.SIGUSR2)
        new = wait_until(lambda: (pid := read_pid(pidfile)) not in (None, server.pid) and pid, timeout=30, message="the new arbiter")
        assert server.proc.wait(30) == 0
        assert f"Listening at: http://127.0.0.1:{port} ({new}) [inherited from the previous arbiter" in server.log(), server.log()
        assert requests.get(server.url + "/", timeout=5).status_code == 200
    finally:
        server.stop()
        if new:
            os.kill(new, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{new}").exists(), message="the new arbiter to stop")


def test_bind_fd_serves_an_abstract_unix_socket_and_names_it(tmp_path):
    """A passed socket may have no file: an abstract unix name, logged as systemd writes it (@NAME)."""
    import http.client
    import socket as socketlib
    name = f"appserver-test-{os.getpid()}-{free_port()}"
    passed = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    passed.bind("\0" + name)
    passed.listen(16)
    server = Server("plain:app", bind=[f"fd://{passed.fileno()}"], tmp_path=tmp_path, pass_fds=(passed.fileno(),))
    passed.close()
    try:
        wait_until(lambda: "Booting worker" in server.log(), message="the worker")
        assert f"Listening at: unix:@{name} ({server.pid}) [passed as fd://" in server.log(), server.log()

        class AbstractConnection(http.client.HTTPConnection):
            def connect(self):
                self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
                self.sock.connect("\0" + name)

        def answered():
            connection = AbstractConnection("localhost", timeout=5)
            try:
                connection.request("GET", "/")
                return connection.getresponse().status == 200
            except OSError:
                return False
            finally:
                connection.close()
        wait_until(answered, message="an answer on the abstract socket")
    finally:
        server.stop()


@pytest.mark.parametrize("given, reason", [
    ("fd://nine", "fd:// takes a descriptor number, like fd://3"),
    ("fd://{closed}", "descriptor {closed} is not open; the process that starts appserver must pass it"),
    ("fd://{file}", "descriptor {file} is not a socket"),
    ("fd://{udp}", "descriptor {udp} is not a stream (TCP or unix) socket"),
    ("fd://{unbound}", "the socket on descriptor {unbound} is not bound to an address"),
])
def test_bind_fd_that_is_no_bound_stream_socket_is_refused_with_the_reason(tmp_path, given, reason):
    import socket as socketlib
    held = {"file": open(tmp_path / "plain-file", "w"), "udp": socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM),
            "unbound": socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)}
    held["udp"].bind(("127.0.0.1", 0))
    numbers = {name: thing.fileno() for name, thing in held.items()}
    numbers["closed"] = 900
    try:
        server = Server("plain:app", bind=[given.format(**numbers)], tmp_path=tmp_path, pass_fds=tuple(numbers[n] for n in held))
        assert server.proc.wait(30) != 0
        assert reason.format(**numbers) in server.log(), server.log()
        assert "Booting worker" not in server.log()
        server.stop()
    finally:
        for thing in held.values():
            thing.close()


def test_bind_fd_not_passed_is_refused_even_where_the_servers_own_socket_took_its_number(tmp_path):
    """Nothing passed: the low descriptors the server opens for itself (its signal pipe, control
    socket) must not be taken for the app's socket."""
    for fd in range(3, 10):
        server = Server("plain:app", bind=[f"fd://{fd}"], tmp_path=tmp_path)
        assert server.proc.wait(30) != 0
        assert (f"cannot listen on fd://{fd}: descriptor {fd} was not passed to appserver" in server.log()
                or f"cannot listen on fd://{fd}: descriptor {fd} is not open" in server.log()), server.log()
        server.stop()


def test_statsd_over_a_unix_socket_that_appears_late_and_comes_back(tmp_path):
    """`--statsd-host unix:PATH` where no statsd listens yet: the server says so and sends once the
    socket appears, and again after statsd starts anew on a new socket file. Before, the socket was
    connected once at start, so a statsd that started after the server never got a metric."""
    import socket as socketlib
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "statsd.sock"
    # Gunicorn's unix:// form, and a doubled slash that is still the same directory.
    server = Server("plain:app", "-w", "1", "--statsd-host", f"unix://{tmp_path}/run//statsd.sock", tmp_path=tmp_path)
    try:
        server.wait_ready(workers=1)
        assert f"statsd: {tmp_path}/run//statsd.sock is not there yet; sending once it appears" in server.log()
        for attempt in range(2):
            receiver = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
            receiver.bind(str(path))
            receiver.settimeout(10)
            try:
                assert requests.get(server.url + "/", timeout=5).status_code == 200
                lines = []
                wait_until(lambda: lines.extend(receiver.recv(65536).decode().split("\n")) or
                           any(line.startswith("gunicorn.requests:") for line in lines), message=f"metrics, statsd {attempt + 1}")
                assert "gunicorn.workers:1|g" in lines
            finally:
                receiver.close()
                path.unlink()
    finally:
        server.stop()


def test_a_statsd_socket_path_too_long_is_refused_with_a_clear_error(tmp_path):
    server = Server("plain:app", "-w", "1", "--statsd-host", "unix:/" + "s" * 107, tmp_path=tmp_path)
    try:
        server.wait_ready(workers=1)
        assert "statsd: unix:/" + "s" * 107 + ": a socket path is 1 to 107 bytes; no metrics are sent" in server.log()
    finally:
        server.stop()


PROBE = '''
import os, sys

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{sys.prefix} {os.getcwd()} {os.environ.get('FROM_CONF')}".encode()]
'''


@pytest.mark.parametrize("config", ["gunicorn.conf.py", "conf.toml"])
def test_relative_paths_mean_the_start_directory_also_on_a_reload(serve, tmp_path, config):
    """`--chdir app` with a relative config file (Gunicorn's default ./gunicorn.conf.py, or `-c conf.toml`)
    and a relative --virtualenv: the file and the virtualenv are the ones beside where the server
    started, before and after a HUP (which builds the settings again from inside the app's directory).
    Before, an app without a Python config file ran without its virtualenv (sys.prefix /usr), and every
    reload failed on the file it could no longer find."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "probe.py").write_text(PROBE)
    (tmp_path / "venv").symlink_to(VENV)
    conf = tmp_path / config
    conf.write_text('raw_env = ["FROM_CONF=1"]\n')
    given = [] if config == "gunicorn.conf.py" else ["-c", config]
    server = serve("probe:app", *given, "--chdir", "app", cwd=tmp_path, venv="venv")
    assert requests.get(server.url + "/", timeout=5).text == f"{tmp_path / 'venv'} {tmp_path / 'app'} 1"
    assert f"Config file: {conf}" in server.log()
    conf.write_text('raw_env = ["FROM_CONF=2"]\n')
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload done" in server.log() or "reload failed" in server.log(), timeout=30, message="the reload")
    assert "reload failed" not in server.log(), server.log()
    wait_until(lambda: requests.get(server.url + "/", timeout=5).text.endswith(" 2"), message="the new file's setting")
    assert requests.get(server.url + "/", timeout=5).text == f"{tmp_path / 'venv'} {tmp_path / 'app'} 2"


def test_a_logconfig_file_as_gunicorn_reads_it(serve, tmp_path):
    """--log-config: the fileConfig file gets Gunicorn's %(here)s; relative to --chdir; its styling of
    gunicorn.error is warned about at start; a missing file stops the server before any worker."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "logging.ini").write_text(
        "[loggers]\nkeys=root,gunicorn.error,app\n[handlers]\nkeys=file\n[formatters]\nkeys=plain\n"
        "[logger_root]\nhandlers=\n[logger_gunicorn.error]\nhandlers=file\nqualname=gunicorn.error\npropagate=0\n"
        "[logger_app]\nlevel=INFO\nhandlers=file\nqualname=gunicornlogger\npropagate=0\n"
        "[handler_file]\nclass=FileHandler\nformatter=plain\nargs=('%(here)s/app.log',)\n"
        "[formatter_plain]\nformat=STYLED %(levelname)s %(message)s\n")
    server = serve("gunicornlogger:app", "--log-config", "conf/logging.ini", "--chdir", str(tmp_path), "--pythonpath", str(APPS))
    assert "[WARNING] logconfig configures gunicorn.error: appserver's own error and access logs are not Python loggers" in server.log()
    assert requests.get(server.url + "/", timeout=5).text == "ok"
    # The Flask app took gunicorn.error's handlers at import, after the file had styled them.
    wait_until(lambda: (conf / "app.log").exists() and "STYLED INFO index served by the Flask app" in (conf / "app.log").read_text(),
               message="the styled line in %(here)s/app.log")

    result = run("--log-config", "nowhere.ini", "--chdir", str(tmp_path), "-b", f"127.0.0.1:{free_port()}", "--virtualenv", VENV, "plain:app")
    assert result.returncode != 0 and "Booting worker" not in result.stderr
    assert f"invalid value 'nowhere.ini' for 'logconfig': no such file ({tmp_path}/nowhere.ini)" in result.stderr


def test_logconfig_dict_without_root_logs_as_under_gunicorn(serve, tmp_path):
    """Gunicorn merges logconfig_dict over its defaults: with no `root` of its own, the app's INFO goes
    to stdout through the default console; logconfig_json given too is not applied, and is named."""
    config = tmp_path / "conf.py"
    unused = tmp_path / "unused.json"
    unused.write_text('{"loggers": {"gunicornlogger": {"level": "CRITICAL"}}}')
    config.write_text(f"logconfig_dict = {{'loggers': {{'other': {{'level': 'DEBUG'}}}}}}\nlogconfig_json = {str(unused)!r}\n")
    (tmp_path / "rootlogger.py").write_text(
        "import logging\ndef app(environ, start_response):\n    logging.getLogger('rootlogger').info('via the root console')\n"
        "    start_response('200 OK', [])\n    return [b'ok']\n")
    server = serve("rootlogger:app", "-c", str(config), "--chdir", str(tmp_path))
    assert "[WARNING] logconfig_json not applied: logconfig_dict takes precedence, as in Gunicorn" in server.log()
    assert requests.get(server.url + "/", timeout=5).text == "ok"
    # Gunicorn's default console: stdout, its generic format (the server's log here holds both streams).
    wait_until(lambda: re.search(r"^\[[^]]+\] \[\d+\] \[INFO\] via the root console$", server.log(), re.M), message="the root console's line")


def test_a_projects_uvicorn_worker_subclass_with_config_kwargs(serve, tmp_path):
    """Uvicorn's docs have projects subclass UvicornWorker to pass its options (CONFIG_KWARGS): -k names
    the subclass, by path or as the class in a config file; its options apply, or are named when they
    have no effect here; a class that cannot be imported stops the server with the reason."""
    server = serve("uvicornworkers:app", "-k", "uvicornworkers.MountedWorker")
    assert requests.get(server.url + "/", timeout=5).text == "root_path=/api loop=asyncio"
    assert "uvicornworkers.MountedWorker.CONFIG_KWARGS['http'] has no effect" in server.log()
    assert "the lifespan ran" not in server.log()

    config = tmp_path / "conf.py"
    config.write_text("from uvicornworkers import UvloopWorker\nworker_class = UvloopWorker\n")
    server = serve("uvicornworkers:app", "-c", str(config))
    assert requests.get(server.url + "/", timeout=5).text == "root_path= loop=uvloop"

    result = run("-k", "uvicornworkers.Missing", "-b", f"127.0.0.1:{free_port()}", "--virtualenv", VENV, "uvicornworkers:app")
    assert result.returncode != 0 and "Booting worker" not in result.stderr
    assert "invalid value 'uvicornworkers.Missing' for 'worker_class'" in result.stderr
    assert "AttributeError: module 'uvicornworkers' has no attribute 'Missing'" in result.stderr
