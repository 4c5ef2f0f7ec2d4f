// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "appserver",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "appserver", targets: ["appserver"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
    ],
    targets: [
        // C libraries from Debian, found through pkg-config.
        .systemLibrary(name: "CPython", pkgConfig: "python3-embed", providers: [.apt(["python3-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // Only what Swift cannot call itself: Py_None and friends, variadic C functions.
        .target(name: "CPythonShim", dependencies: ["CPython"]),

        // One module a concern.
        .target(name: "AppServerConfig", dependencies: [
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AppServerSystemd", dependencies: ["CSystemd"]),
        .target(name: "AppServerHTTP", dependencies: [
            "AppServerConfig",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AppServerPython", dependencies: [
            "CPython", "CPythonShim", "AppServerConfig", "AppServerHTTP",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AppServerArbiter", dependencies: [
            "AppServerConfig", "AppServerSystemd", "AppServerHTTP", "AppServerPython",
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "appserver", dependencies: [
            "AppServerConfig", "AppServerArbiter",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "AppServerConfigTests", dependencies: ["AppServerConfig"]),
        .testTarget(name: "AppServerHTTPTests", dependencies: [
            "AppServerHTTP",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Exclusivity is checked at compile time; the run-time checks cost several percent of a request.
for target in package.targets where target.type == .regular || target.type == .executable {
    target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
}
