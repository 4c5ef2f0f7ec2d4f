"""The servers built for other CPythons (`make python-hosts`: .build-pythons/hosts/appserver-python3.X),
each with a virtualenv of its Python (`.venv-python3.X`, tests/pythons/requirements.txt). A version whose
interpreter this machine lacks is skipped, and says so; one whose interpreter is here must have its build."""
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("e2e_conftest", ROOT / "tests" / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

HOSTS = Path(os.environ.get("APPSERVER_HOSTS", ROOT / ".build-pythons" / "hosts"))
VERSIONS = ("3.10", "3.12", "3.13")   # the embedded one, Debian's 3.11, is what tests/e2e runs on


def interpreter(version):
    """pyenv's python3.X (this machine kind's), else the system's; None when neither is here."""
    candidates = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    candidates.append(Path(f"/usr/bin/python{version}"))
    return next((c for c in candidates if c.exists()), None)


class Host:
    """The server built for one CPython and a virtualenv of that Python."""

    def __init__(self, version):
        self.version = version
        self.python = interpreter(version)
        self.binary = HOSTS / f"appserver-python{version}"
        self.venv = ROOT / f".venv-python{version}"


@pytest.fixture(params=VERSIONS)
def host(request):
    host = Host(request.param)
    if host.python is None:
        pytest.skip(f"CPython {host.version} is not on this machine")
    assert host.binary.exists(), f"{host.binary} is missing: `make python-hosts` builds it"
    assert (host.venv / "pyvenv.cfg").exists(), f"{host.venv} is missing: `make python-versions-test` makes it"
    return host


# e2e's fixture: serve(app, *args, workers=1, binary=..., venv=...) starts a server, stops it after the
# test and prints its log when the test failed.
serve = e2e.serve
# Keeps each phase's report on the test item, so that `serve` can tell whether the test failed.
pytest_runtest_makereport = e2e.pytest_runtest_makereport
