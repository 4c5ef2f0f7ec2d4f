// Preloaded (LD_PRELOAD) by the launcher into the python3.X it execs. Its constructor runs before
// python3.X's main: it loads the server (libappserver-hosted.so, whose calls into the C API bind to
// the executable's exported, link-time-optimized CPython) and runs it; python3.X's main never runs.
// In any other process that inherits the variables (valgrind's launcher on its way to python3.X, say)
// it does nothing: there is no CPython in it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include "appserver_preload.h"
#include "hosted_image.h"

// Takes this library's own path out of LD_PRELOAD (what the user had there stays), so the processes
// the app starts do not load it.
static void leave_ld_preload(void) {
    Dl_info self;
    const char *list = getenv("LD_PRELOAD");
    if (!list || !dladdr((void *)leave_ld_preload, &self) || !self.dli_fname) return;
    char *kept = calloc(strlen(list) + 1, 1), *copy = strdup(list), *save = NULL;
    if (!kept || !copy) { free(kept); free(copy); return; }
    for (char *entry = strtok_r(copy, ": ", &save); entry; entry = strtok_r(NULL, ": ", &save)) {
        if (strcmp(entry, self.dli_fname) == 0) continue;
        if (*kept) strcat(kept, ":");
        strcat(kept, entry);
    }
    if (*kept) setenv("LD_PRELOAD", kept, 1); else unsetenv("LD_PRELOAD");
    free(kept);
    free(copy);
}

__attribute__((constructor))
static void appserver_preload_take_over(void) {
    const char *library = getenv(APPSERVER_HOSTED_LIBRARY_VARIABLE);
    if (!library || !dlsym(RTLD_DEFAULT, "Py_InitializeFromConfig")) return;
    leave_ld_preload();
    appserver_restore_glibc_tunables();   // the app's processes get the user's own
    // The process is python3.X's image; ps, top and pgrep show the launcher's name, as before.
    const char *launcher = getenv(APPSERVER_LAUNCHER_VARIABLE);
    if (launcher) {
        const char *name = strrchr(launcher, '/');
        prctl(PR_SET_NAME, name ? name + 1 : launcher, 0, 0, 0);
    }
    void *server = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!server) {
        fprintf(stderr, "appserver: error: cannot load the server: %s\n", dlerror());
        exit(1);
    }
    int (*entry)(void) = (int (*)(void))dlsym(server, "appserver_hosted_main");
    if (!entry) {
        fprintf(stderr, "appserver: error: %s is not the server's library: %s\n", library, dlerror());
        exit(1);
    }
    exit(entry());
}
