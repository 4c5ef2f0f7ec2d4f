"""The server's Python glue (Sources/AppServerPython/Glue/*.py) tested as the Python it is, outside the
server: the native functions it is given are plain Python fakes here."""
import importlib
import pathlib
import sys

import pytest

# No __pycache__ inside Sources/: it would be one more (unhandled) file of the Swift target.
sys.dont_write_bytecode = True
GLUE = pathlib.Path(__file__).resolve().parents[2] / "Sources" / "AppServerPython" / "Glue"
sys.path.insert(0, str(GLUE))


@pytest.fixture
def glue():
    """The four glue modules, freshly imported (their module state is reset for each test)."""
    modules = {}
    for name in ("_appserver_runtime", "_appserver_wsgi", "_appserver_asgi", "_appserver_hooks"):
        sys.modules.pop(name, None)
    for name in ("_appserver_runtime", "_appserver_wsgi", "_appserver_asgi", "_appserver_hooks"):
        modules[name.removeprefix("_appserver_")] = importlib.import_module(name)
    return modules
