"""The Python bridge's ownership rules, checked in its source: references are counted only by the
ownership layer (Runtime/PyRef.swift), the GIL is taken and released only by Runtime/GIL.swift, calls go
through the one checked helper, and no converter that can fail is force-unwrapped."""
import pathlib
import re

SOURCES = pathlib.Path(__file__).resolve().parents[2] / "Sources"
BRIDGE = SOURCES / "AppServerPython"


def uses(pattern, allowed):
    found = []
    for path in sorted(SOURCES.rglob("*.swift")):
        relative = path.relative_to(SOURCES).as_posix()
        if relative in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            if re.search(pattern, code):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_only_the_ownership_layer_counts_references():
    assert uses(r"\bPy_(IncRef|DecRef|INCREF|DECREF|XINCREF|XDECREF)\b", {"AppServerPython/Runtime/PyRef.swift"}) == []


def test_only_the_gil_helpers_take_and_release_the_gil():
    pattern = r"\b(PyEval_SaveThread|PyEval_RestoreThread|PyGILState_Ensure|PyGILState_Release)\b"
    assert uses(pattern, {"AppServerPython/Runtime/GIL.swift"}) == []


def test_calls_go_through_the_checked_helper():
    assert uses(r"\bPyObject_Vectorcall(Method)?\b", {"AppServerPython/Runtime/PyRef.swift"}) == []


def test_no_trapping_converters():
    # PyUnicode_AsUTF8 fails on a str with a lone surrogate; its result must never be force-unwrapped.
    assert uses(r"\bPyUnicode_AsUTF8\s*\(", set()) == []
    assert uses(r"PyUnicode_AsUTF8AndSize\([^)]*\)!", set()) == []


def test_the_glue_is_python_files_not_string_literals():
    assert sorted(p.name for p in (BRIDGE / "Glue").glob("*.py")) == [
        "_appserver_asgi.py", "_appserver_hooks.py", "_appserver_runtime.py", "_appserver_wsgi.py"]
    assert uses(r'#"""', set()) == []


def test_no_pointer_of_a_temporary_reference():
    # `f(makeRef().pointer)`: the temporary PyRef may be released before f runs (a use after free that
    # crashed the worker once). Bind the reference to a name, or pass the PyRef itself (borrowing).
    assert uses(r"\)\.pointer\b", set()) == []
