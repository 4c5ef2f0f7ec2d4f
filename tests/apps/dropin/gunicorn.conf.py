"""A gunicorn.conf.py shaped like those of real deployments: settings from the environment, Gunicorn's
own key names, and the server hooks they use. Each hook writes a line, `NAME PID DETAIL`, to
$HOOK_LOG, so the tests can tell that it ran, where, and how often."""
import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("WORKER_CLASS", "sync")
threads = int(os.environ.get("THREADS", "1"))
timeout = int(os.environ.get("TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
max_requests = 1000
max_requests_jitter = 50
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
forwarded_allow_ips = "*"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
worker_tmp_dir = "/dev/shm"
proc_name = "dropin"
raw_env = ["DROPIN_FROM_CONFIG=yes"]
limit_request_line = 8190
worker_connections = 1000
capture_output = False
# A helper value, not a setting: Gunicorn ignores it, appserver says so.
cpu_guess = multiprocessing.cpu_count()
HOOK_LOG = os.environ.get("HOOK_LOG", "/dev/null")


def _record(name, *details):
    with open(HOOK_LOG, "a") as log:
        log.write(" ".join([name, str(os.getpid()), *map(str, details)]) + "\n")


def on_starting(server):
    _record("on_starting", server.pid)


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")
    _record("when_ready", server.cfg.workers, server.cfg.proc_name)


def on_reload(server):
    _record("on_reload")


def pre_fork(server, worker):
    _record("pre_fork", worker.age)


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)
    _record("post_fork", worker.pid, server.pid)


def post_worker_init(worker):
    _record("post_worker_init", worker.pid, worker.age)


def pre_request(worker, req):
    worker.log.debug("%s %s" % (req.method, req.path))
    _record("pre_request", req.method, req.path)


def post_request(worker, req, environ, resp):
    _record("post_request", req.path, resp.status_code)


def child_exit(server, worker):
    _record("child_exit", worker.pid)


def worker_exit(server, worker):
    _record("worker_exit", worker.pid)


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new_value, old_value)


def on_exit(server):
    _record("on_exit")
