import AppServerCLI

// The server with CPython linked into the executable (Package.swift: static, shared or debug), for the
// Pythons it is not hosted by: the other CPython versions' builds (`make build PYTHON=...`) and Debian's
// debug interpreter (tests/refleak). The .deb's `appserver` is the launcher (Sources/appserver).
AppServerMain.main()
