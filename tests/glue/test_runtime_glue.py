import sys
import textwrap

import pytest


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    (tmp_path / "glue_test_app.py").write_text(textwrap.dedent("""
        def app(environ, start_response):
            return []

        class Holder:
            inner = staticmethod(app)

        def make(name, size=1, flags=()):
            def made(environ, start_response):
                return []
            made.args = (name, size, flags)
            return made

        def make_none():
            return None

        not_callable = 42

        async def asgi(scope, receive, send):
            pass

        class ASGIClass:
            async def __call__(self, scope, receive, send):
                pass

        asgi_instance = ASGIClass()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("glue_test_app", None)
    yield "glue_test_app"
    sys.modules.pop("glue_test_app", None)


def test_load_app_by_name_and_dotted_path(glue, app_module):
    load = glue["runtime"].load_app
    assert load(app_module, "app").__name__ == "app"
    assert load(app_module, "Holder.inner").__name__ == "app"


def test_load_app_calls_a_factory_with_literal_arguments(glue, app_module):
    made = glue["runtime"].load_app(app_module, 'make("x", size=3, flags=(1, 2))')
    assert made.args == ("x", 3, (1, 2))


@pytest.mark.parametrize("attribute, message", [
    ("missing", "Failed to find attribute 'missing' in 'glue_test_app'."),
    ("not_callable", "Application object 'not_callable' in 'glue_test_app' is not callable."),
    ("make_none()", "The factory 'make_none()' in 'glue_test_app' returned None."),
    ("make(open('x'))", "Failed to parse arguments as literal values: \"make(open('x'))\"."),
    ("make(1,,)", "Failed to parse 'make(1,,)' as an attribute name or function call."),
    ("not_callable()", "Factory 'not_callable' in 'glue_test_app' is not callable."),
])
def test_load_app_errors_say_what_is_wrong(glue, app_module, attribute, message):
    with pytest.raises(glue["runtime"].AppNotFound) as raised:
        glue["runtime"].load_app(app_module, attribute)
    assert str(raised.value) == message


def test_a_lookup_error_of_the_apps_own_is_not_a_missing_app(glue, tmp_path, monkeypatch):
    """`os.environ["SETTING"]` failing in the app's module is a failed import (its traceback told), not
    "no such app"."""
    (tmp_path / "glue_keyerror_app.py").write_text('import os\nSETTING = os.environ["GLUE_TEST_UNSET_SETTING"]\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyError) as raised:
        glue["runtime"].load_app("glue_keyerror_app", "app")
    assert not isinstance(raised.value, glue["runtime"].AppNotFound)
    sys.modules.pop("glue_keyerror_app", None)


def test_import_errors_propagate(glue):
    with pytest.raises(ModuleNotFoundError):
        glue["runtime"].load_app("no_such_module_anywhere", "app")


def test_format_exception_has_the_traceback(glue):
    def fail():
        raise ValueError("boom")

    try:
        fail()
    except ValueError as error:
        text = glue["runtime"].format_exception(error)
    assert text.startswith("Traceback (most recent call last):")
    assert "in fail" in text and text.endswith("ValueError: boom")


def test_is_asgi(glue, app_module):
    runtime = glue["runtime"]
    module = __import__(app_module)
    assert runtime.is_asgi(module.asgi) and runtime.is_asgi(module.asgi_instance)
    assert not runtime.is_asgi(module.app)


def test_run_exit_functions_runs_the_apps_atexit_functions():
    # In a process of its own: atexit's functions are the whole process's.
    import pathlib
    import subprocess
    glue = pathlib.Path(__file__).resolve().parents[2] / "Sources" / "AppServerPython" / "Glue"
    code = ("import sys, atexit; sys.path.insert(0, sys.argv[1]); import _appserver_runtime as r\n"
            "atexit.register(print, 'ran'); r.run_exit_functions(); print('after')")
    result = subprocess.run([sys.executable, "-B", "-c", code, str(glue)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ran", "after"]   # run once, by the call, not again at exit
