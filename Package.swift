// swift-tools-version:6.0
import PackageDescription

// Two ways to run the server, the same code (AppServerCLI down):
// - `appserver` (the default, what the .deb installs): a launcher that execs Debian's python3.X with
//   the server in a library (libappserver-hosted.so) that a preloaded one (libappserver-preload.so)
//   starts before python3.X's main: the apps run in python3.X's own link-time optimized CPython, which
//   runs their Python 4.5-7% faster than any libpython we can link (bench/RESULTS.md).
// - `appserver-embedded`: CPython linked into the executable, for the Pythons that do not host it (the
//   other versions' builds below, and Debian's debug interpreter for tests/refleak). Statically by
//   default, the way /usr/bin/python3 has it: Debian's shared libpython is position-independent code and
//   runs the same Python about 10% slower. Extension modules (uvloop, pydantic-core, the stdlib's
//   lib-dynload) find the C API in the executable, which exports the Py* symbols (python-exports.list).
//
// Which CPython: Debian's 3.11 unless the environment names another; `make build PYTHON=/path/to/python3.X`
// sets these from that interpreter's sysconfig (scripts/python-build-env). A build serves one minor
// version, hosted or embedded: the C API and ABI differ from one version to the next, and the server's
// library is compiled against one version's headers as an extension module is.
//   APPSERVER_PYTHON_VERSION      major.minor (pkg-config's python-X.Y[-embed] gives the headers)
//   APPSERVER_PYTHON_ARCHIVE      its libpythonX.Y.a; APPSERVER_PYTHON_ARCHIVE_LIBS what that needs
//   APPSERVER_PYTHON_EXECUTABLE   the interpreter's python3.X, its sys.executable without a virtualenv
//   APPSERVER_PYTHON_LINK         static (default), shared (libpythonX.Y.so, rpath to its directory), or
//                                 debug: Debian's debug interpreter (python3.11-dbg: Py_DEBUG,
//                                 sys.gettotalrefcount), for the reference-leak test (tests/refleak)
let environment = Context.environment
let pythonVersion = environment["APPSERVER_PYTHON_VERSION"] ?? "3.11"
let pythonLink = environment["APPSERVER_PYTHON_LINK"] ?? "static"
#if arch(x86_64)
let multiarch = "x86_64-linux-gnu"
#else
let multiarch = "aarch64-linux-gnu"
#endif
let pythonArchive = environment["APPSERVER_PYTHON_ARCHIVE"]
    ?? "/usr/lib/python\(pythonVersion)/config-\(pythonVersion)-\(multiarch)/libpython\(pythonVersion).a"
let pythonArchiveLibraries = (environment["APPSERVER_PYTHON_ARCHIVE_LIBS"] ?? "-lexpat -lz -lm")
    .split(separator: " ").map(String.init)
let pythonExecutable = environment["APPSERVER_PYTHON_EXECUTABLE"] ?? "/usr/bin/python\(pythonVersion)"
let staticPython = pythonLink == "static"
let pythonLinkFlags: [String] = staticPython ? [
    "-use-ld=lld", "-Xclang-linker", "-no-pie",
    "-Xlinker", "--dynamic-list=\(Context.packageDirectory)/Sources/AppServerEmbedded/python-exports.list",
    "-Xlinker", "--whole-archive", pythonArchive, "-Xlinker", "--no-whole-archive",
] + pythonArchiveLibraries : environment["APPSERVER_PYTHON_LIBDIR"].map { ["-Xlinker", "-rpath", "-Xlinker", $0] } ?? []
let pythonPkgConfig = staticPython ? "python-\(pythonVersion)"
    : pythonLink == "debug" ? "python-\(pythonVersion)d-embed" : "python-\(pythonVersion)-embed"

// The launcher and the preloaded library are C. SwiftPM links every product with the Swift runtime;
// without Swift's startup object nothing in them refers to it, so a static link (the .deb's) takes none
// of it in: the hosted server has one runtime, its own. (A dynamic link still names libswiftCore.so, the
// same one the server's library loads.)
let withoutSwiftRuntime = ["-nostartfiles"]

let package = Package(
    name: "appserver",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "appserver", targets: ["appserver"]),
        .library(name: "appserver-hosted", type: .dynamic, targets: ["AppServerHosted"]),
        .library(name: "appserver-preload", type: .dynamic, targets: ["AppServerPreload"]),
        .executable(name: "appserver-embedded", targets: ["AppServerEmbedded"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        // A complete TOML 1.0 reader (toml++) for config files.
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // C libraries from Debian, found through pkg-config.
        // `python3` gives the headers only; `python3-embed` adds -lpython3.X (the shared library).
        .systemLibrary(name: "CPython", pkgConfig: pythonPkgConfig, providers: [.apt(["python3-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // glibc's <malloc.h> (mallopt), not in Swift's Glibc module.
        .systemLibrary(name: "CMalloc"),
        // The launcher's, the preloaded library's and the server's shared names (a header only).
        .systemLibrary(name: "CHostedImage"),
        // Only what Swift cannot call itself: Py_None and friends, variadic C functions.
        .target(name: "CPythonShim", dependencies: ["CPython"], cSettings: [
            .define("APPSERVER_PYTHON_EXECUTABLE", to: "\"\(pythonExecutable)\""),
        ]),

        // One module a concern.
        .target(name: "AppServerConfig", dependencies: [
            .product(name: "TOMLKit", package: "TOMLKit"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AppServerSystemd", dependencies: ["CSystemd"]),
        .target(name: "AppServerHTTP", dependencies: [
            "AppServerConfig",
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The server's Python glue is real Python (Glue/*.py, tested by tests/glue), embedded in the binary.
        .target(name: "AppServerPython", dependencies: [
            "CPython", "CPythonShim", "AppServerConfig", "AppServerHTTP",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], resources: [
            .embedInCode("Glue/_appserver_runtime.py"),
            .embedInCode("Glue/_appserver_wsgi.py"),
            .embedInCode("Glue/_appserver_asgi.py"),
            .embedInCode("Glue/_appserver_hooks.py"),
        ]),
        .target(name: "AppServerArbiter", dependencies: [
            "AppServerConfig", "AppServerSystemd", "AppServerHTTP", "AppServerPython", "CMalloc", "CHostedImage",
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The command line: the server command and the control commands, whichever way it runs.
        .target(name: "AppServerCLI", dependencies: [
            "AppServerConfig", "AppServerArbiter", "AppServerPython",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Hosted by python3.X: the launcher (C, no Swift), the preloaded library that takes over
        // python3.X before its main, and the server as a library whose C API calls bind to python3.X's.
        .executableTarget(name: "appserver", cSettings: [
            .define("APPSERVER_PYTHON_EXECUTABLE", to: "\"\(pythonExecutable)\""),
            .define("_FORTIFY_SOURCE", to: "2", .when(configuration: .release)),
            .headerSearchPath("../CHostedImage"),
        ], linkerSettings: [.unsafeFlags(withoutSwiftRuntime)]),
        .target(name: "AppServerPreload", cSettings: [.define("_FORTIFY_SOURCE", to: "2", .when(configuration: .release)),
                                                     .headerSearchPath("../CHostedImage")],
                linkerSettings: [.linkedLibrary("dl"), .unsafeFlags(withoutSwiftRuntime)]),
        .target(name: "AppServerHosted", dependencies: ["AppServerCLI", "AppServerArbiter"]),
        // CPython linked in.
        .executableTarget(name: "AppServerEmbedded", dependencies: ["AppServerCLI", "CHostedImage"],
                          exclude: ["python-exports.list"], linkerSettings: [.unsafeFlags(pythonLinkFlags)]),

        .testTarget(name: "AppServerConfigTests", dependencies: ["AppServerConfig"]),
        .testTarget(name: "AppServerSystemdTests", dependencies: ["AppServerSystemd"]),
        .testTarget(name: "AppServerHTTPTests", dependencies: [
            "AppServerHTTP",
            "AppServerConfig",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Clang keys its cache of compiled C modules by the compiler's settings but not by the header search
// path: a build directory that switches interpreter would reuse the CPython module of the last one
// (the last one's struct layouts and PY_MINOR_VERSION). A macro naming the interpreter keys it.
let pythonModuleKey = "-DAPPSERVER_PYTHON_HOST=\"\(pythonExecutable) \(pythonLink)\""
for target in package.targets where ["CPythonShim", "AppServerPython", "AppServerArbiter", "AppServerCLI", "AppServerHosted", "AppServerEmbedded"].contains(target.name) {
    if target.name == "CPythonShim" {
        target.cSettings = (target.cSettings ?? []) + [.unsafeFlags([pythonModuleKey])]
    } else {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-Xcc", pythonModuleKey])]
    }
}

// Exclusivity is checked at compile time; the run-time checks cost several percent of a request.
// Cross-module optimization: generic code of one module used by another (AppThreadQueue<WorkItem>,
// Monitor.withLock) is specialized where it is used, not run unspecialized with the type's metadata
// looked up at run time (~1k instructions a WSGI request).
let cTargets: Set = ["CPythonShim", "AppServerPreload", "appserver"]
for target in package.targets where (target.type == .regular || target.type == .executable) && !cTargets.contains(target.name) {
    target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]
}
