import Foundation

/// Everything one run of the server is configured with. Defaults follow Gunicorn's.
public struct ServerConfig: Equatable, Sendable {
    /// The app, `module:callable` (`:application` when the callable is left out).
    public var app: String? = nil
    public var bind: [BindSpec] = [BindSpec(.tcp(host: "127.0.0.1", port: 8000))]
    public var workers = 1
    public var threads = 1
    /// Seconds a worker may stay silent, or one request may run, before it is killed. 0 disables.
    public var timeout = 30
    public var gracefulTimeout = 30
    /// Seconds an idle keep-alive connection is kept open.
    public var keepAlive = 2
    /// Seconds a client has to send a whole request head (slow clients cannot pin a worker).
    public var headerTimeout = 10
    public var maxRequests = 0
    public var maxRequestsJitter = 0
    public var backlog = 2048
    public var chdir: String? = nil
    public var pythonpath: [String] = []
    public var env: [String: String] = [:]
    public var virtualenv: String? = nil
    public var accessLogfile: String? = nil
    public var errorLogfile = "-"
    public var logLevel = LogLevel.info
    public var accessLogformat = ServerConfig.defaultAccessLogFormat
    public var pidfile: String? = nil
    public var limitRequestLine = 4094
    public var limitRequestFields = 100
    public var limitRequestFieldSize = 8190
    /// Largest request body accepted, in bytes; 0 means no limit.
    public var limitRequestBody: Int64 = 0
    /// The gateway interface: WSGI, ASGI 3, or whichever the callable is (a coroutine function: ASGI).
    public var interface = Interface.auto
    /// ASGI: the event loop (uvloop when installed, for `auto`).
    public var loop = EventLoopKind.auto
    /// ASGI: run the app's lifespan protocol (`auto`: if the app supports it).
    public var lifespan = Lifespan.auto
    /// ASGI: where the app is mounted (the scope's `root_path`).
    public var rootPath = ""
    /// ASGI: the largest websocket message accepted, in bytes.
    public var wsMaxSize = 16 * 1024 * 1024

    // The edge: what the listeners speak and whom they believe (README, "Behind a proxy").
    /// What listeners without a scheme of their own speak.
    public var protocolName = ListenerProtocol.http
    /// Peers whose uwsgi packets are served (unix-socket peers always are).
    public var uwsgiAllowIPs = AddressAllowList.loopback
    /// Whether listeners without a scheme of their own expect a PROXY protocol header.
    public var proxyProtocol = ProxyProtocolMode.off
    /// Peers whose PROXY protocol header is believed (unix-socket peers always are).
    public var proxyAllowIPs = AddressAllowList.loopback
    /// Peers whose X-Forwarded-* headers are believed (unix-socket peers always are); Gunicorn's
    /// default comes from $FORWARDED_ALLOW_IPS.
    public var forwardedAllowIPs = ServerConfig.forwardedAllowDefault()
    /// Headers by which a trusted proxy says the client used https.
    public var secureSchemeHeaders = SecureSchemeHeaders.gunicornDefault
    /// Take the client's address from X-Forwarded-For when the peer is trusted (Uvicorn's --proxy-headers).
    public var proxyHeaders = true
    /// Request headers whose names hold `_`.
    public var headerMap = HeaderMapMode.drop
    /// The umask unix sockets are created with (Gunicorn's default 0: anyone on the machine, nginx's
    /// www-data among them, may connect; restrict with the directory's permissions or `umask`).
    public var umask: mode_t = 0
    /// Workers switch to this user and group (Gunicorn's `user`, `group`), and the unix sockets the
    /// server binds are given to them. A user without a group takes the user's own primary group.
    public var user: ProcessUser? = nil
    public var group: gid_t? = nil
    /// Workers also get every group the user is a member of (Gunicorn's `initgroups`).
    public var initgroups = false

    // Gunicorn's settings beyond those (SettingsTable.swift says what each does).
    public var configFile: String? = nil
    public var checkConfig = false
    public var printConfig = false
    /// `-k` as given (its interface is in `interface`).
    public var workerClass: String? = nil
    /// `-k` names a Python class appserver does not know by name: the builder imports it (`adoptWorkerClass`).
    public internal(set) var workerClassToDescribe: String? = nil
    public var preloadApp = false
    public var reload = false
    public var reloadEngine = "auto"
    public var reloadExtraFiles: [String] = []
    public var reusePort = false
    public var sendfile = true
    public var daemon = false
    public var workerTmpDir: String? = nil
    public var captureOutput = false
    public var logconfig: String? = nil
    public var logconfigDict: ConfigValue? = nil
    public var logconfigJSON: String? = nil
    public var procName: String? = nil
    /// statsd (Gunicorn's): where the arbiter sends the metrics, their prefix, dogstatsd tags.
    public var statsdHost: String? = nil
    public var statsdPrefix = ""
    public var dogstatsdTags = ""
    public var enableBacklogMetric = false
    /// Where the arbiter serves /metrics (Prometheus), /healthz and /readyz; nil: nowhere (unless
    /// systemd passes a socket named `metrics`).
    public var metricsBind: BindAddress? = nil
    /// Seconds a graceful stop keeps serving after /readyz turned 503, so that a load balancer's health
    /// check takes this server out before its sockets close.
    public var drainDelay = 0
    /// The request id's header: passed through when a request has it, made otherwise (empty: none).
    public var requestIDHeader = "X-Request-ID"
    /// The server hooks a Python config file defines (the functions stay in its interpreter).
    public var hooks: [String] = []
    /// Gunicorn settings accepted without effect, as given (for `--print-config`).
    public var inertSettings: [String: ConfigValue] = [:]
    /// What reading the settings found worth saying (a capped value, a setting without effect), logged at start.
    public var notes: [Note] = []

    public struct Note: Equatable, Sendable {
        public enum Level: Sendable { case info, warning }
        public var level: Level
        public var text: String
    }

    /// The value a Python config file gives a hook's name (the function itself stays in Python).
    public static let hookMarker = "<server hook>"

    public enum Interface: String, CaseIterable, Sendable { case auto, wsgi, asgi }
    public enum EventLoopKind: String, CaseIterable, Sendable { case auto, asyncio, uvloop }
    public enum Lifespan: String, CaseIterable, Sendable { case auto, on, off }

    public static let defaultAccessLogFormat = #"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#

    public enum LogLevel: String, CaseIterable, Sendable, Comparable {
        case debug, info, warning, error, critical
        public static func < (a: LogLevel, b: LogLevel) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    public init() {}

    static func forwardedAllowDefault() -> AddressAllowList {
        if let text = getenv("FORWARDED_ALLOW_IPS").map({ String(cString: $0) }),
           let list = try? AddressAllowList(parsing: [text], key: "forwarded_allow_ips") {
            return list
        }
        return .loopback
    }

    /// Sets one setting by any of its keys (dashes or underscores) from a config file, the environment
    /// or the command line; `source` names where it came from in errors.
    public mutating func set(_ key: String, _ value: ConfigValue, source: String) throws(ConfigError) {
        guard let row = SettingsTable.row(for: key) else { throw ConfigError.unknownKey(key, source: source) }
        try row.apply(&self, value)
    }

    /// Gunicorn's defaults that come from the environment: `WEB_CONCURRENCY` workers, and
    /// `0.0.0.0:$PORT` when `PORT` is set (as on Heroku-like platforms).
    public mutating func applyEnvironmentDefaults(_ environment: [String: String]) {
        if let text = environment["WEB_CONCURRENCY"], let count = Int(text), count >= 1, count <= 1024 { workers = count }
        if let text = environment["PORT"], let port = Int(text), port > 0, port < 65_536 {
            bind = [BindSpec(.tcp(host: "0.0.0.0", port: port))]
        }
    }

    /// `-k`: Gunicorn's worker classes, as the interface they serve; gevent and eventlet are refused. A
    /// Python path appserver does not know (a project's UvicornWorker subclass) waits for the builder to
    /// describe it (`adoptWorkerClass`).
    mutating func setWorkerClass(_ name: String) throws(ConfigError) {
        workerClassToDescribe = nil
        if let known = try Self.interface(ofWorkerClass: name) {
            interface = known
        } else if Self.isPythonPath(name) {
            workerClassToDescribe = name
        } else {
            throw ConfigError.invalidValue(key: "worker_class", value: name, reason: "not a worker class appserver knows: use sync, gthread (WSGI) or uvicorn.workers.UvicornWorker (ASGI)")
        }
        workerClass = name
    }

    /// The interface of a worker class appserver knows by name; nil for any other name.
    static func interface(ofWorkerClass name: String) throws(ConfigError) -> Interface? {
        let short = name.hasPrefix("egg:gunicorn#") ? String(name.dropFirst("egg:gunicorn#".count)) : name
        switch short {
        case "sync", "gthread", "gunicorn.workers.sync.SyncWorker", "gunicorn.workers.gthread.ThreadWorker":
            return .wsgi
        case "uvicorn.workers.UvicornWorker", "uvicorn.workers.UvicornH11Worker", "uvicorn_worker.UvicornWorker",
             "uvicorn_worker.UvicornH11Worker", "uvicorn_worker._workers.UvicornWorker", "uvicorn_worker._workers.UvicornH11Worker",
             "asgi", "gunicorn.workers.gasgi.ASGIWorker":
            return .asgi
        case "gevent", "eventlet", "tornado", "gaiohttp", "aiohttp.GunicornWebWorker", "aiohttp.worker.GunicornWebWorker":
            throw refusedWorkers(short)
        default:
            if short.hasPrefix("gevent") || short.hasPrefix("eventlet") || short.contains("Gevent") || short.contains("Eventlet") {
                throw refusedWorkers("gevent and eventlet")
            }
            return nil
        }
    }

    /// The refusal of a worker family appserver does not offer, with what to use instead.
    private static func refusedWorkers(_ family: String) -> ConfigError {
        .refused(key: "worker_class", reason: "\(family) workers are not offered: use gthread (-k gthread --threads N) for a WSGI app that waits on I/O, or an ASGI app (-k uvicorn.workers.UvicornWorker)")
    }

    /// `package.module.Class`: dotted Python identifiers, at least a module and a name.
    static func isPythonPath(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count >= 2 && parts.allSatisfy { part in
            guard let first = part.first, first == "_" || first.isLetter else { return false }
            return part.allSatisfy { $0 == "_" || $0.isLetter || $0.isNumber }
        }
    }

    /// Uvicorn's Config arguments a UvicornWorker subclass's CONFIG_KWARGS may set, as the setting each
    /// is here. (Gunicorn's UvicornWorker lays CONFIG_KWARGS over the settings, so they win here too.)
    static let uvicornConfigSettings: [String: String] = [
        "loop": "asgi_loop", "lifespan": "asgi_lifespan", "root_path": "root_path", "ws_max_size": "ws_max_size",
        "timeout_keep_alive": "keepalive", "limit_max_requests": "max_requests", "forwarded_allow_ips": "forwarded_allow_ips",
    ]

    /// The worker class `path` as described (with Python): the first of its bases appserver knows gives
    /// the interface, and an ASGI worker's CONFIG_KWARGS set the settings they name.
    mutating func adoptWorkerClass(_ path: String, bases: [String], configKwargs: [String: ConfigValue]) throws(ConfigError) {
        var found: Interface?
        for base in bases {
            if let known = try Self.interface(ofWorkerClass: base) { found = known; break }
        }
        guard let found else {
            throw ConfigError.invalidValue(key: "worker_class", value: path, reason: "it derives from no worker class appserver knows: use sync, gthread (WSGI) or uvicorn.workers.UvicornWorker (ASGI)")
        }
        interface = found
        workerClassToDescribe = nil
        guard found == .asgi else { return }
        for (key, value) in configKwargs.sorted(by: { $0.key < $1.key }) {
            if let setting = Self.uvicornConfigSettings[key] {
                do {
                    try set(setting, value, source: "\(path).CONFIG_KWARGS")
                } catch {
                    throw ConfigError.invalidValue(key: "worker_class", value: path, reason: "its CONFIG_KWARGS['\(key)']: \(error)")
                }
            } else if !((key == "http" || key == "ws") && value == .string("auto")) {
                notes.append(.init(level: .info, text: "\(path).CONFIG_KWARGS['\(key)'] has no effect: a Uvicorn option appserver's own HTTP and websocket layer does not take"))
            }
        }
    }

    /// A TOML config file's settings (nested tables are values, as in Python), each with the line it
    /// starts on, for messages.
    public static func readTOML(file path: String) throws(ConfigError) -> [(key: String, value: ConfigValue, line: Int?)] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError.configFile(path: path, reason: "cannot be read (\(Self.errnoText(of: error)))")
        }
        let entries: [(key: String, value: ConfigValue)]
        do {
            entries = try TOMLConfig.parse(text)
        } catch {
            throw ConfigError.configFile(path: path, reason: error.description)
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return entries.map { entry in
            let line = lines.firstIndex { line in
                let head = line.drop { $0 == " " || $0 == "\t" }
                let bare = head.hasPrefix("\"") || head.hasPrefix("'") ? head.dropFirst() : head
                return bare.hasPrefix(entry.key) && (bare.dropFirst(entry.key.count).first.map { " \t=\"'.".contains($0) } ?? false)
                    || head.hasPrefix("[\(entry.key)]") || head.hasPrefix("[\(entry.key).")
            }
            return (entry.key, entry.value, line.map { $0 + 1 })
        }
    }

    /// Reads a TOML config file on top of the current settings; an unknown key is an error here
    /// (appserver's own format), with its line and the nearest known name.
    public mutating func load(file path: String) throws(ConfigError) {
        for entry in try Self.readTOML(file: path) {
            let at = entry.line.map { "line \($0): " } ?? ""
            do {
                try set(entry.key, entry.value, source: path)
            } catch {
                if case .unknownKey(let key, _) = error {
                    throw ConfigError.configFile(path: path, reason: "\(at)unknown setting '\(key)'\(SettingsTable.suggestion(for: key).map { " (did you mean '\($0)'?)" } ?? "")")
                }
                throw ConfigError.configFile(path: path, reason: "\(at)\(error)")
            }
        }
    }

    /// Checks the settings as a whole once everything is read; with `embeddedPython` (major.minor),
    /// also that the virtualenv was made by that Python.
    public func validate(embeddedPython: String? = nil) throws(ConfigError) {
        guard let app, !app.isEmpty else {
            throw ConfigError.app("no app given: name it as MODULE:CALLABLE, for example mysite.wsgi:application (or wsgi_app in the config file)")
        }
        _ = try AppReference(parsing: app)
        if let chdir {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: chdir, isDirectory: &isDir), isDir.boolValue else {
                throw ConfigError.invalidValue(key: "chdir", value: chdir, reason: "no such directory")
            }
        }
        if let venv = virtualenv {
            guard FileManager.default.fileExists(atPath: venv + "/pyvenv.cfg") else {
                throw ConfigError.invalidValue(key: "virtualenv", value: venv, reason: "not a virtualenv (no pyvenv.cfg)")
            }
            if let embedded = embeddedPython, let made = Self.pythonVersion(ofVirtualenv: venv), made != embedded {
                // Its packages (and compiled extensions) are for another Python: importing would fail
                // with a misleading "No module named ...".
                throw ConfigError.invalidValue(key: "virtualenv", value: venv, reason: """
                    it was made by Python \(made), and this appserver embeds Python \(embedded), which cannot use its packages: \
                    make the virtualenv with python\(embedded) (python\(embedded) -m venv DIR, then install the app's requirements), \
                    or serve it with an appserver built for Python \(made) (make build PYTHON=python\(made)), installed as \
                    appserver-python\(made) beside this one or on PATH, which this one then hands the server over to
                    """)
            }
        }
        try LogConfigFiles.check(self)
        if maxRequestsJitter > 0 && maxRequests == 0 {
            throw ConfigError.invalidValue(key: "max_requests_jitter", value: "\(maxRequestsJitter)", reason: "needs max_requests")
        }
    }

    /// The major.minor of the Python that made a virtualenv, from its pyvenv.cfg (`version = 3.12.1`, or
    /// uv's `version_info = 3.12.1.final.0`); nil when it does not say.
    public static func pythonVersion(ofVirtualenv path: String) -> String? {
        guard let text = try? String(contentsOfFile: path + "/pyvenv.cfg", encoding: .utf8) else { return nil }
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
            guard parts.count == 2, parts[0] == "version" || parts[0] == "version_info" else { continue }
            let numbers = parts[1].split(separator: ".")
            if numbers.count >= 2, Int(numbers[0]) != nil, Int(numbers[1]) != nil { return "\(numbers[0]).\(numbers[1])" }
        }
        return nil
    }

    /// An integer written in any base Python's `int(text, 0)` reads (`0o22`, `0x12`, `18`), and a
    /// leading-zero octal (`022`, `0022`) as in Gunicorn's config examples and shell umasks.
    static func parseAutoInteger(_ text: String) -> Int? {
        let t = text.trimmingWhitespace().lowercased().replacingOccurrences(of: "_", with: "")
        if t.hasPrefix("0o") { return Int(t.dropFirst(2), radix: 8) }
        if t.hasPrefix("0x") { return Int(t.dropFirst(2), radix: 16) }
        if t.hasPrefix("0b") { return Int(t.dropFirst(2), radix: 2) }
        if t.count > 1 && t.hasPrefix("0") { return Int(t.dropFirst(), radix: 8) }
        return Int(t)
    }

    private static func errnoText(of error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.code == NSFileReadNoSuchFileError { return "no such file" }
        if ns.code == NSFileReadNoPermissionError { return "permission denied" }
        return ns.localizedDescription
    }
}

/// A user the workers run as: its uid, name and primary group, looked up when the setting is read.
public struct ProcessUser: Equatable, Sendable {
    public var uid: uid_t
    public var name: String
    public var primaryGroup: gid_t

    /// A user name, or a uid (which need not have a passwd entry).
    public init?(_ text: String) {
        if let entry = getpwnam(text) ?? uid_t(text).flatMap({ getpwuid($0) }) {
            uid = entry.pointee.pw_uid
            name = String(cString: entry.pointee.pw_name)
            primaryGroup = entry.pointee.pw_gid
        } else if let uid = uid_t(text) {
            self.uid = uid
            name = text
            primaryGroup = getegid()
        } else {
            return nil
        }
    }
}

/// `module.path:callable`, the app's address inside Python.
public struct AppReference: Equatable, Sendable {
    public var module: String
    public var callable: String

    public init(module: String, callable: String) {
        self.module = module
        self.callable = callable
    }

    /// `module:callable`, `module:attr.chain`, or a factory call with literal arguments,
    /// `module:create_app()` or `module:create_app('prod', debug=False)` (Gunicorn 20.1+).
    public init(parsing text: String) throws(ConfigError) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        module = String(parts[0])
        callable = parts.count > 1 ? String(parts[1]).trimmingWhitespace() : "application"
        let identifier = #/^[A-Za-z_][A-Za-z0-9_]*$/#
        let moduleOK = !module.isEmpty && module.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { $0.wholeMatch(of: identifier) != nil }
        let name = callable.firstIndex(of: "(").map { String(callable[..<$0]) } ?? callable
        let callOK = name == callable || callable.hasSuffix(")")
        let callableOK = callOK && !name.isEmpty && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { $0.wholeMatch(of: identifier) != nil }
        guard moduleOK, callableOK else {
            throw ConfigError.app("'\(text)' is not an app reference: expected MODULE:CALLABLE or MODULE:FACTORY(ARGS), for example mysite.wsgi:application")
        }
    }

    /// Whether the callable is a factory to call (`create_app()`).
    public var isFactoryCall: Bool { callable.hasSuffix(")") }
}
