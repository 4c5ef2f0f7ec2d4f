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
    /// Set while a config file's `[secure_scheme_headers]` table is read: its first key replaces the default.
    private var secureSchemeHeadersFromTable = false

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

    /// Every setting, by its canonical name (Gunicorn's config-file name). `--max-requests` on the command
    /// line and `max-requests` in a file name the same setting as `max_requests`.
    public static let settingNames: [String] = [
        "app", "bind", "workers", "threads", "timeout", "graceful_timeout", "keep_alive", "header_timeout",
        "max_requests", "max_requests_jitter", "backlog", "chdir", "pythonpath", "env", "virtualenv",
        "access_logfile", "error_logfile", "log_level", "access_logformat", "pid",
        "limit_request_line", "limit_request_fields", "limit_request_field_size", "limit_request_body",
        "interface", "loop", "lifespan", "root_path", "ws_max_size",
        "protocol", "uwsgi_allow_ips", "proxy_protocol", "proxy_allow_ips", "forwarded_allow_ips",
        "secure_scheme_headers", "proxy_headers", "header_map", "umask", "user", "group", "initgroups",
    ]

    static func forwardedAllowDefault() -> AddressAllowList {
        if let text = getenv("FORWARDED_ALLOW_IPS").map({ String(cString: $0) }),
           let list = try? AddressAllowList(parsing: [text], key: "forwarded_allow_ips") {
            return list
        }
        return .loopback
    }

    public static func canonicalName(_ key: String) -> String {
        key.replacingOccurrences(of: "-", with: "_")
    }

    /// Sets one setting from a config file or the command line; `source` names where it came from in errors.
    public mutating func set(_ rawKey: String, _ value: ConfigValue, source: String) throws(ConfigError) {
        let key = Self.canonicalName(rawKey)
        switch key {
        case "app": app = try value.string(key)
        case "bind": bind = try value.strings(key).map { text throws(ConfigError) in try BindSpec(parsing: text) }
            if bind.isEmpty { throw ConfigError.invalidValue(key: key, value: "[]", reason: "at least one address is needed") }
        case "workers": workers = try value.integer(key, min: 1, max: 1024)
        case "threads": threads = try value.integer(key, min: 1, max: 1024)
        case "timeout": timeout = try value.integer(key, min: 0, max: 86_400 * 365)
        case "graceful_timeout": gracefulTimeout = try value.integer(key, min: 0, max: 86_400)
        case "keep_alive": keepAlive = try value.integer(key, min: 0, max: 86_400)
        case "header_timeout": headerTimeout = try value.integer(key, min: 1, max: 86_400)
        case "max_requests": maxRequests = try value.integer(key, min: 0, max: Int.max)
        case "max_requests_jitter": maxRequestsJitter = try value.integer(key, min: 0, max: Int.max)
        case "backlog": backlog = try value.integer(key, min: 1, max: 65_535)
        case "chdir": chdir = try value.string(key)
        case "pythonpath":
            // Gunicorn takes a comma-separated list; a TOML array works too.
            pythonpath = try value.strings(key).flatMap { $0.split(separator: ",").map { $0.trimmingWhitespace() } }.filter { !$0.isEmpty }
        case "env":
            for pair in try value.strings(key) {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                    throw ConfigError.invalidValue(key: key, value: pair, reason: "expected KEY=VALUE")
                }
                env[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
        case "virtualenv": virtualenv = try value.string(key)
        case "access_logfile": accessLogfile = try value.string(key)
        case "error_logfile", "log_file": errorLogfile = try value.string(key)
        case "log_level":
            let text = try value.string(key).lowercased()
            guard let level = LogLevel(rawValue: text == "warn" ? "warning" : text) else {
                throw ConfigError.invalidValue(key: key, value: text, reason: "expected one of debug, info, warning, error, critical")
            }
            logLevel = level
        case "access_logformat": accessLogformat = try value.string(key)
        case "pid": pidfile = try value.string(key)
        case "limit_request_line": limitRequestLine = try value.integer(key, min: 0, max: 8190)
        case "limit_request_fields": limitRequestFields = try value.integer(key, min: 0, max: 32768)
        case "limit_request_field_size": limitRequestFieldSize = try value.integer(key, min: 0, max: 65_536)
        case "limit_request_body": limitRequestBody = Int64(try value.integer(key, min: 0, max: Int.max))
        case "interface": interface = try value.choice(key, of: Interface.self)
        case "loop": loop = try value.choice(key, of: EventLoopKind.self)
        case "lifespan": lifespan = try value.choice(key, of: Lifespan.self)
        case "root_path":
            rootPath = try value.string(key)
            if !rootPath.isEmpty && (!rootPath.hasPrefix("/") || rootPath.hasSuffix("/")) {
                throw ConfigError.invalidValue(key: key, value: rootPath, reason: "expected a path like /api (leading /, no trailing /)")
            }
        case "ws_max_size": wsMaxSize = try value.integer(key, min: 1, max: 1 << 30)
        case "protocol": protocolName = try value.choice(key, of: ListenerProtocol.self)
        case "uwsgi_allow_ips", "uwsgi_allow_from": uwsgiAllowIPs = try AddressAllowList(parsing: value.strings(key), key: key)
        case "proxy_protocol":
            let text = value == .boolean(true) ? "auto" : value == .boolean(false) ? "off" : try value.string(key)
            guard let mode = ProxyProtocolMode(text: text) else {
                throw ConfigError.invalidValue(key: key, value: text, reason: "expected one of off, v1, v2, auto")
            }
            proxyProtocol = mode
        case "proxy_allow_ips", "proxy_allow_from": proxyAllowIPs = try AddressAllowList(parsing: value.strings(key), key: key)
        case "forwarded_allow_ips": forwardedAllowIPs = try AddressAllowList(parsing: value.strings(key), key: key)
        case "secure_scheme_headers":
            secureSchemeHeaders = try SecureSchemeHeaders(parsing: value.strings(key).joined(separator: ","), key: key)
        case _ where key.hasPrefix("secure_scheme_headers."):
            // A `[secure_scheme_headers]` table in a config file: it replaces Gunicorn's default map.
            if !secureSchemeHeadersFromTable { secureSchemeHeaders = SecureSchemeHeaders(entries: []) }
            secureSchemeHeadersFromTable = true
            secureSchemeHeaders.set(name: String(rawKey.dropFirst("secure_scheme_headers.".count)), secureValue: try value.string(key))
        case "proxy_headers": proxyHeaders = try value.boolean(key)
        case "header_map": headerMap = try value.choice(key, of: HeaderMapMode.self)
        case "umask":
            let text = try value.string(key)
            guard let mask = Self.parseAutoInteger(text), mask >= 0, mask <= 0o777 else {
                throw ConfigError.invalidValue(key: key, value: text, reason: "expected a file mode mask from 0 to 0o777 (like 0, 0o007, 0x1F or 18)")
            }
            umask = mode_t(mask)
        case "user":
            let text = try value.string(key)
            guard let user = ProcessUser(text) else {
                throw ConfigError.invalidValue(key: key, value: text, reason: "no such user")
            }
            self.user = user
        case "group":
            let text = try value.string(key)
            if let gid = gid_t(text) {
                group = gid
            } else if let entry = getgrnam(text) {
                group = entry.pointee.gr_gid
            } else {
                throw ConfigError.invalidValue(key: key, value: text, reason: "no such group")
            }
        case "initgroups": initgroups = try value.boolean(key)
        default: throw ConfigError.unknownKey(rawKey, source: source)
        }
    }

    /// Reads a TOML config file on top of the current settings.
    public mutating func load(file path: String) throws(ConfigError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError.configFile(path: path, reason: "cannot be read (\(Self.errnoText(of: error)))")
        }
        let entries: [(key: String, value: ConfigValue, line: Int)]
        do {
            entries = try TOMLReader.parse(text)
        } catch {
            throw ConfigError.configFile(path: path, reason: error.description)
        }
        for entry in entries {
            do {
                try set(entry.key, entry.value, source: "\(path) line \(entry.line)")
            } catch {
                if case .unknownKey = error { throw error }
                throw ConfigError.configFile(path: path, reason: "line \(entry.line): \(error)")
            }
        }
    }

    /// Checks the settings as a whole once everything is read.
    public func validate() throws(ConfigError) {
        guard let app, !app.isEmpty else {
            throw ConfigError.app("no app given: name it as MODULE:CALLABLE, for example mysite.wsgi:application")
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
        }
        if maxRequestsJitter > 0 && maxRequests == 0 {
            throw ConfigError.invalidValue(key: "max_requests_jitter", value: "\(maxRequestsJitter)", reason: "needs max_requests")
        }
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

    public init(parsing text: String) throws(ConfigError) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        module = String(parts[0])
        callable = parts.count > 1 ? String(parts[1]) : "application"
        let identifier = #/^[A-Za-z_][A-Za-z0-9_]*$/#
        let moduleOK = !module.isEmpty && module.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { $0.wholeMatch(of: identifier) != nil }
        let callableOK = !callable.isEmpty && callable.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { $0.wholeMatch(of: identifier) != nil }
        guard moduleOK, callableOK else {
            throw ConfigError.app("'\(text)' is not an app reference: expected MODULE:CALLABLE, for example mysite.wsgi:application")
        }
    }
}

extension ConfigValue {
    func string(_ key: String) throws(ConfigError) -> String {
        switch self {
        case .string(let s): return s
        case .integer(let i): return String(i)
        default: throw ConfigError.invalidValue(key: key, value: "\(self.text)", reason: "expected a string")
        }
    }

    func strings(_ key: String) throws(ConfigError) -> [String] {
        if case .array(let items) = self { return try items.map { item throws(ConfigError) in try item.string(key) } }
        return [try string(key)]
    }

    func boolean(_ key: String) throws(ConfigError) -> Bool {
        switch self {
        case .boolean(let b): return b
        case .string(let s):
            switch s.lowercased() {
            case "true", "yes", "on", "1": return true
            case "false", "no", "off", "0": return false
            default: break
            }
        case .integer(let i) where i == 0 || i == 1: return i == 1
        default: break
        }
        throw ConfigError.invalidValue(key: key, value: text, reason: "expected true or false")
    }

    func choice<Choice: RawRepresentable & CaseIterable>(_ key: String, of type: Choice.Type) throws(ConfigError) -> Choice
        where Choice.RawValue == String {
        let text = try string(key).lowercased()
        guard let choice = Choice(rawValue: text) else {
            throw ConfigError.invalidValue(key: key, value: text, reason: "expected one of " + Choice.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return choice
    }

    func integer(_ key: String, min: Int, max: Int) throws(ConfigError) -> Int {
        let number: Int
        switch self {
        case .integer(let i): number = i
        case .string(let s):
            guard let i = Int(s.trimmingWhitespace()) else { throw ConfigError.invalidValue(key: key, value: s, reason: "expected a whole number") }
            number = i
        default: throw ConfigError.invalidValue(key: key, value: text, reason: "expected a whole number")
        }
        guard number >= min && number <= max else {
            throw ConfigError.invalidValue(key: key, value: String(number), reason: max == Int.max ? "must be at least \(min)" : "must be from \(min) to \(max)")
        }
        return number
    }

    var text: String {
        switch self {
        case .string(let s): return s
        case .integer(let i): return String(i)
        case .float(let d): return String(d)
        case .boolean(let b): return String(b)
        case .array(let items): return "[" + items.map(\.text).joined(separator: ", ") + "]"
        }
    }
}
