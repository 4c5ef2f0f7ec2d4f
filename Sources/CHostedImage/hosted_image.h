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

#endif
