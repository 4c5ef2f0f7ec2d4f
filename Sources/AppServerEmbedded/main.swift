import AppServerCLI
import CHostedImage
import Glibc

// The server with CPython linked into the executable (Package.swift: static, shared or debug), for the
// Pythons it is not hosted by: the other CPython versions' builds (`make build PYTHON=...`) and Debian's
// debug interpreter (tests/refleak). The .deb's `appserver` is the launcher (Sources/appserver).

// The larger per-thread malloc cache (hosted_image.h says why) is read by glibc only at exec, and this
// binary has no launcher to exec it: it execs itself once more with it (same pid, arguments and inherited
// sockets), and that run puts GLIBC_TUNABLES back as it was before anything else reads the environment.
// By its path, not /proc/self/exe: under valgrind that is valgrind's tool (which reports the path of
// the program it runs). When the user chose the size, or the exec fails, it runs as it is.
if appserver_restore_glibc_tunables() == 0 && appserver_add_tcache_tunable() == 1 {
    var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    if readlink("/proc/self/exe", &path, Int(PATH_MAX)) > 0 {
        execv(path, CommandLine.unsafeArgv)
    }
    appserver_restore_glibc_tunables()
}
AppServerMain.main()
