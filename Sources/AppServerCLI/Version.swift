/// The version the binary reports (`--version`, the log, systemd's status line). The .deb build
/// (packaging/build-deb.sh) writes the package's version here in its own copy of the sources.
let appServerVersion = "1.0.0"
