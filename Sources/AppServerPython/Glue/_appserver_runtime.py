"""The server's Python glue that every worker runs: importing the app, formatting exceptions, the app's
atexit functions. appserver loads this file (embedded in its binary) as the module `_appserver_runtime`
before anything else; the glue of WSGI, ASGI and the server hooks lives beside it."""
import traceback as _traceback
# Imported here, on the process's main thread, so that threading.main_thread() is this thread (the
# first thread to import threading becomes "main"): uvloop, on the ASGI loop thread, relies on it.
import threading as _threading

def format_exception(exc):
    return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")

class AppNotFound(LookupError):
    """The module imported but has no such app (Gunicorn's exit status 4). Anything the import itself
    raises, a KeyError of the app's own included, is a failure to import, told with its traceback."""

def load_app(module_name, attribute):
    """The app: MODULE:NAME, MODULE:A.B, or a factory called with literal arguments, MODULE:make(1, x="y")."""
    import importlib
    module = importlib.import_module(module_name)
    name, call = attribute, None
    if attribute.endswith(")"):
        import ast
        try:
            expression = ast.parse(attribute, mode="eval").body
        except SyntaxError:
            raise AppNotFound(f"Failed to parse {attribute!r} as an attribute name or function call.") from None
        function, parts = getattr(expression, "func", None), []
        while isinstance(function, ast.Attribute):
            parts.append(function.attr)
            function = function.value
        if not isinstance(expression, ast.Call) or not isinstance(function, ast.Name):
            raise AppNotFound(f"Failed to parse {attribute!r} as an attribute name or function call.")
        name = ".".join([function.id] + parts[::-1])
        try:
            call = ([ast.literal_eval(arg) for arg in expression.args],
                    {keyword.arg: ast.literal_eval(keyword.value) for keyword in expression.keywords})
        except ValueError:
            raise AppNotFound(f"Failed to parse arguments as literal values: {attribute!r}.") from None
    target = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppNotFound(f"Failed to find attribute {name!r} in {module_name!r}.") from None
    if call is not None:
        if not callable(target):
            raise AppNotFound(f"Factory {name!r} in {module_name!r} is not callable.")
        target = target(*call[0], **call[1])
        if target is None:
            raise AppNotFound(f"The factory {attribute!r} in {module_name!r} returned None.")
    if not callable(target):
        raise AppNotFound(f"Application object {attribute!r} in {module_name!r} is not callable.")
    return target

def run_exit_functions():
    import atexit
    atexit._run_exitfuncs()

def is_asgi(app):
    """Whether the callable looks like an ASGI 3 app (a coroutine function, or an object whose __call__ is one)."""
    import asyncio
    return asyncio.iscoroutinefunction(app) or asyncio.iscoroutinefunction(getattr(app, "__call__", None))
