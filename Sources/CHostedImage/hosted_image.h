// What the launcher (Sources/appserver), the preloaded library (Sources/AppServerPreload) and the server
// (HostedImage, Sources/AppServerArbiter/Upgrade.swift; Sources/AppServerEmbedded) agree on, spelled
// once: the server's two libraries, the variables through which the launcher names the hosted library
// and itself to the python3.X it execs, and the malloc cache's tunable, added before an exec and put
// back after it.
#ifndef APPSERVER_HOSTED_IMAGE_H
#define APPSERVER_HOSTED_IMAGE_H

#include <stdlib.h>
#include <string.h>

#define APPSERVER_HOSTED_LIBRARY_NAME "libappserver-hosted.so"
#define APPSERVER_PRELOAD_LIBRARY_NAME "libappserver-preload.so"

#define APPSERVER_HOSTED_LIBRARY_VARIABLE "APPSERVER_HOSTED_LIBRARY"
#define APPSERVER_LAUNCHER_VARIABLE "APPSERVER_LAUNCHER"

// glibc's per-thread cache of freed blocks holds 7 of each size by default; a turn of the I/O loop makes
// and frees a request's objects (its exchange, head, fields) for every request it read, often 20-64 of
// them, and past the seventh each went to the arena's bins and back (~400 instructions a block, 3% of a
// hello request: bench/RESULTS.md, thirty-eighth pass). glibc reads GLIBC_TUNABLES only at exec: the
// launcher adds this before it execs python3.X, and the embedded build before it execs itself again,
// unless the user sets tcache_count there; each names what the variable was before (`=value`, or
// empty: unset) in the second variable, which the exec'd process puts back first thing (the preloaded
// library, the embedded build's main): the app's processes see the user's own.
#define APPSERVER_TCACHE_TUNABLE_NAME "glibc.malloc.tcache_count"
#define APPSERVER_TCACHE_TUNABLE APPSERVER_TCACHE_TUNABLE_NAME "=64"
#define APPSERVER_TUNABLES_BEFORE_VARIABLE "APPSERVER_GLIBC_TUNABLES_BEFORE"

// `first`, then `rest` after a colon when there is any (a new string, or NULL when out of memory).
static inline char *appserver_put_first(const char *first, const char *rest) {
    char *list = malloc(strlen(first) + (rest ? strlen(rest) + 2 : 1));
    if (!list) return NULL;
    strcpy(list, first);
    if (rest && *rest) { strcat(list, ":"); strcat(list, rest); }
    return list;
}

// Puts the malloc cache's size first in GLIBC_TUNABLES and notes what the variable was: 1 when added
// (for the next exec to read), 0 when the user chose the size (nothing changed), -1 when out of memory.
static inline int appserver_add_tcache_tunable(void) {
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (tunables && strstr(tunables, APPSERVER_TCACHE_TUNABLE_NAME "=")) return 0;
    char *added = appserver_put_first(APPSERVER_TCACHE_TUNABLE, tunables);
    char *before = malloc(tunables ? strlen(tunables) + 2 : 1);
    if (!added || !before) { free(added); free(before); return -1; }
    strcpy(before, tunables ? "=" : "");
    if (tunables) strcat(before, tunables);
    int failed = setenv(APPSERVER_TUNABLES_BEFORE_VARIABLE, before, 1) || setenv("GLIBC_TUNABLES", added, 1);
    free(added);
    free(before);
    return failed ? -1 : 1;
}

// Puts GLIBC_TUNABLES back as it was before the tunable was added (glibc has read it by now): 1 when
// it was noted so (this process was exec'd by one that added it), else 0.
static inline int appserver_restore_glibc_tunables(void) {
    const char *before = getenv(APPSERVER_TUNABLES_BEFORE_VARIABLE);
    if (!before) return 0;
    if (*before == '=') setenv("GLIBC_TUNABLES", before + 1, 1); else unsetenv("GLIBC_TUNABLES");
    unsetenv(APPSERVER_TUNABLES_BEFORE_VARIABLE);
    return 1;
}

#endif
