import Foundation

/// Every setting, once: Gunicorn's settings under Gunicorn's names (config key, flags, meaning),
/// appserver's own after them. A row is implemented, accepted without effect (with the reason logged),
/// refused unless its value asks for nothing (with what to use instead), or a server hook.
public enum SettingsTable {
    public static let rows: [Setting] = configFile + app + socket + workers + limits + edge + mechanics + logging
        + naming + metrics + hooks + development + tls + http + asgi

    /// Looks a setting up by any of its keys; dashes and underscores are the same.
    public static func row(for key: String) -> Setting? {
        index[key.replacingOccurrences(of: "-", with: "_").lowercased()]
    }

    /// Looks a setting up by a command-line flag (`-w`, `--workers`).
    public static func row(forFlag flag: String) -> Setting? { flagIndex[flag] }

    public static var longFlags: [String] { flagIndex.keys.filter { $0.hasPrefix("--") }.sorted() }

    private static let index: [String: Setting] = {
        var result: [String: Setting] = [:]
        for row in rows { for key in row.keys { precondition(result.updateValue(row, forKey: key) == nil, "setting key \(key) twice") } }
        return result
    }()

    private static let flagIndex: [String: Setting] = {
        var result: [String: Setting] = [:]
        for row in rows { for flag in row.flags { precondition(result.updateValue(row, forKey: flag) == nil, "flag \(flag) twice") } }
        return result
    }()

    // MARK: the rows, in Gunicorn's sections

    static let configFile: [Setting] = [
        .optionalText("config", flags: ["-c", "--config"], .configFile, reloadable: false, metavar: "FILE",
                      help: "A config file: Python (gunicorn.conf.py, or python:MODULE) or TOML (.toml), from the directory the server starts in (also on a reload). Default: ./gunicorn.conf.py when it exists.",
                      \.configFile),
        Setting("check_config", flags: ["--check-config"], form: .flag(negatable: false), .configFile, reloadable: false,
                help: "Check the configuration and the app's location, then exit.",
                apply: { c, v throws(ConfigError) in c.checkConfig = try v.boolean("check_config") }, render: { _ in nil }),
        Setting("print_config", flags: ["--print-config"], form: .flag(negatable: false), .configFile, reloadable: false,
                help: "Print the whole configuration as a TOML config file, then exit.",
                apply: { c, v throws(ConfigError) in c.printConfig = try v.boolean("print_config") }, render: { _ in nil }),
    ]

    static let app: [Setting] = [
        Setting("wsgi_app", aliases: ["app"], form: .fileOnly, .app,
                help: "The app, MODULE:CALLABLE, or MODULE:FACTORY(literal args) (the command line's APP argument wins).",
                apply: { c, v throws(ConfigError) in c.app = try v.optionalString("wsgi_app") }, render: { $0.app.map(ConfigValue.string) }),
        Setting("worker_class", flags: ["-k", "--worker-class"], .app, reloadable: true,
                help: "Gunicorn's worker class, mapped to an interface: sync and gthread are WSGI (threads from --threads), uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker and asgi are ASGI; a project's subclass of one of them (module.Class) is imported for its base, and a UvicornWorker's CONFIG_KWARGS set loop, lifespan, root_path, ws_max_size, timeout_keep_alive, limit_max_requests and forwarded_allow_ips.",
                apply: { c, v throws(ConfigError) in try c.setWorkerClass(try v.string("worker_class")) },
                render: { $0.workerClass.map(ConfigValue.string) }),
        .choice("interface", flags: ["--interface"], .app, help: "The gateway interface: auto (ASGI for a coroutine function, else WSGI), wsgi or asgi.", \.interface),
        .optionalText("chdir", flags: ["--chdir"], .app, metavar: "DIR", help: "Change to this directory (from the one the server starts in) before loading the app.", \.chdir),
        Setting("pythonpath", flags: ["--pythonpath"], form: .value(metavar: "DIRS"), .app,
                help: "Comma-separated directories added to the Python path.",
                apply: { c, v throws(ConfigError) in
                    // Gunicorn takes a comma-separated list; a TOML array works too.
                    c.pythonpath = try v.strings("pythonpath").flatMap { $0.split(separator: ",").map { $0.trimmingWhitespace() } }.filter { !$0.isEmpty }
                },
                render: { $0.pythonpath.isEmpty ? nil : .string($0.pythonpath.joined(separator: ",")) }),
        .optionalText("virtualenv", flags: ["--virtualenv"], .app, reloadable: false, metavar: "DIR",
                      help: "The app's virtualenv (default: $VIRTUAL_ENV), from the directory the server starts in; one made by another CPython is served by appserver-python3.X beside this binary or on PATH.", \.virtualenv),
        Setting("raw_env", aliases: ["env"], flags: ["-e", "--env"], form: .repeated(metavar: "KEY=VALUE"), .app,
                help: "An environment variable for the app (repeatable); a reload removes the ones the file no longer sets.",
                apply: { c, v throws(ConfigError) in
                    c.env = [:]
                    for pair in try v.strings("raw_env") {
                        guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                            throw ConfigError.invalidValue(key: "raw_env", value: pair, reason: "expected KEY=VALUE")
                        }
                        c.env[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
                    }
                },
                render: { $0.env.isEmpty ? nil : .array($0.env.sorted { $0.key < $1.key }.map { .string("\($0.key)=\($0.value)") }) }),
        .boolean("preload_app", aliases: ["preload"], flags: ["--preload"], .app, reloadable: false,
                 help: "Import the app once in the arbiter before forking the workers (they share its memory); HUP then restarts workers from the loaded app, USR2 loads new code.",
                 \.preloadApp),
        .refused("paste", flags: ["--paste", "--paster"], .app, reason: "PasteDeploy apps are not served: give the WSGI callable (MODULE:CALLABLE) instead",
                 help: "PasteDeploy config file (Gunicorn)."),
        .refused("raw_paste_global_conf", flags: ["--paste-global"], form: .repeated(metavar: "CONF"), .app,
                 reason: "PasteDeploy apps are not served: give the WSGI callable (MODULE:CALLABLE) instead", help: "PasteDeploy global config (Gunicorn)."),
    ]

    static let socket: [Setting] = [
        Setting("bind", flags: ["-b", "--bind"], form: .repeated(metavar: "ADDRESS"), .socket, reloadable: false,
                help: "Address to listen on: HOST:PORT, [::1]:PORT, unix:PATH, fd://N, with an optional scheme (uwsgi://, http+proxy://); repeatable. Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.",
                apply: { c, v throws(ConfigError) in
                    let specs = try v.strings("bind").flatMap { $0.split(separator: ",").map { $0.trimmingWhitespace() } }
                    c.bind = try specs.map { text throws(ConfigError) in try BindSpec(parsing: text) }
                    if c.bind.isEmpty { throw ConfigError.invalidValue(key: "bind", value: "[]", reason: "at least one address is needed") }
                },
                render: { .array($0.bind.map { .string($0.description) }) }),
        .integer("backlog", flags: ["--backlog"], .socket, reloadable: false, min: 1, max: 65_535, help: "Length of the listen queue.", \.backlog),
        .boolean("reuse_port", flags: ["--reuse-port"], .socket, reloadable: false,
                 help: "Set SO_REUSEPORT on the sockets the server binds.", \.reusePort),
        .integer("umask", flags: ["-m", "--umask"], .socket, reloadable: false, min: 0, max: 0o777,
                 help: "The umask for the unix sockets the server binds (0: any local user, nginx's too, may connect).",
                 octal: true, get: { Int($0.umask) }, set: { $0.umask = mode_t($1) }),
    ]

    static let workers: [Setting] = [
        .integer("workers", flags: ["-w", "--workers"], .workers, min: 1, max: 1024,
                 help: "Worker processes (default $WEB_CONCURRENCY or 1).", \.workers),
        .integer("threads", flags: ["--threads"], .workers, min: 1, max: 1024, help: "Python threads per worker (WSGI).", \.threads),
        .inert("worker_connections", flags: ["--worker-connections"], .workers,
               reason: "it counts connections of Gunicorn's eventlet and gevent workers; appserver's workers take any number",
               help: "Most simultaneous clients of an async worker (Gunicorn)."),
        .integer("max_requests", flags: ["--max-requests"], .workers, min: 0, max: Int.max,
                 help: "Requests a worker serves before it is replaced (0: never).", \.maxRequests),
        .integer("max_requests_jitter", flags: ["--max-requests-jitter"], .workers, min: 0, max: Int.max,
                 help: "Random extra requests added to max_requests per worker.", \.maxRequestsJitter),
        .integer("timeout", flags: ["-t", "--timeout"], .workers, min: 0, max: 86_400 * 365,
                 help: "Seconds a worker may be silent, or a request make no progress, before the worker is replaced (a sync worker) or the request is answered 504 (--threads > 1, ASGI); 0 disables.", \.timeout),
        .integer("graceful_timeout", flags: ["--graceful-timeout"], .workers, min: 0, max: 86_400,
                 help: "Seconds in-flight requests get to finish on a graceful stop.", \.gracefulTimeout),
        .integer("keepalive", aliases: ["keep_alive"], flags: ["--keep-alive"], .workers, min: 0, max: 86_400,
                 help: "Seconds an idle keep-alive connection is kept.", \.keepAlive),
        .integer("header_timeout", flags: ["--header-timeout"], .workers, min: 1, max: 86_400,
                 help: "Seconds a client has to send a request head.", \.headerTimeout),
    ]

    static let limits: [Setting] = [
        // Gunicorn caps the first two rather than refusing a larger value; so does appserver, with a warning.
        .integer("limit_request_line", flags: ["--limit-request-line"], .limits, min: 0, max: Int.max, cap: 8190,
                 help: "Longest request line, in bytes (0: the most, 8190).", \.limitRequestLine),
        .integer("limit_request_fields", flags: ["--limit-request-fields"], .limits, min: 0, max: Int.max, cap: 32768,
                 help: "Most header fields in a request (at most 32768).", \.limitRequestFields),
        .integer("limit_request_field_size", flags: ["--limit-request-field_size", "--limit-request-field-size"], .limits, min: 0, max: Int.max, cap: 65_536,
                 help: "Longest header field, in bytes (at most 65536).", \.limitRequestFieldSize),
        .integer("limit_request_body", flags: ["--limit-request-body"], .limits, min: 0, max: Int.max,
                 help: "Largest request body, in bytes (0: no limit).", get: { Int($0.limitRequestBody) }, set: { $0.limitRequestBody = Int64($1) }),
    ]

    static let edge: [Setting] = [
        .choice("protocol", flags: ["--protocol"], .edge, reloadable: false,
                help: "What listeners without a scheme speak: http, or uwsgi (nginx's uwsgi_pass).", \.protocolName),
        .addresses("uwsgi_allow_ips", aliases: ["uwsgi_allow_from"], flags: ["--uwsgi-allow-from", "--uwsgi-allow-ips"],
                   help: "Peers whose uwsgi packets are served: IPs, CIDR networks or * (unix sockets always).", \.uwsgiAllowIPs),
        Setting("proxy_protocol", flags: ["--proxy-protocol"], form: .optionalValue(metavar: "MODE", implied: "auto"), .edge, reloadable: false,
                help: "Expect a PROXY protocol header on every connection: off, v1, v2 or auto (either; the flag alone means auto).",
                apply: { c, v throws(ConfigError) in
                    let text = v == .boolean(true) ? "auto" : v == .boolean(false) || v == .null ? "off" : try v.string("proxy_protocol")
                    guard let mode = ProxyProtocolMode(text: text) else {
                        throw ConfigError.invalidValue(key: "proxy_protocol", value: text, reason: "expected one of off, v1, v2, auto")
                    }
                    c.proxyProtocol = mode
                },
                render: { .string($0.proxyProtocol.rawValue) }),
        .addresses("proxy_allow_ips", aliases: ["proxy_allow_from"], flags: ["--proxy-allow-from", "--proxy-allow-ips"],
                   help: "Peers whose PROXY header is believed (unix sockets always).", \.proxyAllowIPs),
        .addresses("forwarded_allow_ips", flags: ["--forwarded-allow-ips"],
                   help: "Peers whose X-Forwarded-* headers are believed: IPs, CIDR networks or * (default $FORWARDED_ALLOW_IPS or loopback; unix sockets always).",
                   \.forwardedAllowIPs),
        Setting("secure_scheme_headers", flags: ["--secure-scheme-headers"], form: .value(metavar: "NAME=VALUE,..."), .edge,
                help: "Headers by which a trusted proxy says https (a table in a config file).",
                apply: { c, v throws(ConfigError) in
                    if case .table(let entries) = v {
                        var headers = SecureSchemeHeaders(entries: [])
                        for (name, value) in entries.sorted(by: { $0.key < $1.key }) {
                            headers.set(name: name, secureValue: try value.string("secure_scheme_headers"))
                        }
                        c.secureSchemeHeaders = headers
                    } else {
                        c.secureSchemeHeaders = try SecureSchemeHeaders(parsing: v.strings("secure_scheme_headers").joined(separator: ","), key: "secure_scheme_headers")
                    }
                },
                render: { .table(Dictionary($0.secureSchemeHeaders.entries.map { ($0.name.uppercased(), ConfigValue.string($0.secureValue)) }, uniquingKeysWith: { a, _ in a })) }),
        .boolean("proxy_headers", flags: ["--proxy-headers"], negatable: true, .edge,
                 help: "Take the client's address from X-Forwarded-For when the peer is trusted (Uvicorn's).", \.proxyHeaders),
        .choice("header_map", flags: ["--header-map"], .edge, help: "Request headers with '_' in their names: drop, refuse (400) or dangerous.", \.headerMap),
        Setting("forwarder_headers", flags: ["--forwarder-headers"], .edge,
                help: "Headers with '_' a trusted forwarder may set in the WSGI environ (Gunicorn; appserver takes only its default).",
                apply: { c, v throws(ConfigError) in
                    let names = try v.strings("forwarder_headers").flatMap { $0.split(separator: ",").map { $0.trimmingWhitespace().uppercased() } }.filter { !$0.isEmpty }
                    guard names.isEmpty || Set(names).isSubset(of: ["SCRIPT_NAME", "PATH_INFO"]) else {
                        throw ConfigError.refused(key: "forwarder_headers", reason: "only SCRIPT_NAME and PATH_INFO may come from a forwarder here; mount the app with root_path instead")
                    }
                },
                render: { _ in .string("SCRIPT_NAME,PATH_INFO") }),
    ]

    static let mechanics: [Setting] = [
        .optionalText("pidfile", aliases: ["pid"], flags: ["-p", "--pid"], .mechanics, reloadable: false, metavar: "FILE",
                      help: "Write the arbiter's pid to this file.", \.pidfile),
        Setting("user", flags: ["-u", "--user"], form: .value(metavar: "USER"), .mechanics, reloadable: false,
                help: "Workers run as this user (name or uid); the unix sockets are theirs.",
                apply: { c, v throws(ConfigError) in
                    guard let text = try v.optionalString("user") else { c.user = nil; return }
                    guard let user = ProcessUser(text) else { throw ConfigError.invalidValue(key: "user", value: text, reason: "no such user") }
                    c.user = user
                },
                render: { $0.user.map { .string($0.name) } }),
        Setting("group", flags: ["-g", "--group"], form: .value(metavar: "GROUP"), .mechanics, reloadable: false,
                help: "Workers run with this group (default: the user's own).",
                apply: { c, v throws(ConfigError) in
                    guard let text = try v.optionalString("group") else { c.group = nil; return }
                    if let gid = gid_t(text) { c.group = gid } else if let entry = getgrnam(text) { c.group = entry.pointee.gr_gid } else {
                        throw ConfigError.invalidValue(key: "group", value: text, reason: "no such group")
                    }
                },
                render: { $0.group.map { .integer(Int($0)) } }),
        .boolean("initgroups", flags: ["--initgroups"], .mechanics, reloadable: false,
                 help: "Workers also get every group the user is a member of.", \.initgroups),
        .boolean("daemon", flags: ["-D", "--daemon"], .mechanics, reloadable: false,
                 help: "Detach from the terminal and run in the background (not under systemd: it supervises the process itself).", \.daemon),
        Setting("worker_tmp_dir", flags: ["--worker-tmp-dir"], form: .value(metavar: "DIR"), .mechanics, reloadable: false,
                help: "Gunicorn's heartbeat file directory; appserver's heartbeats live in shared memory, so it only has to exist.",
                apply: { c, v throws(ConfigError) in
                    c.workerTmpDir = try v.optionalString("worker_tmp_dir")
                    if let dir = c.workerTmpDir {
                        var isDir: ObjCBool = false
                        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                            throw ConfigError.invalidValue(key: "worker_tmp_dir", value: dir, reason: "no such directory")
                        }
                    }
                },
                render: { $0.workerTmpDir.map(ConfigValue.string) }),
        .inert("tmp_upload_dir", .mechanics, reason: "request bodies are streamed to the app, never stored in files",
               help: "Directory for request bodies (Gunicorn)."),
        .boolean("sendfile", flags: ["--sendfile"], negatable: true, .mechanics,
                 help: "Send wsgi.file_wrapper files, and files an ASGI app sends by path (Path Send), with sendfile(2) (--no-sendfile: files are read and written, and ASGI apps are not offered Path Send).", \.sendfile),
        .inert("control_socket", flags: ["--control-socket"], .mechanics,
               reason: "appserver's control socket is its own, per arbiter pid: use 'appserver reload|upgrade|status --pid PID'",
               help: "Gunicorn's control socket path."),
        .inert("control_socket_mode", flags: ["--control-socket-mode"], .mechanics,
               reason: "appserver's control socket is its own, per arbiter pid: use 'appserver reload|upgrade|status --pid PID'",
               help: "Gunicorn's control socket mode."),
        .inert("control_socket_disable", flags: ["--no-control-socket"], form: .flag(negatable: false), .mechanics,
               reason: "appserver's control socket is its own, per arbiter pid, and only root and the server's user may use it",
               help: "Disable Gunicorn's control socket."),
        .refused("dirty_apps", flags: ["--dirty-app"], form: .repeated(metavar: "APP"), .mechanics,
                 reason: "Gunicorn's dirty workers are not part of appserver: run background jobs in a task queue (Celery, RQ) or their own service",
                 help: "Gunicorn's dirty (background) apps."),
        .refused("dirty_workers", flags: ["--dirty-workers"], .mechanics, reason: "Gunicorn's dirty workers are not part of appserver: run background jobs in a task queue (Celery, RQ) or their own service",
                 help: "Gunicorn's dirty worker count.", harmless: [.integer(0)]),
        .inert("dirty_timeout", flags: ["--dirty-timeout"], .mechanics, reason: "there are no dirty workers here", help: "Gunicorn's dirty worker timeout."),
        .inert("dirty_threads", flags: ["--dirty-threads"], .mechanics, reason: "there are no dirty workers here", help: "Gunicorn's dirty worker threads."),
        .inert("dirty_graceful_timeout", flags: ["--dirty-graceful-timeout"], .mechanics, reason: "there are no dirty workers here",
               help: "Gunicorn's dirty worker graceful timeout."),
    ]

    static let logging: [Setting] = [
        .optionalText("accesslog", aliases: ["access_logfile"], flags: ["--access-logfile"], .logging, metavar: "FILE",
                      help: "Access log file, '-' for stdout (default: none).", \.accessLogfile),
        .text("access_log_format", aliases: ["access_logformat"], flags: ["--access-logformat"], .logging,
              help: "Access log format, with Gunicorn's atoms; 'json' writes one JSON object a line, the atoms as keys.", \.accessLogformat),
        Setting("request_id_header", flags: ["--request-id-header"], form: .value(metavar: "NAME"), .logging,
                help: "The request id's header: passed through, or made when a request has none, into the access log (%({x-request-id}i)s), error-log entries and the app's environ or scope ('' turns request ids off).",
                apply: { c, v throws(ConfigError) in
                    let name = try v.string("request_id_header")
                    guard name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) }) else {
                        throw ConfigError.invalidValue(key: "request_id_header", value: name, reason: "not a header name")
                    }
                    c.requestIDHeader = name
                },
                render: { .string($0.requestIDHeader) }),
        .text("errorlog", aliases: ["error_logfile", "log_file"], flags: ["--error-logfile", "--log-file"], .logging, metavar: "FILE",
              help: "Error log file, '-' for stderr.", \.errorLogfile),
        Setting("loglevel", aliases: ["log_level"], flags: ["--log-level"], form: .value(metavar: "LEVEL"), .logging,
                help: "debug, info, warning, error or critical.",
                apply: { c, v throws(ConfigError) in
                    let text = try v.string("loglevel").lowercased()
                    guard let level = ServerConfig.LogLevel(rawValue: text == "warn" ? "warning" : text) else {
                        throw ConfigError.invalidValue(key: "loglevel", value: text, reason: "expected one of debug, info, warning, error, critical")
                    }
                    c.logLevel = level
                },
                render: { .string($0.logLevel.rawValue) }),
        .boolean("capture_output", flags: ["--capture-output"], .logging,
                 help: "Send the app's stdout and stderr to the error log file.", \.captureOutput),
        .inert("disable_redirect_access_to_syslog", flags: ["--disable-redirect-access-to-syslog"], form: .flag(negatable: false), .logging,
               reason: "appserver does not log to syslog", help: "Gunicorn's syslog access log switch."),
        Setting("logger_class", flags: ["--logger-class"], .logging,
                help: "Gunicorn's logger class; appserver's logger is built in (configure the app's logging with logconfig_dict).",
                apply: { c, v throws(ConfigError) in
                    let name = try v.optionalString("logger_class") ?? "gunicorn.glogging.Logger"
                    guard ["gunicorn.glogging.Logger", "simple", "glogging.Logger"].contains(name) else {
                        throw ConfigError.refused(key: "logger_class", reason: "appserver's error and access logs are built in; shape them with access_log_format and loglevel, and the app's own logging with logconfig_dict")
                    }
                },
                render: { _ in nil }),
        .optionalText("logconfig", flags: ["--log-config"], .logging, metavar: "FILE",
                      help: "A logging.config.fileConfig file for the app's Python logging in each worker (its %(here)s is the file's directory).", \.logconfig),
        Setting("logconfig_dict", form: .fileOnly, .logging,
                help: "A logging.config.dictConfig dictionary for the app's Python logging in each worker, over Gunicorn's defaults; it takes precedence over logconfig_json and logconfig.",
                apply: { c, v throws(ConfigError) in
                    switch v {
                    case .table(let entries):
                        c.logconfigDict = entries.isEmpty ? nil : v
                        // Gunicorn's own logs are Python loggers that such a dict styles; appserver's are not.
                        // (A Python file's dict that holds objects JSON cannot carry arrives as `logger_names`.)
                        var names: [String] = []
                        if case .table(let loggers)? = entries["loggers"] { names = Array(loggers.keys) }
                        if case .array(let carried)? = entries["logger_names"] { names = carried.compactMap { if case .string(let name) = $0 { name } else { nil } } }
                        if let warning = LogConfigFiles.gunicornLoggersWarning(setting: "logconfig_dict", names: names) { c.notes.append(warning) }
                    case .null: c.logconfigDict = nil
                    default: throw ConfigError.invalidValue(key: "logconfig_dict", value: v.text, reason: "expected a dictionary")
                    }
                },
                render: { $0.logconfigDict }),
        .optionalText("logconfig_json", flags: ["--log-config-json"], .logging, metavar: "FILE",
                      help: "A JSON logging.config.dictConfig file for the app's Python logging in each worker, over Gunicorn's defaults; it takes precedence over logconfig.", \.logconfigJSON),
        .refused("syslog", flags: ["--log-syslog"], form: .flag(negatable: false), .logging,
                 reason: "log to stderr (the default): under systemd it goes to the journal, which forwards to syslog", help: "Gunicorn's syslog switch."),
        .refused("syslog_addr", flags: ["--log-syslog-to"], .logging,
                 reason: "log to stderr (the default): under systemd it goes to the journal, which forwards to syslog", help: "Gunicorn's syslog address.",
                 harmless: [.string("udp://localhost:514"), .string("unix:///var/run/syslog"), .string("unix:///dev/log")]),
        .inert("syslog_prefix", flags: ["--log-syslog-prefix"], .logging, reason: "appserver does not log to syslog", help: "Gunicorn's syslog prefix."),
        .inert("syslog_facility", flags: ["--log-syslog-facility"], .logging, reason: "appserver does not log to syslog", help: "Gunicorn's syslog facility."),
        .inert("enable_stdio_inheritance", flags: ["-R", "--enable-stdio-inheritance"], form: .flag(negatable: false), .logging,
               reason: "workers always inherit the server's stdout and stderr", help: "Gunicorn's stdio inheritance switch."),
    ]

    static let naming: [Setting] = [
        .optionalText("proc_name", aliases: ["name"], flags: ["-n", "--name"], .naming, reloadable: false, metavar: "NAME",
                      help: "A name in the processes' titles ('appserver: master [NAME]'), for ps and top.", \.procName),
        .inert("default_proc_name", .naming, reason: "the title's default name is the app's", help: "Gunicorn's internal default name."),
    ]

    static let metrics: [Setting] = [
        Setting("statsd_host", flags: ["--statsd-host"], form: .value(metavar: "ADDRESS"), .metrics, reloadable: false,
                help: "Send Gunicorn's statsd metrics, from the arbiter, to HOST:PORT (UDP) or unix:PATH.",
                apply: { c, v throws(ConfigError) in
                    guard let text = try v.optionalString("statsd_host"), !text.isEmpty else { c.statsdHost = nil; return }
                    if !text.hasPrefix("unix:") && !text.hasPrefix("/") {
                        let port = text.split(separator: ":").last.flatMap { Int($0) }
                        guard text.contains(":"), let port, port > 0, port < 65_536 else {
                            throw ConfigError.invalidValue(key: "statsd_host", value: text, reason: "expected HOST:PORT or unix:PATH")
                        }
                    }
                    c.statsdHost = text
                },
                render: { $0.statsdHost.map(ConfigValue.string) }),
        .text("statsd_prefix", flags: ["--statsd-prefix"], .metrics, reloadable: false, metavar: "PREFIX",
              help: "A prefix for the statsd metric names (a dot is added).", \.statsdPrefix),
        .text("dogstatsd_tags", flags: ["--dogstatsd-tags"], .metrics, reloadable: false, metavar: "TAGS",
              help: "Datadog tags for every metric, comma-separated (env:prod,app:shop).", \.dogstatsdTags),
        .boolean("enable_backlog_metric", flags: ["--enable-backlog-metric"], .metrics, reloadable: false,
                 help: "Also send gunicorn.backlog, the connections waiting in the listen queues.", \.enableBacklogMetric),
        Setting("metrics_bind", flags: ["--metrics-bind"], form: .value(metavar: "ADDRESS"), .metrics, reloadable: false,
                help: "Serve /metrics (Prometheus), /healthz and /readyz from the arbiter on HOST:PORT, unix:PATH or fd://N (a systemd socket named 'metrics' serves too).",
                apply: { c, v throws(ConfigError) in
                    guard let text = try v.optionalString("metrics_bind"), !text.isEmpty else { c.metricsBind = nil; return }
                    do throws(ConfigError) {
                        c.metricsBind = try BindAddress(parsing: text)
                    } catch {
                        // The address's own reason, under this setting's name.
                        if case .invalidValue(_, _, let reason) = error { throw ConfigError.invalidValue(key: "metrics_bind", value: text, reason: reason) }
                        throw error
                    }
                },
                render: { $0.metricsBind.map { .string($0.description) } }),
        .integer("drain_delay", flags: ["--drain-delay"], .metrics, min: 0, max: 3_600,
                 help: "Seconds a graceful stop keeps serving after /readyz turned 503, before the workers stop accepting (let the load balancer notice).",
                 \.drainDelay),
    ]

    /// Gunicorn's server hooks, in the order of a server's life (README, "Server hooks").
    public static let hookNames = [
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_int", "worker_abort",
        "pre_exec", "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed", "on_exit",
    ]

    static let hooks: [Setting] = hookNames.map { Setting.hook($0) } + [
        "ssl_context", "on_dirty_starting", "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit",
    ].map { name in
        Setting(name, form: .fileOnly, .hooks, support: .refused(name == "ssl_context" ? tlsReason : dirtyReason),
                help: "Gunicorn's \(name) hook.",
                apply: { _, v throws(ConfigError) in
                    if !v.isUnset { throw ConfigError.refused(key: name, reason: name == "ssl_context" ? tlsReason : dirtyReason) }
                },
                render: { _ in nil })
    }
    static let tlsReason = "TLS ends at the proxy in front (nginx, HAProxy): appserver serves plain HTTP or uwsgi behind it (README, \"Behind nginx\")"
    static let dirtyReason = "Gunicorn's dirty workers are not part of appserver: run background jobs in a task queue or their own service"

    static let development: [Setting] = [
        .boolean("reload", flags: ["--reload"], .reload, reloadable: false,
                 help: "Development: restart the workers when a Python file of the app or a --reload-extra-file changes (inotify).", \.reload),
        Setting("reload_engine", flags: ["--reload-engine"], form: .value(metavar: "ENGINE"), .reload, reloadable: false,
                help: "auto, inotify or poll (auto and poll use inotify here).",
                apply: { c, v throws(ConfigError) in
                    let engine = try v.string("reload_engine")
                    guard ["auto", "inotify", "poll"].contains(engine) else {
                        throw ConfigError.invalidValue(key: "reload_engine", value: engine, reason: "expected one of auto, inotify, poll")
                    }
                    c.reloadEngine = engine
                },
                render: { .string($0.reloadEngine) }),
        Setting("reload_extra_files", flags: ["--reload-extra-file"], form: .repeated(metavar: "FILE"), .reload, reloadable: false,
                help: "Files (or glob patterns) that restart the workers too when they change (repeatable; implies nothing without --reload).",
                apply: { c, v throws(ConfigError) in c.reloadExtraFiles = try v.strings("reload_extra_files") },
                render: { $0.reloadExtraFiles.isEmpty ? nil : .array($0.reloadExtraFiles.map(ConfigValue.string)) }),
        .refused("spew", flags: ["--spew"], form: .flag(negatable: false), .reload,
                 reason: "tracing every line the server runs is not offered: use python -m trace or a debugger on the app", help: "Gunicorn's line tracer."),
    ]

    static let tls: [Setting] = [
        ("keyfile", "--keyfile"), ("certfile", "--certfile"), ("ca_certs", "--ca-certs"), ("ciphers", "--ciphers"),
    ].map { .refused($0.0, flags: [$0.1], .tls, reason: tlsReason, help: "Gunicorn's TLS \($0.0).") } + [
        .refused("ssl_version", flags: ["--ssl-version"], .tls, reason: tlsReason, help: "Gunicorn's TLS version.",
                 harmless: [.integer(2), .string("TLS"), .string("PROTOCOL_TLS"), .string("TLS_SERVER"), .string("SSLv23")]),
        .refused("cert_reqs", flags: ["--cert-reqs"], .tls, reason: tlsReason, help: "Gunicorn's client certificate requirement.", harmless: [.integer(0)]),
        .inert("suppress_ragged_eofs", flags: ["--suppress-ragged-eofs"], form: .flag(negatable: false), .tls, reason: "appserver does not serve TLS",
               help: "Gunicorn's TLS ragged EOF switch."),
        .inert("do_handshake_on_connect", flags: ["--do-handshake-on-connect"], form: .flag(negatable: false), .tls, reason: "appserver does not serve TLS",
               help: "Gunicorn's TLS handshake switch."),
    ]

    static let http: [Setting] = [
        Setting("http_protocols", flags: ["--http-protocols"], .http, reloadable: false,
                help: "HTTP versions served: h1 (HTTP/2 ends at the proxy in front).",
                apply: { _, v throws(ConfigError) in
                    let versions = try v.strings("http_protocols").flatMap { $0.split(separator: ",").map { $0.trimmingWhitespace() } }
                    if versions.contains(where: { $0 != "h1" && !$0.isEmpty }) {
                        throw ConfigError.refused(key: "http_protocols", reason: "appserver speaks HTTP/1.1 (and uwsgi); let the proxy in front speak HTTP/2 to clients")
                    }
                },
                render: { _ in .string("h1") }),
        .refused("http2_cleartext", flags: ["--http2-cleartext"], .http, reason: "appserver speaks HTTP/1.1 (and uwsgi); let the proxy in front speak HTTP/2",
                 help: "Gunicorn's h2c switch.", harmless: [.string("off")]),
        .inert("http2_max_concurrent_streams", flags: ["--http2-max-concurrent-streams"], .http, reason: "appserver speaks HTTP/1.1", help: "Gunicorn's HTTP/2 setting."),
        .inert("http2_initial_window_size", flags: ["--http2-initial-window-size"], .http, reason: "appserver speaks HTTP/1.1", help: "Gunicorn's HTTP/2 setting."),
        .inert("http2_max_frame_size", flags: ["--http2-max-frame-size"], .http, reason: "appserver speaks HTTP/1.1", help: "Gunicorn's HTTP/2 setting."),
        .inert("http2_max_header_list_size", flags: ["--http2-max-header-list-size"], .http, reason: "appserver speaks HTTP/1.1", help: "Gunicorn's HTTP/2 setting."),
        .inert("http_parser", flags: ["--http-parser"], .http, reason: "appserver has one HTTP/1.1 parser, its own strict one", help: "Gunicorn's parser choice."),
    ] + ["permit_obsolete_folding", "strip_header_spaces", "permit_unconventional_http_method", "permit_unconventional_http_version", "casefold_http_method"].map {
        .refused($0, flags: ["--" + $0.replacingOccurrences(of: "_", with: "-")], form: .flag(negatable: false), .http,
                 reason: "appserver's HTTP/1.1 parser is strict (RFC 9112) and has no lenient modes: fix the client, or let the proxy in front normalize requests",
                 help: "Gunicorn's lenient-parsing switch.")
    }

    static let asgi: [Setting] = [
        .choice("asgi_loop", aliases: ["loop"], flags: ["--asgi-loop", "--loop"], .asgi, help: "ASGI event loop: auto (uvloop when installed), asyncio or uvloop.", \.loop),
        .choice("asgi_lifespan", aliases: ["lifespan"], flags: ["--asgi-lifespan", "--lifespan"], .asgi,
                help: "ASGI lifespan protocol: auto (if the app supports it), on or off.", \.lifespan),
        .inert("asgi_disconnect_grace_period", flags: ["--asgi-disconnect-grace-period"], .asgi,
               reason: "a client's disconnect reaches the app as http.disconnect at once", help: "Gunicorn's ASGI disconnect grace period."),
        Setting("root_path", flags: ["--root-path"], .asgi, help: "Where the app is mounted, e.g. /api (ASGI root_path).",
                apply: { c, v throws(ConfigError) in
                    let path = try v.optionalString("root_path") ?? ""
                    if !path.isEmpty && (!path.hasPrefix("/") || path.hasSuffix("/")) {
                        throw ConfigError.invalidValue(key: "root_path", value: path, reason: "expected a path like /api (leading /, no trailing /)")
                    }
                    c.rootPath = path
                },
                render: { $0.rootPath.isEmpty ? nil : .string($0.rootPath) }),
        .integer("ws_max_size", flags: ["--ws-max-size"], .asgi, min: 1, max: 1 << 30, help: "Largest websocket message, in bytes.", \.wsMaxSize),
    ]
}

// MARK: row builders

extension Setting {
    static func integer(_ name: String, aliases: [String] = [], flags: [String], _ section: Section, reloadable: Bool = true,
                        min: Int, max: Int, cap: Int? = nil, help: String, octal: Bool = false,
                        get: @escaping @Sendable (ServerConfig) -> Int, set: @escaping @Sendable (inout ServerConfig, Int) -> Void) -> Setting {
        Setting(name, aliases: aliases, flags: flags, form: .value(metavar: "INT"), section, reloadable: reloadable, help: help,
                apply: { c, v throws(ConfigError) in
                    var number = try v.integer(name, min: min, max: max)
                    if let cap, number > cap || (number == 0 && name == "limit_request_line") {
                        if number > cap { c.notes.append(.init(level: .warning, text: "\(name) \(number) is more than the most allowed, \(cap): using \(cap) (as Gunicorn does)")) }
                        number = cap
                    }
                    set(&c, number)
                },
                render: { octal ? .string("0o" + String(get($0), radix: 8)) : .integer(get($0)) })
    }

    static func integer(_ name: String, aliases: [String] = [], flags: [String], _ section: Section, reloadable: Bool = true,
                        min: Int, max: Int, cap: Int? = nil, help: String, _ path: WritableKeyPath<ServerConfig, Int> & Sendable) -> Setting {
        integer(name, aliases: aliases, flags: flags, section, reloadable: reloadable, min: min, max: max, cap: cap, help: help,
                get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 })
    }

    static func boolean(_ name: String, aliases: [String] = [], flags: [String], negatable: Bool = false, _ section: Section,
                        reloadable: Bool = true, help: String, _ path: WritableKeyPath<ServerConfig, Bool> & Sendable) -> Setting {
        Setting(name, aliases: aliases, flags: flags, form: .flag(negatable: negatable), section, reloadable: reloadable, help: help,
                apply: { c, v throws(ConfigError) in c[keyPath: path] = try v.boolean(name) },
                render: { .boolean($0[keyPath: path]) })
    }

    static func text(_ name: String, aliases: [String] = [], flags: [String], _ section: Section, reloadable: Bool = true,
                     metavar: String = "TEXT", help: String, _ path: WritableKeyPath<ServerConfig, String> & Sendable) -> Setting {
        Setting(name, aliases: aliases, flags: flags, form: .value(metavar: metavar), section, reloadable: reloadable, help: help,
                apply: { c, v throws(ConfigError) in
                    if v == .null { c[keyPath: path] = ServerConfig()[keyPath: path] } else { c[keyPath: path] = try v.string(name) }
                },
                render: { .string($0[keyPath: path]) })
    }

    static func optionalText(_ name: String, aliases: [String] = [], flags: [String], _ section: Section, reloadable: Bool = true,
                             metavar: String = "TEXT", help: String, _ path: WritableKeyPath<ServerConfig, String?> & Sendable) -> Setting {
        Setting(name, aliases: aliases, flags: flags, form: .value(metavar: metavar), section, reloadable: reloadable, help: help,
                apply: { c, v throws(ConfigError) in c[keyPath: path] = try v.optionalString(name) },
                render: { $0[keyPath: path].map(ConfigValue.string) })
    }

    static func choice<Choice: RawRepresentable & CaseIterable & Sendable>(
        _ name: String, aliases: [String] = [], flags: [String], _ section: Section, reloadable: Bool = true, help: String,
        _ path: WritableKeyPath<ServerConfig, Choice> & Sendable) -> Setting where Choice.RawValue == String {
        Setting(name, aliases: aliases, flags: flags, form: .value(metavar: Choice.allCases.map(\.rawValue).joined(separator: "|")), section,
                reloadable: reloadable, help: help,
                apply: { c, v throws(ConfigError) in
                    c[keyPath: path] = v == .null ? ServerConfig()[keyPath: path] : try v.choice(name, of: Choice.self)
                },
                render: { .string($0[keyPath: path].rawValue) })
    }

    static func addresses(_ name: String, aliases: [String] = [], flags: [String], help: String,
                          _ path: WritableKeyPath<ServerConfig, AddressAllowList> & Sendable) -> Setting {
        Setting(name, aliases: aliases, flags: flags, form: .value(metavar: "IPS"), .edge, reloadable: false, help: help,
                apply: { c, v throws(ConfigError) in c[keyPath: path] = try AddressAllowList(parsing: v.strings(name), key: name) },
                render: { .string($0[keyPath: path].description) })
    }

    /// A Gunicorn setting accepted without effect: its value is kept (for `--print-config`) and the reason logged.
    static func inert(_ name: String, flags: [String] = [], form: Form = .value(metavar: "VALUE"), _ section: Section,
                      reason: String, help: String) -> Setting {
        Setting(name, flags: flags, form: flags.isEmpty ? .fileOnly : form, section, support: .noEffect(reason), help: help,
                apply: { c, v throws(ConfigError) in
                    c.inertSettings[name] = v
                    if !v.isUnset { c.notes.append(.init(level: .info, text: "\(name) has no effect: \(reason)")) }
                },
                render: { $0.inertSettings[name] })
    }

    /// A Gunicorn setting refused unless its value asks for nothing.
    static func refused(_ name: String, flags: [String], form: Form = .value(metavar: "VALUE"), _ section: Section, reason: String,
                        help: String, harmless: [ConfigValue] = []) -> Setting {
        Setting(name, flags: flags, form: form, section, support: .refused(reason), help: help,
                apply: { _, v throws(ConfigError) in
                    guard v.isUnset || harmless.contains(v) else { throw ConfigError.refused(key: name, reason: reason) }
                },
                render: { _ in nil })
    }

    static func hook(_ name: String) -> Setting {
        Setting(name, form: .fileOnly, .hooks, support: .hook, help: "Server hook (a function in a Python config file).",
                apply: { c, v throws(ConfigError) in
                    // A Python config file hands hooks over as their names; anything else here is a mistake.
                    guard case .string(let marker) = v, marker == ServerConfig.hookMarker else {
                        if v.isUnset { return }
                        throw ConfigError.invalidValue(key: name, value: v.text, reason: "a server hook is a function: define it in a Python config file (gunicorn.conf.py)")
                    }
                    if !c.hooks.contains(name) { c.hooks.append(name) }
                },
                render: { _ in nil })
    }
}
