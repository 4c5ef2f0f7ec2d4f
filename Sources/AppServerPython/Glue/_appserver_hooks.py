"""The Python half of config files and server hooks: running a gunicorn.conf.py with Gunicorn's
semantics, and the `server`, `worker`, `req` and `resp` objects hooks receive. Values cross to Swift
as tagged JSON ({"i": 4}, {"s": "x"}, ...), so a bool stays a bool and an int an int. Loaded by
appserver as the module `_appserver_hooks`."""
import json as _json
import logging as _logging
import os as _os
import sys as _sys
import types as _types

HOOKS = {}
# `server.log` and `worker.log` write through this native function (set by the server): level 0
# debug ... 4 critical, and the text.
LOG_FUNCTION = None
# A Python config file's logconfig_dict as written: it may hold objects JSON cannot carry (a filter
# class under "()", a stream), and the workers inherit this module from the arbiter.
RAW_LOGCONFIG = None

def import_standard_modules(names):
    import importlib
    for name in names.split():
        try:
            importlib.import_module(name)
        except Exception:
            pass

def _tag(value, key):
    if value is None:
        return {"n": 0}
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, int):
        return {"i": value}
    if isinstance(value, float):
        return {"f": value}
    if isinstance(value, str):
        return {"s": value}
    if isinstance(value, bytes):
        return {"s": value.decode("utf-8", "surrogateescape")}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {"a": [_tag(item, key) for item in value]}
    if isinstance(value, dict):
        return {"t": {str(k): _tag(v, key) for k, v in value.items()}}
    if isinstance(value, _os.PathLike):
        return {"s": _os.fspath(value)}
    raise TypeError(f"invalid value for {key}: {value!r} (expected a string, number, boolean, list or dict)")

def _untag(node):
    (kind, value), = node.items()
    if kind == "a":
        return [_untag(item) for item in value]
    if kind == "t":
        return {k: _untag(v) for k, v in value.items()}
    return None if kind == "n" else value

# Worker classes a Python config file gave as class objects, by the path the server got for them.
WORKER_CLASSES = {}

def describe_worker_class(path):
    """A worker class named by its dotted path that the server does not know by name (a subclass of
    Uvicorn's worker with CONFIG_KWARGS, as Uvicorn's docs suggest): the paths of the classes it
    derives from, itself first, and its CONFIG_KWARGS."""
    cls = WORKER_CLASSES.get(path)
    if cls is None:
        import importlib
        module_name, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class but {cls!r}")
    kwargs = getattr(cls, "CONFIG_KWARGS", None) or {}
    return _json.dumps({"bases": [f"{k.__module__}.{k.__qualname__}" for k in cls.__mro__],
                        "config_kwargs": {str(k): _tag(v, f"CONFIG_KWARGS[{k!r}]") for k, v in kwargs.items()}})

def read_config(location, setting_keys, hook_names, marker):
    """Runs a Python config file as Gunicorn does; returns its settings and the names that are none."""
    if location.startswith("python:"):
        import importlib
        name = location[len("python:"):]
        module = _sys.modules.get(name)
        module = importlib.reload(module) if module is not None else importlib.import_module(name)
        namespace = vars(module)
    else:
        namespace = {"__builtins__": __builtins__, "__name__": "__config__", "__file__": _os.path.abspath(location),
                     "__doc__": None, "__package__": None}
        with open(location, "rb") as file:
            source = file.read()
        exec(compile(source, location, "exec"), namespace)
    global RAW_LOGCONFIG
    RAW_LOGCONFIG = None
    settings, unknown, hooks = [], [], {}
    for key, value in list(namespace.items()):
        # Gunicorn reads lower-case module-level names; modules, classes and private names are not settings.
        if key == "worker_class" and isinstance(value, type):
            # Gunicorn takes the class itself too: the server gets its path, and finds it here again.
            path = f"{value.__module__}.{value.__qualname__}"
            WORKER_CLASSES[path] = value
            settings.append([key, {"s": path}])
            continue
        if key.startswith("_") or key != key.lower() or isinstance(value, (_types.ModuleType, type)):
            continue
        if key in hook_names:
            if not callable(value):
                raise TypeError(f"{key} must be a function, not {value!r}")
            hooks[key] = value
            settings.append([key, {"s": marker}])
        elif key == "logconfig_dict" and isinstance(value, dict):
            RAW_LOGCONFIG = value or None
            try:
                settings.append([key, _tag(value, key)])
            except TypeError:
                # Objects JSON cannot carry: the server gets that it holds some, and its loggers' names
                # (for its warnings; under a key dictConfig ignores, so a --print-config of it stays inert).
                carried = {"python_objects": True}
                if isinstance(value.get("loggers"), dict):
                    carried["logger_names"] = [str(name) for name in value["loggers"]]
                settings.append([key, _tag(carried, key)])
        elif key in setting_keys:
            settings.append([key, {"s": marker} if callable(value) else _tag(value, key)])
        elif not callable(value):
            unknown.append(key)
    HOOKS.clear()
    HOOKS.update(hooks)
    return _json.dumps({"settings": settings, "unknown": unknown})

def _native_level(levelno):
    """A logging level number as LOG_FUNCTION's 0 (debug) ... 4 (critical)."""
    return 0 if levelno < 20 else 1 if levelno < 30 else 2 if levelno < 40 else 3 if levelno < 50 else 4

class Log:
    """`server.log` and `worker.log`: the server's error log, with Gunicorn's logger methods."""

    def _say(self, level, msg, args):
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = f"{msg} {args!r}"
        LOG_FUNCTION(level, text)

    def debug(self, msg, *args, **kwargs):
        self._say(0, msg, args)

    def info(self, msg, *args, **kwargs):
        self._say(1, msg, args)

    def warning(self, msg, *args, **kwargs):
        self._say(2, msg, args)

    warn = warning

    def error(self, msg, *args, **kwargs):
        self._say(3, msg, args)

    def critical(self, msg, *args, **kwargs):
        self._say(4, msg, args)

    def exception(self, msg, *args, **kwargs):
        import traceback
        self._say(3, f"{msg}\n{traceback.format_exc().rstrip()}", ())

    def log(self, level, msg, *args, **kwargs):
        self._say(_native_level(level), msg, args)

    def reopen_files(self):
        pass

LOG = Log()

class Config:
    """`server.cfg` and `worker.cfg`: every setting as an attribute, under Gunicorn's names."""

    def __init__(self, values):
        self.__dict__.update(values)
        self.settings = dict(values)

    def __getattr__(self, name):
        return None

    @property
    def env(self):
        return dict(item.split("=", 1) for item in (self.raw_env or []))

    @property
    def address(self):
        return list(self.bind or [])

    @property
    def is_ssl(self):
        return False

CFG = Config({})

def set_config(text):
    global CFG
    CFG = Config({key: _untag(value) for key, value in _json.loads(text).items()})

class Server:
    """What hooks get as `server` (Gunicorn's Arbiter): pid, cfg, log, num_workers, proc_name."""

    def __init__(self, pid, num_workers):
        self.pid = pid
        self.num_workers = num_workers
        self.cfg = CFG
        self.log = LOG
        self.proc_name = CFG.proc_name or "appserver"
        self.app = None
        self.WORKERS = {}

class Worker:
    """What hooks get as `worker`: pid, ppid, age, alive, booted, cfg, log."""

    def __init__(self, pid, ppid, age, alive=True, booted=False):
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.alive = alive
        self.booted = booted
        self.aborted = False
        self.cfg = CFG
        self.log = LOG
        self.nr = 0
        self.max_requests = CFG.max_requests or 0
        self.timeout = CFG.timeout

    def __repr__(self):
        return f"<Worker {self.pid}>"

# The worker process's own `worker` object, made once it is forked.
WORKER = None

def this_worker(age, booted):
    global WORKER
    if WORKER is None or WORKER.pid != _os.getpid():
        WORKER = Worker(_os.getpid(), _os.getppid(), age)
    WORKER.booted = booted
    return WORKER

def call_hook(name, *args):
    hook = HOOKS.get(name)
    if hook is not None:
        hook(*args)

class Request:
    """`req` for pre_request and post_request: Gunicorn's request attributes, from the environ."""

    def __init__(self, environ):
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = environ.get("RAW_URI") or (self.path + ("?" + self.query if self.query else ""))
        self.scheme = environ.get("wsgi.url_scheme", "http")
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        self.version = (int(protocol[5]), int(protocol[7])) if len(protocol) == 8 else (1, 1)
        self.headers = [(key[5:].replace("_", "-"), value) for key, value in environ.items() if key.startswith("HTTP_")]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key in environ:
                self.headers.append((key.replace("_", "-"), environ[key]))
        self.remote_addr = environ.get("REMOTE_ADDR")

class Response:
    """`resp` for post_request: the status and headers the app started its response with."""

    def __init__(self):
        self.status = None
        self.status_code = None
        self.headers = []
        self.sent = 0
        self.response_length = None

class _ClosingBody:
    """A response body that runs post_request when the server closes it (after the last byte)."""

    def __init__(self, body, done):
        self._body = body
        self._done = done

    def __iter__(self):
        return iter(self._body)

    def close(self):
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done()

def with_request_hooks(app):
    """The WSGI app wrapped with pre_request and post_request, called as Gunicorn's sync worker does."""
    pre = HOOKS.get("pre_request")
    post = HOOKS.get("post_request")
    if pre is None and post is None:
        return app

    def hooked(environ, start_response):
        worker = WORKER
        req = Request(environ)
        resp = Response()

        def finished():
            if post is not None:
                try:
                    if post.__code__.co_argcount == 3:
                        post(worker, req, environ)
                    else:
                        post(worker, req, environ, resp)
                except Exception:
                    LOG.exception("Exception in post_request hook")

        def hooked_start_response(status, headers, exc_info=None):
            resp.status = status
            resp.status_code = int(str(status).split(" ", 1)[0])
            resp.headers = list(headers)
            return start_response(status, headers, exc_info)

        if pre is not None:
            pre(worker, req)
        try:
            body = app(environ, hooked_start_response)
        except BaseException:
            finished()
            raise
        if isinstance(body, (list, tuple)):
            resp.response_length = sum(len(chunk) for chunk in body)
            finished()
            return body
        return _ClosingBody(body, finished)

    return hooked

class ErrorLogHandler(_logging.Handler):
    """What the app logs to gunicorn.error (or uvicorn.error) goes to the server's error log, as under
    Gunicorn. No formatter by default: the error log's lines carry the time, pid and level already."""

    def emit(self, record):
        try:
            LOG_FUNCTION(_native_level(record.levelno), self.format(record))
        except Exception:
            self.handleError(record)

def setup_server_loggers(level):
    """The loggers a Gunicorn worker has, which apps use (Flask's `app.logger.handlers =
    logging.getLogger("gunicorn.error").handlers`): gunicorn.error at the server's loglevel, writing
    to its error log, not propagating; uvicorn.error the same, as Gunicorn's UvicornWorker sets it.
    The access loggers get no handler: appserver writes its access log itself, and asks them only
    whether a line goes out (access_allowed)."""
    for name in ("gunicorn.error", "uvicorn.error"):
        logger = _logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_gunicorn", False):
                logger.removeHandler(handler)
        handler = ErrorLogHandler()
        handler._gunicorn = True   # Gunicorn's mark for its own handlers: a later setup replaces them
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
    for name in ("gunicorn.access", "uvicorn.access"):
        logger = _logging.getLogger(name)
        # INFO, as Gunicorn sets it; but a preloaded app's own level (WARNING: no access lines) stays
        # when a worker sets its loggers up again, as under Gunicorn, whose workers do not.
        if logger.level == _logging.NOTSET:
            logger.setLevel(_logging.INFO)
        logger.propagate = False

def access_logger_filters(names):
    """Those of the access loggers `names` that the app put filters on (to keep health checks out of
    the access log, say)."""
    loggers = _logging.root.manager.loggerDict
    return [name for name in names if getattr(loggers.get(name), "filters", None)]

UVICORN_ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'

def access_allowed(logger, line, atoms, headers):
    """Whether the access logger lets a request's line through, as the logger a Gunicorn worker logs
    to would: not disabled, enabled for INFO, and every filter passing the record. The record has
    the shape of the real one, since filters read it: uvicorn.access gets Uvicorn's message and
    args (client, method, path with query, HTTP version, status); gunicorn.access gets Gunicorn's
    atoms as args (record.args["U"]) and the line as its message (record.getMessage())."""
    if not logger.isEnabledFor(_logging.INFO):
        return False
    if not logger.filters:
        return True
    if logger.name == "uvicorn.access":
        args = (atoms["client"], atoms["m"], atoms["U"] + ("?" + atoms["q"] if atoms["q"] else ""), atoms["H"][5:], int(atoms["s"]))
        record = logger.makeRecord(logger.name, _logging.INFO, "(appserver)", 0, UVICORN_ACCESS_FORMAT, args, None)
    else:
        safe = _SafeAtoms(atoms)
        for name, value in headers:
            safe["{%s}i" % name.lower()] = value
        record = logger.makeRecord(logger.name, _logging.INFO, "(appserver)", 0, line.replace("%", "%%"), (safe,), None)
    return bool(logger.filter(record))

class _SafeAtoms(dict):
    """Gunicorn's atoms dict: a missing atom reads as '-'."""
    def __missing__(self, key):
        return "-"

def config_defaults():
    """gunicorn.glogging.CONFIG_DEFAULTS: a logconfig_dict's or logconfig_json's top-level keys replace
    these, so a dict that leaves out `root` or `loggers` does what it does under Gunicorn. The one
    change: gunicorn.error's console is the server's error log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True, "qualname": "gunicorn.access"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
            "error_console": {"()": ErrorLogHandler},
        },
        "formatters": {
            "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                        "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
        },
    }

def over_gunicorns_defaults(given):
    """`given` over config_defaults(), top-level key by key, as Gunicorn merges it. Where Gunicorn's
    merge fails (given handlers or formatters that leave out the ones a default entry names: "Unable
    to configure root logger"), that default entry is left out or its piece kept instead."""
    defaults = config_defaults()
    config = {**defaults, **given}
    handlers = config.get("handlers") or {}
    if "root" not in given and not all(name in handlers for name in defaults["root"]["handlers"]):
        del config["root"]
    if "loggers" not in given:
        config["loggers"] = {name: logger for name, logger in defaults["loggers"].items()
                             if all(handler in handlers for handler in logger["handlers"])}
    if "handlers" not in given and "generic" not in (config.get("formatters") or {}):
        config["formatters"] = {**(config.get("formatters") or {}), "generic": defaults["formatters"]["generic"]}
    return config

def _dict_config(config):
    """dictConfig, leaving Uvicorn's loggers enabled unless the config names them: under Gunicorn they
    do not exist yet when its dictConfig runs (UvicornWorker makes them after), so a config's
    `disable_existing_loggers` does not reach them, where here setup_server_loggers made them before."""
    import logging.config
    logging.config.dictConfig(config)
    named = config.get("loggers") or {}
    for name in ("uvicorn.error", "uvicorn.access"):
        if name not in named:
            _logging.getLogger(name).disabled = False

def apply_logconfig(level, dict_text, file_path, json_path):
    """The app's Python logging as Gunicorn sets it up: its loggers, then logconfig_dict, else
    logconfig_json, else logconfig (only one of the three applies, the first given)."""
    import logging.config
    setup_server_loggers(level)
    if RAW_LOGCONFIG is not None or dict_text:
        given = dict(RAW_LOGCONFIG) if RAW_LOGCONFIG is not None else {key: _untag(value) for key, value in _json.loads(dict_text).items()}
        _dict_config(over_gunicorns_defaults(given))
    elif json_path:
        with open(json_path) as file:
            _dict_config(over_gunicorns_defaults(_json.load(file)))
    elif file_path:
        # Gunicorn's defaults for the file's %(here)s and %(__file__)s.
        logging.config.fileConfig(file_path, defaults={"__file__": file_path, "here": _os.path.dirname(file_path)},
                                  disable_existing_loggers=False)