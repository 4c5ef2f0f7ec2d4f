"""Shared by the tests of this folder: the .deb at the changelog's version and at 1.1.0, built once per
run (test_deb.py and test_fleet.py install both)."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from nspawn import ROOT

OLD, NEW = "1.0.0", "1.1.0"

# Figures a test measured (not pass/fail), printed at the end of the run.
FIGURES = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def build_deb(version, out):
    result = subprocess.run([str(ROOT / "packaging" / "build-deb.sh"), version, str(out)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def debs():
    """{version: path of its .deb}: the changelog's version (1.0.0) and the same package bumped to 1.1.0."""
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("needs dpkg-buildpackage (make deps)")
    out = Path(tempfile.mkdtemp(prefix="appserver-debs-"))
    os.chmod(out, 0o755)
    version = subprocess.run(["dpkg-parsechangelog", "-l", str(ROOT / "packaging/debian/changelog"), "-S", "Version"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == OLD
    yield {OLD: build_deb(OLD, out), NEW: build_deb(NEW, out)}
    shutil.rmtree(out, ignore_errors=True)
