"""The server hosted by Debian's python3.11 (Sources/appserver, the launcher): one process that runs
python3.11's CPython, named as the server, whose app and the app's children see the environment the
server was given, and a launcher that says what is missing rather than failing obscurely."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (BINARY, SERVER_LIBRARIES, TCACHE_CASE_IDS, TCACHE_CASES, check_malloc_cache, given, hosted_library,
                      install_server, serve_probe)


def test_the_arbiter_and_workers_are_python3_11_named_appserver(serve, tmp_path):
    server, seen = serve_probe(serve, tmp_path)
    python = os.path.realpath("/usr/bin/python3.11")
    for pid in [server.pid, *server.workers()]:
        assert os.path.realpath(f"/proc/{pid}/exe") == python
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "appserver", "ps, top and pgrep show the server's name"
        assert hosted_library(pid) == str((BINARY.parent / "libappserver-hosted.so").resolve())
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == str(BINARY).encode(), "argv as it was run"
    assert os.path.realpath(seen["executable"]) == python and seen["comm"] == "appserver"
    assert seen["sys_executable"] == f"{sys.prefix}/bin/python3", "sys.executable is the virtualenv's python, as before"


def test_the_app_and_its_children_see_the_environment_the_server_was_given(serve, tmp_path):
    _, seen = serve_probe(serve, tmp_path)
    assert seen["environ"] == given(), "no LD_PRELOAD, and none of the launcher's variables"
    assert seen["child_maps_server"] == [], "a process the app starts does not load the server"


def test_a_preload_of_the_users_stays_for_the_server_and_the_app(serve, tmp_path):
    """LD_PRELOAD (a malloc, say) is kept: after the server's own while it starts, alone afterwards."""
    library = next(p for p in ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"] if os.path.exists(p))
    server, seen = serve_probe(serve, tmp_path, env={"LD_PRELOAD": library})
    assert seen["environ"] == given({"LD_PRELOAD": library})
    maps = Path(f"/proc/{server.workers()[0]}/maps").read_text()
    assert "libz.so.1" in maps and "libappserver-preload.so" in maps


@pytest.mark.parametrize("users, execd, before", TCACHE_CASES, ids=TCACHE_CASE_IDS)
def test_malloc_caches_more_blocks_a_thread_unless_the_user_chose_and_the_app_sees_the_users_tunables(serve, tmp_path, monkeypatch,
                                                                                                     users, execd, before):
    """The launcher adds a larger per-thread malloc cache to GLIBC_TUNABLES (hosted_image.h says why), which
    glibc reads at exec; the app and its children see the variable as the server was given it."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    check_malloc_cache(serve, tmp_path, users, execd, before)


def test_a_launcher_without_its_libraries_says_where_it_looked(tmp_path):
    lone = tmp_path / "bin" / "appserver"
    lone.parent.mkdir()
    lone.write_bytes(BINARY.read_bytes())
    lone.chmod(0o755)
    out = subprocess.run([str(lone), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == (f"appserver: error: the server's libraries (libappserver-hosted.so, libappserver-preload.so) "
                                  f"are neither beside {lone} nor in {lone.parent}/../lib/appserver")


def test_the_package_layout_is_found_too(tmp_path):
    """/usr/bin/appserver with its libraries in /usr/lib/appserver, as the .deb installs them."""
    install_server(tmp_path / "usr" / "bin")
    (tmp_path / "usr" / "lib" / "appserver").mkdir(parents=True)
    for library in SERVER_LIBRARIES:
        os.rename(tmp_path / "usr" / "bin" / library, tmp_path / "usr" / "lib" / "appserver" / library)
    out = subprocess.run([str(tmp_path / "usr" / "bin" / "appserver"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == subprocess.run([str(BINARY), "--version"], capture_output=True,
                                                                         text=True, timeout=30).stdout.strip()


def test_the_server_library_preloaded_without_its_launcher_refuses_to_start(tmp_path):
    """Without the launcher's path a USR2 upgrade would exec python3.11 with the server's arguments: a
    python3.11 given the server's libraries by hand (the launcher's variable missing, or naming nothing)
    says so instead of serving."""
    libraries = BINARY.parent
    base = {**os.environ, "LD_PRELOAD": str(libraries / "libappserver-preload.so"),
            "APPSERVER_HOSTED_LIBRARY": str(libraries / "libappserver-hosted.so")}
    base.pop("APPSERVER_LAUNCHER", None)
    out = subprocess.run(["/usr/bin/python3.11", "--version"], env=base, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr == ("appserver: error: the server's library was loaded without its launcher (APPSERVER_LAUNCHER "
                          "and APPSERVER_HOSTED_LIBRARY are not both set): start the server with the appserver command\n")
    gone = tmp_path / "appserver"
    out = subprocess.run(["/usr/bin/python3.11", "--version"], env={**base, "APPSERVER_LAUNCHER": str(gone)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr == f"appserver: error: cannot stat {gone}: No such file or directory\n"


@pytest.mark.skipif(os.geteuid() != 0 or not all(map(shutil.which, ["setcap", "unshare", "mount"])),
                    reason="needs root, setcap and unshare")
def test_a_python3_11_with_file_capabilities_is_refused_with_one_line(tmp_path):
    """The loader ignores LD_PRELOAD for an executable with file capabilities (setcap, a habit for port
    80): python3.11's own main would then take the server's arguments. Checked on a copy of python3.11
    with a capability, mounted over /usr/bin/python3.11 in a mount namespace of this test's own."""
    python = Path(os.path.realpath("/usr/bin/python3.11"))
    copy = tmp_path / "python3.11"
    shutil.copy(python, copy)
    subprocess.run(["setcap", "cap_net_bind_service+ep", str(copy)], check=True)
    script = f"mount --bind {copy} {python} && exec {BINARY} --version"
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr == ("appserver: error: /usr/bin/python3.11 has file capabilities (setcap), and then the dynamic "
                          "loader would not preload the server into it: remove them (setcap -r), and take ports below "
                          "1024 from systemd's sockets (the units do)\n"), out
