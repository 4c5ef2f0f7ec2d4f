import AppServerArbiter
import AppServerConfig
import ArgumentParser
import Foundation
import Logging

/// The command line: Gunicorn's flag names where Gunicorn has the flag, each one the same setting as
/// the config file's key of that name. Options are read as text and checked by `ServerConfig`, so a
/// bad value gets the same one-line message from the command line and from a file.
struct AppServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appserver",
        abstract: "A pre-forking application server for Python web apps (WSGI and ASGI), systemd-native.",
        discussion: """
            Serves APP (MODULE:CALLABLE, e.g. mysite.wsgi:application) with a single-threaded arbiter and \
            pre-forked workers that embed CPython. Settings may also come from a TOML file (-c) with the \
            same names (bind, workers, max_requests, ...); the command line wins over the file.

            Signals: HUP reload the app, USR2 upgrade to the binary on disk, TERM/QUIT graceful stop, INT fast \
            stop, TTIN/TTOU one worker more/less, USR1 reopen the log files.

            Control a running server and wait for the outcome: 'appserver reload --pid PID', \
            'appserver upgrade --pid PID', 'appserver status --pid PID' (see 'appserver reload --help').
            """,
        version: appServerVersion)

    @Argument(help: "The app, MODULE:CALLABLE (default callable: application).")
    var app: String?

    @Option(name: [.customShort("c"), .long], help: ArgumentHelp("A TOML config file.", valueName: "FILE"))
    var config: String?
    @Flag(name: .customLong("check-config"), help: "Check the configuration and the app's location, then exit.")
    var checkConfig = false

    @Option(name: [.customShort("b"), .long], help: ArgumentHelp("Address to listen on: HOST:PORT, [::1]:PORT or unix:PATH (repeatable; default 127.0.0.1:8000).", valueName: "ADDRESS"))
    var bind: [String] = []
    @Option(name: [.customShort("w"), .long], help: "Worker processes (default 1).")
    var workers: String?
    @Option(help: "Python threads per worker (default 1).")
    var threads: String?
    @Option(name: [.customShort("t"), .long], help: "Seconds a worker may be silent, or a request make no progress, before the worker is replaced (default 30; 0 disables).")
    var timeout: String?
    @Option(name: .customLong("graceful-timeout"), help: "Seconds in-flight requests get to finish on a graceful stop (default 30).")
    var gracefulTimeout: String?
    @Option(name: .customLong("keep-alive"), help: "Seconds an idle keep-alive connection is kept (default 2).")
    var keepAlive: String?
    @Option(name: .customLong("header-timeout"), help: "Seconds a client has to send a request head (default 10).")
    var headerTimeout: String?
    @Option(name: .customLong("max-requests"), help: "Requests a worker serves before it is replaced (default 0: never).")
    var maxRequests: String?
    @Option(name: .customLong("max-requests-jitter"), help: "Random extra requests added to --max-requests per worker.")
    var maxRequestsJitter: String?
    @Option(help: "Length of the listen queue (default 2048).")
    var backlog: String?
    @Option(help: ArgumentHelp("Change to this directory before loading the app.", valueName: "DIR"))
    var chdir: String?
    @Option(help: ArgumentHelp("Comma-separated directories added to the Python path.", valueName: "DIRS"))
    var pythonpath: String?
    @Option(name: [.customShort("e"), .long], help: ArgumentHelp("An environment variable for the app (repeatable).", valueName: "KEY=VALUE"))
    var env: [String] = []
    @Option(help: ArgumentHelp("The app's virtualenv (default: $VIRTUAL_ENV).", valueName: "DIR"))
    var virtualenv: String?
    @Option(name: .customLong("access-logfile"), help: ArgumentHelp("Access log file, '-' for stdout (default: none).", valueName: "FILE"))
    var accessLogfile: String?
    @Option(name: [.customLong("error-logfile"), .customLong("log-file")], help: ArgumentHelp("Error log file, '-' for stderr (default).", valueName: "FILE"))
    var errorLogfile: String?
    @Option(name: .customLong("log-level"), help: "debug, info, warning, error or critical (default info).")
    var logLevel: String?
    @Option(name: .customLong("access-logformat"), help: "Access log format, with Gunicorn's atoms.")
    var accessLogformat: String?
    @Option(name: [.customShort("p"), .customLong("pid")], help: ArgumentHelp("Write the arbiter's pid to this file.", valueName: "FILE"))
    var pid: String?
    @Option(name: .customLong("limit-request-line"), help: "Longest request line, in bytes (default 4094).")
    var limitRequestLine: String?
    @Option(name: .customLong("limit-request-fields"), help: "Most header fields in a request (default 100).")
    var limitRequestFields: String?
    @Option(name: .customLong("limit-request-field_size"), help: "Longest header field, in bytes (default 8190).")
    var limitRequestFieldSize: String?
    @Option(name: .customLong("limit-request-body"), help: "Largest request body, in bytes (default 0: no limit).")
    var limitRequestBody: String?

    @Option(help: "The gateway interface: auto (ASGI for a coroutine function, else WSGI), wsgi or asgi (default auto).")
    var interface: String?
    @Option(help: "ASGI event loop: auto (uvloop when installed), asyncio or uvloop (default auto).")
    var loop: String?
    @Option(help: "ASGI lifespan protocol: auto (if the app supports it), on or off (default auto).")
    var lifespan: String?
    @Option(name: .customLong("root-path"), help: "ASGI root_path: where the app is mounted, e.g. /api.")
    var rootPath: String?
    @Option(name: .customLong("ws-max-size"), help: "Largest websocket message, in bytes (default 16 MiB).")
    var wsMaxSize: String?

    @Option(name: .customLong("protocol"), help: "What listeners without a scheme speak: http or uwsgi (nginx's uwsgi_pass) (default http).")
    var protocolName: String?
    @Option(name: [.customLong("uwsgi-allow-from"), .customLong("uwsgi-allow-ips")], help: ArgumentHelp("Peers whose uwsgi packets are served: IPs, CIDR networks or * (default 127.0.0.1,::1; unix sockets always).", valueName: "IPS"))
    var uwsgiAllowIPs: String?
    @Option(name: .customLong("proxy-protocol"), help: ArgumentHelp("Expect a PROXY protocol header on every connection: off, v1, v2 or auto (either; the value alone means auto).", valueName: "MODE"))
    var proxyProtocol: String?
    @Option(name: [.customLong("proxy-allow-from"), .customLong("proxy-allow-ips")], help: ArgumentHelp("Peers whose PROXY header is believed (default 127.0.0.1,::1; unix sockets always).", valueName: "IPS"))
    var proxyAllowIPs: String?
    @Option(name: .customLong("forwarded-allow-ips"), help: ArgumentHelp("Peers whose X-Forwarded-* headers are believed: IPs, CIDR networks or * (default $FORWARDED_ALLOW_IPS or 127.0.0.1,::1; unix sockets always).", valueName: "IPS"))
    var forwardedAllowIPs: String?
    @Option(name: .customLong("secure-scheme-headers"), help: ArgumentHelp("Headers by which a trusted proxy says https (default X-FORWARDED-PROTOCOL=ssl,X-FORWARDED-PROTO=https,X-FORWARDED-SSL=on).", valueName: "NAME=VALUE,..."))
    var secureSchemeHeaders: String?
    @Flag(name: .customLong("proxy-headers"), inversion: .prefixedNo, help: "Take the client's address from X-Forwarded-For when the peer is trusted (default on).")
    var proxyHeaders: Bool?
    @Option(name: .customLong("header-map"), help: "Request headers with '_' in their names: drop, refuse (400) or dangerous (default drop).")
    var headerMap: String?
    @Option(name: [.customShort("u"), .long], help: ArgumentHelp("Workers run as this user (name or uid); the unix sockets are theirs.", valueName: "USER"))
    var user: String?
    @Option(name: [.customShort("g"), .long], help: ArgumentHelp("Workers run with this group (default: the user's own).", valueName: "GROUP"))
    var group: String?
    @Flag(help: "Workers also get every group the user is a member of.")
    var initgroups = false
    @Option(name: [.customShort("m"), .long], help: "The umask for the unix sockets the server binds (default 0: any local user, nginx's too, may connect).")
    var umask: String?

    /// The settings given on the command line, by config key.
    private var commandLineSettings: [(String, ConfigValue)] {
        var settings: [(String, ConfigValue)] = []
        func add(_ key: String, _ value: String?) { if let value { settings.append((key, .string(value))) } }
        add("app", app)
        if !bind.isEmpty { settings.append(("bind", .array(bind.map { .string($0) }))) }
        add("workers", workers); add("threads", threads); add("timeout", timeout)
        add("graceful_timeout", gracefulTimeout); add("keep_alive", keepAlive); add("header_timeout", headerTimeout)
        add("max_requests", maxRequests); add("max_requests_jitter", maxRequestsJitter); add("backlog", backlog)
        add("chdir", chdir); add("pythonpath", pythonpath)
        if !env.isEmpty { settings.append(("env", .array(env.map { .string($0) }))) }
        add("virtualenv", virtualenv); add("access_logfile", accessLogfile); add("error_logfile", errorLogfile)
        add("log_level", logLevel); add("access_logformat", accessLogformat); add("pid", pid)
        add("limit_request_line", limitRequestLine); add("limit_request_fields", limitRequestFields)
        add("limit_request_field_size", limitRequestFieldSize); add("limit_request_body", limitRequestBody)
        add("interface", interface); add("loop", loop); add("lifespan", lifespan); add("root_path", rootPath)
        add("ws_max_size", wsMaxSize)
        add("protocol", protocolName); add("uwsgi_allow_ips", uwsgiAllowIPs); add("proxy_protocol", proxyProtocol)
        add("proxy_allow_ips", proxyAllowIPs); add("forwarded_allow_ips", forwardedAllowIPs)
        add("secure_scheme_headers", secureSchemeHeaders); add("header_map", headerMap); add("umask", umask)
        if let proxyHeaders { settings.append(("proxy_headers", .boolean(proxyHeaders))) }
        add("user", user); add("group", group)
        if initgroups { settings.append(("initgroups", .boolean(true))) }
        return settings
    }

    /// Defaults, then the config file, then $VIRTUAL_ENV, then the command line.
    func buildConfig() throws(ConfigError) -> ServerConfig {
        var result = ServerConfig()
        if let file = config { try result.load(file: file) }
        if result.virtualenv == nil, let venv = ProcessInfo.processInfo.environment["VIRTUAL_ENV"], !venv.isEmpty {
            result.virtualenv = venv
        }
        for (key, value) in commandLineSettings { try result.set(key, value, source: "the command line") }
        try result.validate()
        try AppLocator(config: result).check(app: try AppReference(parsing: result.app ?? ""))
        return result
    }

    func run() throws {
        let settings: ServerConfig
        do {
            settings = try buildConfig()
        } catch {
            throw ValidationError(error.description)
        }
        if checkConfig {
            print("configuration OK: app \(settings.app ?? ""), \(settings.workers) workers x \(settings.threads) threads, bind \(settings.bind.map(\.description).joined(separator: ", "))")
            return
        }
        Arbiter.rememberStartDirectory()
        if let dir = settings.chdir, !FileManager.default.changeCurrentDirectoryPath(dir) {
            throw ValidationError("cannot change to directory \(dir)")
        }
        for (key, value) in settings.env { setenv(key, value, 1) }

        let errorLog: LogFile
        let accessLog: LogFile?
        do {
            errorLog = try LogFile(path: settings.errorLogfile)
            accessLog = try settings.accessLogfile.map { try LogFile(path: $0, stdout: true) }
        } catch {
            throw ValidationError("\(error)")
        }
        let level = settings.logLevel
        LoggingSystem.bootstrap { _ in ErrorLogHandler(file: errorLog, level: level) }
        let logger = Logger(label: "appserver")
        let command = self
        let arbiter = Arbiter(config: settings, version: appServerVersion, logger: logger, errorLog: errorLog, accessLog: accessLog) {
            try command.buildConfig()
        }
        let status = arbiter.run()
        if status != 0 { throw ExitCode(status) }
    }
}

/// `appserver reload|upgrade|status ...` talk to a running server; anything else starts one. (The
/// server's positional APP argument rules out ArgumentParser's own subcommand dispatch.)
let controlCommands: [String: ParsableCommand.Type] = [
    "reload": ReloadCommand.self, "upgrade": UpgradeCommand.self, "status": StatusCommand.self,
]
/// `--proxy-protocol` without a value means `auto`, as in Gunicorn (ArgumentParser options always take one).
func withProxyProtocolDefault(_ arguments: [String]) -> [String] {
    var result: [String] = []
    for (index, argument) in arguments.enumerated() {
        result.append(argument)
        if argument == "--proxy-protocol" {
            let next = index + 1 < arguments.count ? arguments[index + 1] : nil
            if next.flatMap(ProxyProtocolMode.init(text:)) == nil { result.append("auto") }
        }
    }
    return result
}
let arguments = withProxyProtocolDefault(Array(CommandLine.arguments.dropFirst()))
let parser: ParsableCommand.Type = arguments.first.flatMap { controlCommands[$0] } ?? AppServer.self

// Usage errors exit with status 2 and one line, as Gunicorn's do (ArgumentParser would use 64).
do {
    var command = try parser.parseAsRoot(parser == AppServer.self ? arguments : Array(arguments.dropFirst()))
    try command.run()
} catch let exit as ExitCode {
    Foundation.exit(exit.rawValue)
} catch {
    let code = parser.exitCode(for: error)
    if code == .success {
        parser.exit(withError: error)   // --help, --version
    }
    let message = parser.message(for: error)
    FileHandle.standardError.write(Data("appserver: error: \(message)\n".utf8))
    if message.contains("Usage") == false && error is ValidationError == false {
        FileHandle.standardError.write(Data("See '\(parser.configuration.commandName ?? "appserver") --help'.\n".utf8))
    }
    Foundation.exit(2)
}
