import contextlib
import json
import textwrap

import pytest


def read(glue, tmp_path, source, keys=("workers", "bind", "timeout", "logconfig_dict"), hooks=("post_fork", "pre_request")):
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(textwrap.dedent(source))
    return json.loads(glue["hooks"].read_config(str(path), set(keys), set(hooks), "@hook@"))


def test_read_config_reads_settings_hooks_and_reports_the_rest(glue, tmp_path):
    result = read(glue, tmp_path, """
        import os
        workers = 2 * 2
        bind = ["127.0.0.1:8000"]
        timeout = 30.5
        wrokers = 3
        _private = 1
        Upper = 2
        def post_fork(server, worker):
            pass
        def helper():
            pass
    """)
    assert dict(result["settings"]) == {"workers": {"i": 4}, "bind": {"a": [{"s": "127.0.0.1:8000"}]},
                                        "timeout": {"f": 30.5}, "post_fork": {"s": "@hook@"}}
    assert result["unknown"] == ["wrokers"]
    assert set(glue["hooks"].HOOKS) == {"post_fork"}


def test_a_hook_that_is_not_a_function_is_refused(glue, tmp_path):
    with pytest.raises(TypeError, match="post_fork must be a function"):
        read(glue, tmp_path, "post_fork = 3\n")


def test_values_json_cannot_carry_are_refused_by_name(glue, tmp_path):
    with pytest.raises(TypeError, match="invalid value for timeout"):
        read(glue, tmp_path, "timeout = object()\n")


def test_logconfig_dict_with_python_objects_is_kept_raw(glue, tmp_path):
    result = read(glue, tmp_path, """
        import logging
        logconfig_dict = {"filters": {"f": {"()": logging.Filter}}}
    """)
    assert dict(result["settings"])["logconfig_dict"] == {"t": {"python_objects": {"b": True}}}
    assert glue["hooks"].RAW_LOGCONFIG["filters"]["f"]["()"].__name__ == "Filter"
    # The loggers' names still reach the server (it warns about Gunicorn's own), without their objects.
    result = read(glue, tmp_path, """
        import logging
        logconfig_dict = {"filters": {"f": {"()": logging.Filter}}, "loggers": {"gunicorn.error": {"filters": ["f"]}, "app": {}}}
    """)
    carried = glue["hooks"]._untag(dict(result["settings"])["logconfig_dict"])
    assert carried == {"python_objects": True, "logger_names": ["gunicorn.error", "app"]}
    # Under a key dictConfig ignores: applied as --print-config writes it, it configures no logger (a
    # "loggers" entry would have taken the handlers of each it names).
    import logging
    hooks = glue["hooks"]
    raw, hooks.RAW_LOGCONFIG = hooks.RAW_LOGCONFIG, None
    logger, kept = logging.getLogger("app"), logging.NullHandler()
    logger.addHandler(kept)
    try:
        with saved_logging():
            hooks.apply_logconfig("info", hooks._json.dumps({k: hooks._tag(v, k) for k, v in carried.items()}), None, None)
            assert kept in logger.handlers
    finally:
        hooks.RAW_LOGCONFIG = raw
        logger.removeHandler(kept)


@contextlib.contextmanager
def saved_logging():
    """Python logging is the test process's: the loggers these tests configure are put back."""
    import logging
    names = [None, "gunicorn.error", "gunicorn.access", "uvicorn.error", "uvicorn.access", "app", "other"]
    saved = [(logging.getLogger(name), list(logging.getLogger(name).handlers), logging.getLogger(name).level,
              logging.getLogger(name).propagate, logging.getLogger(name).disabled) for name in names]
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


def test_gunicorn_error_is_the_servers_error_log(glue):
    """Apps take gunicorn.error's handlers and level (Flask's docs say so): it writes to the server's
    error log at its loglevel, as in a Gunicorn worker; uvicorn.error too, as the UvicornWorker sets it."""
    import logging
    hooks = glue["hooks"]
    said = []
    hooks.LOG_FUNCTION = lambda level, text: said.append((level, text))
    with saved_logging():
        foreign = logging.NullHandler()
        logging.getLogger("gunicorn.error").addHandler(foreign)
        hooks.setup_server_loggers("warning")
        hooks.setup_server_loggers("debug")   # again (a reload): still one handler of the server's
        error = logging.getLogger("gunicorn.error")
        assert [type(h).__name__ for h in error.handlers] == ["NullHandler", "ErrorLogHandler"]
        assert error.level == logging.DEBUG and not error.propagate
        app = logging.getLogger("app")
        app.handlers, app.propagate = error.handlers, False
        app.setLevel(error.level)
        app.debug("d %s", 1)
        app.info("i")
        logging.getLogger("uvicorn.error").warning("w")
        error.error("e")
        error.critical("c")
        try:
            raise ValueError("boom")
        except ValueError:
            app.exception("failed")
        assert said[:5] == [(0, "d 1"), (1, "i"), (2, "w"), (3, "e"), (4, "c")]
        assert said[5][0] == 3 and said[5][1].startswith("failed\nTraceback") and "ValueError: boom" in said[5][1]
        assert not logging.getLogger("gunicorn.access").propagate and not logging.getLogger("uvicorn.access").propagate


def test_logconfig_dict_over_gunicorns_defaults(glue, capsys):
    """Gunicorn merges the dict's top-level keys over its CONFIG_DEFAULTS: a dict without `root` logs the
    app's INFO to stdout; where Gunicorn's merge would fail (given handlers without its console), the
    default entry is left out instead."""
    import logging
    hooks = glue["hooks"]
    hooks.RAW_LOGCONFIG = None
    with saved_logging():
        hooks.apply_logconfig("info", hooks._json.dumps({"loggers": hooks._tag({"other": {"level": "DEBUG"}}, "x")}), None, None)
        logging.getLogger("app").info("to the root's console")
        assert "[INFO] to the root's console" in capsys.readouterr().out
        assert logging.getLogger("other").level == logging.DEBUG
        assert [type(h).__name__ for h in logging.getLogger("gunicorn.error").handlers] == ["ErrorLogHandler"]
    with saved_logging():
        root_before = list(logging.getLogger().handlers)
        given = {"handlers": {"null": {"class": "logging.NullHandler"}}, "loggers": {"other": {"handlers": ["null"]}}}
        hooks.apply_logconfig("info", hooks._json.dumps({k: hooks._tag(v, k) for k, v in given.items()}), None, None)
        assert logging.getLogger().handlers == root_before
        assert [type(h).__name__ for h in logging.getLogger("other").handlers] == ["NullHandler"]
    with saved_logging():
        given = {"formatters": {"short": {"format": "%(message)s"}}}
        hooks.apply_logconfig("info", hooks._json.dumps({k: hooks._tag(v, k) for k, v in given.items()}), None, None)
        assert [type(h).__name__ for h in logging.getLogger().handlers] == ["StreamHandler"]


def test_only_the_first_of_dict_json_and_file_applies(glue, tmp_path, capsys):
    """Gunicorn's order: logconfig_dict, else logconfig_json, else logconfig; a fileConfig file gets
    Gunicorn's %(here)s and %(__file__)s."""
    import logging
    hooks = glue["hooks"]
    hooks.RAW_LOGCONFIG = None
    (tmp_path / "logging.json").write_text(json.dumps({"loggers": {"other": {"level": "ERROR"}}}))
    (tmp_path / "logging.ini").write_text(textwrap.dedent("""
        [loggers]
        keys=root,other
        [handlers]
        keys=file
        [formatters]
        keys=plain
        [logger_root]
        handlers=
        [logger_other]
        level=WARNING
        handlers=file
        qualname=other
        propagate=0
        [handler_file]
        class=FileHandler
        formatter=plain
        args=("%(here)s/app.log",)
        [formatter_plain]
        format=%(name)s %(levelname)s %(message)s
    """))
    ini, as_json = str(tmp_path / "logging.ini"), str(tmp_path / "logging.json")
    with saved_logging():
        hooks.apply_logconfig("info", hooks._json.dumps({"loggers": hooks._tag({"other": {"level": "DEBUG"}}, "x")}), ini, as_json)
        assert logging.getLogger("other").level == logging.DEBUG
    with saved_logging():
        hooks.apply_logconfig("info", None, ini, as_json)
        assert logging.getLogger("other").level == logging.ERROR
    with saved_logging():
        hooks.apply_logconfig("info", None, ini, None)
        other = logging.getLogger("other")
        other.warning("into the file")
        for handler in other.handlers:
            handler.close()
        assert (tmp_path / "app.log").read_text() == "other WARNING into the file\n"


def test_tags_round_trip(glue):
    hooks = glue["hooks"]
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": b"bytes"}}
    assert hooks._untag(hooks._tag(value, "k")) == {"a": [1, 2.5, "x", None, True], "b": {"c": "bytes"}}


def test_log_levels_go_to_the_native(glue):
    hooks = glue["hooks"]
    said = []
    hooks.LOG_FUNCTION = lambda level, text: said.append((level, text))
    hooks.LOG.debug("d %s", 1)
    hooks.LOG.info("i")
    hooks.LOG.warning("w")
    hooks.LOG.error("e")
    hooks.LOG.critical("c")
    hooks.LOG.log(40, "as logging.ERROR")
    hooks.LOG.info("bad %d format", "x")
    assert said[:6] == [(0, "d 1"), (1, "i"), (2, "w"), (3, "e"), (4, "c"), (3, "as logging.ERROR")]
    assert said[6] == (1, "bad %d format ('x',)")


def test_config_and_objects_hooks_receive(glue):
    hooks = glue["hooks"]
    hooks.set_config(json.dumps({"workers": {"i": 3}, "raw_env": {"a": [{"s": "A=1"}]}, "proc_name": {"n": 0}}))
    server = hooks.Server(100, 3)
    assert server.cfg.workers == 3 and server.cfg.env == {"A": "1"} and server.cfg.nonexistent is None
    assert server.proc_name == "appserver" and server.num_workers == 3
    worker = hooks.this_worker(2, True)
    assert worker.age == 2 and worker.booted and hooks.this_worker(2, False) is worker and not worker.booted


def test_request_hooks_wrap_a_wsgi_app(glue):
    hooks = glue["hooks"]
    calls = []
    hooks.HOOKS.clear()
    hooks.HOOKS["pre_request"] = lambda worker, req: calls.append(("pre", req.method, req.path, req.headers))
    hooks.HOOKS["post_request"] = lambda worker, req, environ, resp: calls.append(("post", resp.status_code, resp.response_length))

    def app(environ, start_response):
        start_response("201 Created", [("X-A", "1")])
        return [b"ab", b"c"]

    wrapped = hooks.with_request_hooks(app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/x", "HTTP_X_ONE": "1", "CONTENT_TYPE": "text/plain"}
    assert wrapped(environ, lambda status, headers, exc_info=None: None) == [b"ab", b"c"]
    assert calls == [("pre", "POST", "/x", [("X-ONE", "1"), ("CONTENT-TYPE", "text/plain")]), ("post", 201, 3)]


def test_post_request_runs_when_a_streamed_body_is_closed(glue):
    hooks = glue["hooks"]
    calls = []
    hooks.HOOKS.clear()
    hooks.HOOKS["post_request"] = lambda worker, req, environ: calls.append("post")

    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"x"

    body = hooks.with_request_hooks(app)({"REQUEST_METHOD": "GET"}, lambda *a: None)
    assert list(body) == [b"x"] and calls == []
    body.close()
    assert calls == ["post"]


def test_no_request_hooks_leave_the_app_alone(glue):
    hooks = glue["hooks"]
    hooks.HOOKS.clear()

    def app(environ, start_response):
        return []
    assert hooks.with_request_hooks(app) is app


def test_a_worker_class_is_described_by_its_bases_and_config_kwargs(glue, tmp_path, monkeypatch):
    """-k names a project's subclass (Uvicorn's docs: subclass UvicornWorker to set CONFIG_KWARGS), by
    path or, in a config file, as the class itself."""
    hooks = glue["hooks"]
    (tmp_path / "projworkers.py").write_text(textwrap.dedent("""
        class Base:
            CONFIG_KWARGS = {"loop": "auto", "http": "auto"}
        class Mine(Base):
            CONFIG_KWARGS = {"loop": "asyncio", "lifespan": "off", "headers": [["x-a", "1"]]}
        not_a_class = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    described = json.loads(hooks.describe_worker_class("projworkers.Mine"))
    assert described["bases"] == ["projworkers.Mine", "projworkers.Base", "builtins.object"]
    assert {k: hooks._untag(v) for k, v in described["config_kwargs"].items()} == {"loop": "asyncio", "lifespan": "off", "headers": [["x-a", "1"]]}
    with pytest.raises(TypeError, match="not a class"):
        hooks.describe_worker_class("projworkers.not_a_class")
    with pytest.raises(AttributeError):
        hooks.describe_worker_class("projworkers.Missing")
    # A class defined in the config file itself: its path reaches the server, the class stays here.
    result = read(glue, tmp_path, """
        class LocalWorker:
            CONFIG_KWARGS = {"root_path": "/x"}
        worker_class = LocalWorker
    """, keys=("worker_class",))
    assert dict(result["settings"]) == {"worker_class": {"s": "__config__.LocalWorker"}}
    described = json.loads(hooks.describe_worker_class("__config__.LocalWorker"))
    assert described["bases"][0] == "__config__.LocalWorker" and hooks._untag(described["config_kwargs"]["root_path"]) == "/x"


def test_filters_on_the_access_loggers_are_found(glue):
    import logging
    hooks = glue["hooks"]
    with saved_logging():
        logging.getLogger("uvicorn.access").filters.clear()
        logging.getLogger("gunicorn.access").filters.clear()
        assert hooks.access_logger_filters(("gunicorn.access", "uvicorn.access")) == []
        logging.getLogger("uvicorn.access").addFilter(lambda record: True)
        assert hooks.access_logger_filters(("gunicorn.access", "uvicorn.access")) == ["uvicorn.access"]
        assert hooks.access_logger_filters(("gunicorn.access",)) == []
        logging.getLogger("uvicorn.access").filters.clear()


def access_atoms(**given):
    atoms = {"h": "10.0.0.9", "l": "-", "u": "-", "t": "[07/Dec/2026:03:00:00 +0000]", "r": "GET /health?full=1 HTTP/1.1",
             "m": "GET", "U": "/health", "q": "full=1", "H": "HTTP/1.1", "s": "200", "B": "2", "b": "2", "f": "-", "a": "kube-probe/1.29",
             "T": "0", "M": "0", "D": "120", "L": "0.000120", "p": "<7>", "client": "10.0.0.9:51000"}
    return {**atoms, **given}


def test_the_access_logger_decides_as_a_gunicorn_workers_would(glue):
    """A request's access line goes out unless the interface's access logger is disabled, above INFO, or
    filtered; filters see a record shaped as Uvicorn's (message and args) or Gunicorn's (atoms as args,
    the line as the message), so the recipes that keep health checks out of the log work as written."""
    import logging
    hooks = glue["hooks"]
    line = '10.0.0.9 - - [07/Dec/2026:03:00:00 +0000] "GET /health?full=1 HTTP/1.1" 200 2 "-" "kube-probe/1.29" 100%'
    with saved_logging():
        uvicorn, gunicorn = logging.getLogger("uvicorn.access"), logging.getLogger("gunicorn.access")
        for logger in (uvicorn, gunicorn):
            logger.filters.clear()
            logger.setLevel(logging.INFO)
            logger.disabled = False
            assert hooks.access_allowed(logger, line, access_atoms(), [])
        seen = []

        def uvicorn_recipe(record):   # FastAPI's usual one, and one that reads the path from args
            seen.append((record.getMessage(), record.args))
            return record.getMessage().find("/health") == -1 and record.args[2] != "/ready"
        uvicorn.addFilter(uvicorn_recipe)
        assert not hooks.access_allowed(uvicorn, line, access_atoms(), [])
        assert seen[-1] == ('10.0.0.9:51000 - "GET /health?full=1 HTTP/1.1" 200', ("10.0.0.9:51000", "GET", "/health?full=1", "1.1", 200))
        assert not hooks.access_allowed(uvicorn, line, access_atoms(U="/ready", q=""), [])
        assert hooks.access_allowed(uvicorn, line, access_atoms(U="/items", q=""), [])

        def gunicorn_recipe(record):
            seen.append(record.getMessage())
            return record.args["U"] != "/health" and record.args["{x-probe}i"] == "-" and record.args["nonesuch"] == "-"
        gunicorn.addFilter(gunicorn_recipe)
        assert not hooks.access_allowed(gunicorn, line, access_atoms(), [])
        assert seen[-1] == line   # the line itself, its '%' kept
        assert hooks.access_allowed(gunicorn, line, access_atoms(U="/"), [("User-Agent", "curl")])
        assert not hooks.access_allowed(gunicorn, line, access_atoms(U="/"), [("X-Probe", "1")])

        gunicorn.filters.clear()
        gunicorn.setLevel(logging.WARNING)   # the other recipe: the access logger above INFO
        assert not hooks.access_allowed(gunicorn, line, access_atoms(), [])
        gunicorn.setLevel(logging.INFO)
        gunicorn.disabled = True
        assert not hooks.access_allowed(gunicorn, line, access_atoms(), [])


def test_a_dict_config_leaves_uvicorns_loggers_enabled_unless_it_names_them(glue):
    """Under Gunicorn, UvicornWorker makes uvicorn.access after the dictConfig, so the config's
    disable_existing_loggers does not turn the ASGI access lines off; here the loggers exist before."""
    import logging
    hooks = glue["hooks"]
    hooks.RAW_LOGCONFIG = None
    given = {"disable_existing_loggers": True, "loggers": {"other": {"level": "INFO"}}}
    with saved_logging():
        hooks.apply_logconfig("info", hooks._json.dumps({k: hooks._tag(v, k) for k, v in given.items()}), None, None)
        assert not logging.getLogger("uvicorn.access").disabled and not logging.getLogger("uvicorn.error").disabled
        assert logging.getLogger("gunicorn.access").disabled   # as Gunicorn's own: it existed before
    given = {"disable_existing_loggers": True, "loggers": {"uvicorn.access": {"level": "INFO"}}}
    with saved_logging():
        logging.getLogger("uvicorn.access").disabled = True
        hooks.apply_logconfig("info", hooks._json.dumps({k: hooks._tag(v, k) for k, v in given.items()}), None, None)
        assert not logging.getLogger("uvicorn.access").disabled and not logging.getLogger("uvicorn.error").disabled
