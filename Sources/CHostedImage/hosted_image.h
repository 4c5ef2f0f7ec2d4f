// What the launcher (Sources/appserver), the preloaded library (Sources/AppServerPreload) and the server
// (HostedImage, Sources/AppServerArbiter/Upgrade.swift) agree on, spelled once: the server's two
// libraries, and the variables through which the launcher names the hosted library and itself to the
// python3.X it execs.
#ifndef APPSERVER_HOSTED_IMAGE_H
#define APPSERVER_HOSTED_IMAGE_H

#define APPSERVER_HOSTED_LIBRARY_NAME "libappserver-hosted.so"
#define APPSERVER_PRELOAD_LIBRARY_NAME "libappserver-preload.so"

#define APPSERVER_HOSTED_LIBRARY_VARIABLE "APPSERVER_HOSTED_LIBRARY"
#define APPSERVER_LAUNCHER_VARIABLE "APPSERVER_LAUNCHER"

// glibc's per-thread cache of freed blocks holds 7 of each size by default; a turn of the I/O loop makes
// and frees a request's objects (its exchange, head, fields) for every request it read, often 20-64 of
// them, and past the seventh each went to the arena's bins and back (~400 instructions a block, 3% of a
// hello request: bench/RESULTS.md, thirty-eighth pass). The launcher adds this to GLIBC_TUNABLES unless
// the user sets tcache_count there, and names what the variable was before (`=value`, or empty: unset)
// in the second variable, which the preloaded library puts back: the app's processes see the user's own.
#define APPSERVER_TCACHE_TUNABLE_NAME "glibc.malloc.tcache_count"
#define APPSERVER_TCACHE_TUNABLE APPSERVER_TCACHE_TUNABLE_NAME "=64"
#define APPSERVER_TUNABLES_BEFORE_VARIABLE "APPSERVER_GLIBC_TUNABLES_BEFORE"

#endif
