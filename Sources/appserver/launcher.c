// `appserver`: starts the server in Debian's python3.X, so that apps run in the same link-time and
// profile-optimized interpreter as under python3 itself (and under Gunicorn, Uvicorn or Granian); an
// interpreter linked into our own binary runs the same Python 4.5-7% slower (bench/RESULTS.md).
//
// It execs python3.X (same pid, arguments and inherited sockets: systemd's MAINPID and LISTEN_PID,
// and a USR2 upgrade, see one process) with the server's two libraries from beside this file (a build
// tree) or from ../lib/appserver (the .deb): libappserver-preload.so, preloaded, takes over before
// python3.X's main runs and loads libappserver-hosted.so, the server. Nothing else is done here.
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hosted_image.h"

#ifndef APPSERVER_PYTHON_EXECUTABLE
#error "Package.swift defines APPSERVER_PYTHON_EXECUTABLE"
#endif

static int find(const char *directory, const char *name, char *path) {
    static const char *const places[] = {"%s/%s", "%s/../lib/appserver/%s"};
    for (size_t i = 0; i < sizeof places / sizeof *places; i++) {
        char candidate[PATH_MAX];
        if (snprintf(candidate, sizeof candidate, places[i], directory, name) >= (int)sizeof candidate) continue;
        if (realpath(candidate, path) && access(path, R_OK) == 0) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    (void)argc;
    char self[PATH_MAX], directory[PATH_MAX], server[PATH_MAX], preload[PATH_MAX];
    if (!realpath("/proc/self/exe", self)) {
        fprintf(stderr, "appserver: error: cannot read /proc/self/exe: %s\n", strerror(errno));
        return 1;
    }
    strcpy(directory, self);
    *strrchr(directory, '/') = '\0';
    if (!find(directory, APPSERVER_HOSTED_LIBRARY_NAME, server) || !find(directory, APPSERVER_PRELOAD_LIBRARY_NAME, preload)) {
        fprintf(stderr, "appserver: error: the server's libraries (" APPSERVER_HOSTED_LIBRARY_NAME ", " APPSERVER_PRELOAD_LIBRARY_NAME ") "
                        "are neither beside %s nor in %s/../lib/appserver\n", self, directory);
        return 1;
    }
    // Ours first; what the user preloads (a malloc, say) stays, for the server and the app.
    char *list = appserver_put_first(preload, getenv("LD_PRELOAD"));
    if (!list) return 1;
    if (setenv("LD_PRELOAD", list, 1) || setenv(APPSERVER_HOSTED_LIBRARY_VARIABLE, server, 1) || setenv(APPSERVER_LAUNCHER_VARIABLE, self, 1)
        || appserver_add_tcache_tunable() < 0) {   // the larger malloc cache (hosted_image.h), unless the user chose its size
        fprintf(stderr, "appserver: error: cannot set the environment: %s\n", strerror(errno));
        return 1;
    }
    // In secure-execution mode (set-user-ID, or file capabilities on either executable) the loader
    // ignores LD_PRELOAD, and python3.X's own main would read the server's arguments: say so instead.
    if (getauxval(AT_SECURE)) {
        fprintf(stderr, "appserver: error: %s runs set-user-ID or with file capabilities, and then the dynamic "
                        "loader would not preload the server into python: remove them, and take ports below "
                        "1024 from systemd's sockets (the units do)\n", self);
        return 1;
    }
    if (getxattr(APPSERVER_PYTHON_EXECUTABLE, "security.capability", NULL, 0) >= 0) {
        fprintf(stderr, "appserver: error: %s has file capabilities (setcap), and then the dynamic loader would "
                        "not preload the server into it: remove them (setcap -r), and take ports below 1024 from "
                        "systemd's sockets (the units do)\n", APPSERVER_PYTHON_EXECUTABLE);
        return 1;
    }
    execv(APPSERVER_PYTHON_EXECUTABLE, argv);   // argv[0] as given: ps shows the command that was run
    fprintf(stderr, "appserver: error: cannot run %s, the Python that hosts the server: %s\n",
            APPSERVER_PYTHON_EXECUTABLE, strerror(errno));
    return 1;
}
