import Foundation
import Testing
@testable import AppServerConfig

@Suite struct TOMLConfigTests {
    @Test func readsEveryTOMLForm() throws {
        let text = #"""
            # a comment
            bind = ["127.0.0.1:8000", 'unix:/run/a.sock']   # trailing comment
            workers = 0x10
            umask = 0o22
            max_requests = 1_000
            ratio = 0.5
            debug = true
            name = "a \"quoted\" \u00e9 word"
            raw = 'C:\no\escapes'
            text = """
            two
            lines"""
            literal = '''
            raw\n'''
            multi = [
              1,
              2,
            ]
            when = 1979-05-27T07:32:00Z
            inline = { a = 1, "b c" = "d" }
            [secure_scheme_headers]
            X-SCHEME = "https"
            [logconfig_dict.loggers.app]
            level = "INFO"
            """#
        let values = Dictionary(uniqueKeysWithValues: try TOMLConfig.parse(text).map { ($0.key, $0.value) })
        #expect(values["bind"] == .array([.string("127.0.0.1:8000"), .string("unix:/run/a.sock")]))
        #expect(values["workers"] == .integer(16))
        #expect(values["umask"] == .integer(18))
        #expect(values["max_requests"] == .integer(1000))
        #expect(values["ratio"] == .float(0.5))
        #expect(values["debug"] == .boolean(true))
        #expect(values["name"] == .string("a \"quoted\" \u{e9} word"))
        #expect(values["raw"] == .string("C:\\no\\escapes"))
        #expect(values["text"] == .string("two\nlines"))
        #expect(values["literal"] == .string("raw\\n"))
        #expect(values["multi"] == .array([.integer(1), .integer(2)]))
        #expect(values["when"].map { "\($0)" }?.contains("1979") == true)
        #expect(values["inline"] == .table(["a": .integer(1), "b c": .string("d")]))
        #expect(values["secure_scheme_headers"] == .table(["X-SCHEME": .string("https")]))
        #expect(values["logconfig_dict"] == .table(["loggers": .table(["app": .table(["level": .string("INFO")])])]))
    }

    @Test(arguments: [
        ("workers = ", "line 1"),
        ("workers = 2\nworkers = 3", "line 2"),
        ("name = \"unterminated", "line 1"),
        ("x = [1, 2", "line 1"),
        ("= 3", "line 1"),
    ])
    func rejectsBadInputWithItsLine(text: String, fragment: String) {
        #expect {
            try TOMLConfig.parse(text)
        } throws: { error in
            "\(error)".contains(fragment)
        }
    }

    @Test func printedConfigReadsBackToTheSameSettings() throws {
        var config = ServerConfig()
        try config.set("workers", .integer(3), source: "t")
        try config.set("bind", .array([.string("unix:/tmp/a \"b\".sock"), .string("uwsgi://127.0.0.1:3031")]), source: "t")
        try config.set("raw_env", .array([.string("A=1"), .string("B=x=y")]), source: "t")
        try config.set("secure_scheme_headers", .table(["X-Scheme": .string("https")]), source: "t")
        try config.set("worker_class", .string("uvicorn.workers.UvicornWorker"), source: "t")
        try config.set("umask", .string("0o27"), source: "t")
        try config.set("worker_connections", .integer(500), source: "t")
        try config.set("logconfig_dict", .table(["version": .integer(1), "root": .table(["level": .string("INFO")])]), source: "t")
        let text = ConfigBuilder.render(config)
        var reread = ServerConfig()
        for (key, value) in try TOMLConfig.parse(text) { try reread.set(key, value, source: "printed") }
        reread.notes = config.notes
        #expect(reread == config)
        #expect(ConfigBuilder.render(reread) == text)
    }
}

@Suite struct SettingsTableTests {
    @Test func everyGunicornSettingHasARow() {
        // Gunicorn 23/24's settings (config.py), each accepted, mapped, or refused with a reason.
        let gunicorn = """
            config wsgi_app bind backlog workers worker_class threads worker_connections max_requests max_requests_jitter
            timeout graceful_timeout keepalive limit_request_line limit_request_fields limit_request_field_size reload
            reload_engine reload_extra_files spew check_config print_config preload_app sendfile reuse_port chdir daemon
            raw_env pidfile worker_tmp_dir user group umask initgroups tmp_upload_dir secure_scheme_headers
            forwarded_allow_ips accesslog disable_redirect_access_to_syslog access_log_format errorlog loglevel
            capture_output logger_class logconfig logconfig_dict logconfig_json syslog_addr syslog syslog_prefix
            syslog_facility enable_stdio_inheritance statsd_host dogstatsd_tags statsd_prefix enable_backlog_metric
            proc_name default_proc_name pythonpath paste on_starting on_reload when_ready pre_fork post_fork
            post_worker_init worker_int worker_abort pre_exec pre_request post_request child_exit worker_exit
            nworkers_changed on_exit ssl_context proxy_protocol proxy_allow_ips protocol uwsgi_allow_ips keyfile certfile
            ssl_version cert_reqs ca_certs suppress_ragged_eofs do_handshake_on_connect ciphers http_protocols
            http2_cleartext http2_max_concurrent_streams http2_initial_window_size http2_max_frame_size
            http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding strip_header_spaces
            permit_unconventional_http_method permit_unconventional_http_version casefold_http_method forwarder_headers
            header_map asgi_loop asgi_lifespan asgi_disconnect_grace_period http_parser root_path dirty_apps
            dirty_workers dirty_timeout dirty_threads dirty_graceful_timeout on_dirty_starting dirty_post_fork
            dirty_worker_init dirty_worker_exit control_socket control_socket_mode control_socket_disable
            """.split(whereSeparator: \.isWhitespace).map(String.init)
        for name in gunicorn { #expect(SettingsTable.row(for: name)?.name == name, "no row for \(name)") }
    }

    @Test func theReadmeListsEverySettingAsTheTableSaysIt() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardized
        let text = try String(contentsOf: readme, encoding: .utf8)
        #expect(text.contains(SettingsTable.markdown()), "README.md is out of date: paste `appserver --settings-markdown` into its settings list")
    }

    @Test func theManPageListsEveryOptionAsTheTableSaysIt() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../packaging/appserver.1").standardized
        let text = try String(contentsOf: page, encoding: .utf8)
        #expect(text.contains(SettingsTable.roff()), "packaging/appserver.1 is out of date: put `appserver --settings-roff` in its OPTIONS")
    }

    /// metrics_bind takes what bind takes, and says the address's own reason when it cannot.
    @Test func metricsBindTakesBindsAddressesWithTheirReasons() throws {
        var config = ServerConfig()
        try config.set("metrics_bind", .string("fd://5"), source: "t")
        #expect(config.metricsBind == .descriptor(5))
        try config.set("metrics_bind", .string("unix:/run/m.sock"), source: "t")
        #expect(config.metricsBind == .unix(path: "/run/m.sock"))
        for (text, reason) in [("fd://x", "fd:// takes a descriptor number"), ("127.0.0.1:99999", "the port must be a number")] {
            #expect {
                try config.set("metrics_bind", .string(text), source: "t")
            } throws: { error in
                guard case .invalidValue(let key, let value, let said) = error as? ConfigError else { return false }
                return key == "metrics_bind" && value == text && said.contains(reason)
            }
        }
    }

    @Test func refusedSettingsSayWhyAndWhatInstead() throws {
        var config = ServerConfig()
        for (key, value) in [("certfile", ConfigValue.string("/etc/ssl/a.pem")), ("syslog", .boolean(true)), ("paste", .string("a.ini")),
                             ("dirty_workers", .integer(2)), ("spew", .boolean(true)), ("http_protocols", .string("h2,h1")),
                             ("strip_header_spaces", .boolean(true)), ("logger_class", .string("my.Logger"))] {
            #expect {
                try config.set(key, value, source: "t")
            } throws: { error in
                guard case .refused(let name, let reason) = error as? ConfigError else { return false }
                return name == key && reason.count > 30
            }
        }
        // The same settings with values that ask for nothing are accepted, as in a gunicorn.conf.py that lists them all.
        for (key, value) in [("certfile", ConfigValue.null), ("syslog", .boolean(false)), ("dirty_workers", .integer(0)), ("http_protocols", .string("h1")),
                             ("ssl_version", .integer(2)), ("cert_reqs", .integer(0))] {
            try config.set(key, value, source: "t")
        }
        for worker in ["gevent", "eventlet", "gunicorn.workers.ggevent.GeventWorker"] {
            #expect(throws: ConfigError.self) { try config.set("worker_class", .string(worker), source: "t") }
        }
    }

    @Test func workerClassesMapToInterfaces() throws {
        var config = ServerConfig()
        for (name, interface) in [("sync", ServerConfig.Interface.wsgi), ("gthread", .wsgi), ("uvicorn.workers.UvicornWorker", .asgi),
                                  ("uvicorn_worker.UvicornWorker", .asgi), ("asgi", .asgi), ("egg:gunicorn#sync", .wsgi)] {
            try config.set("worker_class", .string(name), source: "t")
            #expect(config.interface == interface, "\(name)")
        }
    }

    @Test func cappedValuesAreCappedWithAWarning() throws {
        var config = ServerConfig()
        try config.set("limit_request_line", .string("16384"), source: "t")
        #expect(config.limitRequestLine == 8190)
        #expect(config.notes.contains { $0.level == .warning && $0.text.contains("limit_request_line 16384") })
        try config.set("limit_request_fields", .integer(50000), source: "t")
        #expect(config.limitRequestFields == 32768)
        #expect(throws: ConfigError.self) { try config.set("limit_request_line", .integer(-1), source: "t") }
    }

    @Test func gunicornsOwnLoggersInLogconfigDictGetAWarning() throws {
        var config = ServerConfig()
        try config.set("logconfig_dict", .table(["loggers": .table(["app": .table(["level": .string("INFO")])])]), source: "t")
        #expect(config.notes.isEmpty)
        try config.set("logconfig_dict", .table(["loggers": .table(["gunicorn.error": .table([:]), "gunicorn.access": .table([:]), "app": .table([:])])]), source: "t")
        #expect(config.notes.count == 1)
        #expect(config.notes.first?.level == .warning && config.notes.first?.text.hasPrefix("logconfig_dict configures gunicorn.access, gunicorn.error: ") == true)
        // A Python file's dict holding objects JSON cannot carry comes as its loggers' names only.
        var carried = ServerConfig()
        try carried.set("logconfig_dict", .table(["python_objects": .boolean(true), "logger_names": .array([.string("app"), .string("gunicorn.error")])]), source: "t")
        #expect(carried.notes.count == 1 && carried.notes.first?.text.hasPrefix("logconfig_dict configures gunicorn.error: ") == true)
    }

    /// Uvicorn's docs have projects subclass UvicornWorker to set CONFIG_KWARGS: the class is described
    /// by Python (faked here), its known base gives the interface, and CONFIG_KWARGS win over the settings.
    @Test func aWorkerClassOfTheProjectIsDescribedAndItsConfigKwargsApplied() throws {
        var asked: [String] = []
        func build(_ arguments: [String], bases: [String], kwargs: [String: ConfigValue] = [:]) throws -> ServerConfig {
            try ConfigBuilder(arguments: arguments + ["x:app"], environment: [:],
                              readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") },
                              describeWorkerClass: { path, _ throws(ConfigError) in
                                  asked.append(path)
                                  return .init(bases: bases, configKwargs: kwargs)
                              }).build()
        }
        let config = try build(["-k", "proj.workers.MyWorker", "--keep-alive", "5", "--lifespan", "on"],
                               bases: ["proj.workers.MyWorker", "uvicorn_worker._workers.UvicornWorker", "gunicorn.workers.base.Worker", "builtins.object"],
                               kwargs: ["loop": .string("asyncio"), "lifespan": .string("off"), "timeout_keep_alive": .integer(20),
                                        "root_path": .string("/api"), "http": .string("auto"), "server_header": .boolean(false)])
        #expect(asked == ["proj.workers.MyWorker"])
        #expect(config.interface == .asgi && config.workerClass == "proj.workers.MyWorker")
        #expect(config.loop == .asyncio && config.lifespan == .off && config.keepAlive == 20 && config.rootPath == "/api")
        #expect(config.notes.map(\.text) == ["proj.workers.MyWorker.CONFIG_KWARGS['server_header'] has no effect: a Uvicorn option appserver's own HTTP and websocket layer does not take"])
        // A subclass of Gunicorn's sync worker is WSGI; known names never ask Python.
        #expect(try build(["-k", "proj.Sync"], bases: ["proj.Sync", "gunicorn.workers.sync.SyncWorker"]).interface == .wsgi)
        asked = []
        #expect(try build(["-k", "uvicorn.workers.UvicornWorker"], bases: []).interface == .asgi && asked.isEmpty)
        // A gevent subclass is refused as gevent is; a class of no known base, or a bad CONFIG_KWARGS value, is an error.
        #expect(throws: ConfigError.refused(key: "worker_class", reason: "gevent and eventlet workers are not offered: use gthread (-k gthread --threads N) for a WSGI app that waits on I/O, or an ASGI app (-k uvicorn.workers.UvicornWorker)")) {
            try build(["-k", "proj.G"], bases: ["proj.G", "gunicorn.workers.ggevent.GeventWorker"])
        }
        #expect(throws: ConfigError.self) { try build(["-k", "proj.Nothing"], bases: ["proj.Nothing", "builtins.object"]) }
        do {
            _ = try build(["-k", "proj.Bad"], bases: ["proj.Bad", "uvicorn.workers.UvicornWorker"], kwargs: ["loop": .string("trio")])
            Issue.record("a loop appserver does not have was taken")
        } catch {
            #expect(String(describing: error).contains("its CONFIG_KWARGS['loop']"))
        }
        #expect(!ServerConfig.isPythonPath("not-a-path") && !ServerConfig.isPythonPath("Single") && ServerConfig.isPythonPath("a._b.C1"))
    }

    /// `uvicorn main:app --host ... --port ...` works as it is: Uvicorn's options become appserver's.
    @Test func uvicornsCommandLineIsTranslated() throws {
        func build(_ arguments: [String]) throws -> ServerConfig {
            try ConfigBuilder(arguments: arguments, environment: [:],
                              readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") }).build()
        }
        let config = try build(["main:create_app", "--factory", "--host", "0.0.0.0", "--port=9000", "--timeout-keep-alive", "7",
                                "--limit-max-requests", "500", "--timeout-graceful-shutdown", "12", "--log-level", "trace",
                                "--http", "h11", "--no-server-header", "--workers", "3", "--access-log"])
        #expect(config.app == "main:create_app()")
        #expect(config.bind.map(\.description) == ["0.0.0.0:9000"])
        #expect(config.keepAlive == 7 && config.maxRequests == 500 && config.gracefulTimeout == 12 && config.workers == 3)
        #expect(config.logLevel == .debug && config.accessLogfile == "-")
        #expect(config.notes.map(\.text) == ["Uvicorn's --http has no effect: it tunes Uvicorn's own HTTP and websocket layer",
                                             "Uvicorn's --no-server-header has no effect: it tunes Uvicorn's own HTTP and websocket layer"])
        // Uvicorn's defaults fill in the half not given; IPv6 in brackets; --uds and --fd are binds.
        #expect(try build(["--port", "8001", "m:app"]).bind.map(\.description) == ["127.0.0.1:8001"])
        #expect(try UvicornCommandLine.translate(["--host", "::1"]).arguments == ["--bind", "[::1]:8000"])
        #expect(try UvicornCommandLine.translate(["--uds", "/run/a.sock", "--fd=3"]).arguments == ["--bind", "unix:/run/a.sock", "--bind", "fd://3"])
        #expect(try UvicornCommandLine.translate(["--log-config", "log.json", "--interface", "asgi3"]).arguments
                    == ["--log-config-json", "log.json", "--interface", "asgi"])
        // Gunicorn's own options pass as they are, and so does whatever follows "--".
        #expect(try UvicornCommandLine.translate(["-w", "2", "--log-config", "log.ini", "--", "--host"]).arguments == ["-w", "2", "--log-config", "log.ini", "--", "--host"])
        for (arguments, reason) in [(["--env-file", ".env"], "--env-file is not read"), (["--interface", "asgi2"], "ASGI 2 apps are not served"),
                                    (["--log-config", "log.yaml"], "YAML"), (["--port"], "needs a value")] {
            #expect(throws: CommandLineReader.UsageError.self) { try UvicornCommandLine.translate(arguments) }
            do { _ = try UvicornCommandLine.translate(arguments) } catch { #expect(error.description.contains(reason)) }
        }
        #expect(throws: ConfigError.refused(key: "keyfile", reason: "TLS ends at the proxy in front (nginx, HAProxy): appserver serves plain HTTP or uwsgi behind it (README, \"Behind nginx\")")) {
            try build(["--ssl-keyfile", "k.pem", "m:app"])
        }
    }

    @Test func logConfigFilesAreCheckedAndReadForGunicornsLoggers() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("appserver-logconfig-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ini = "[loggers]\nkeys=root,gunicorn.error\n[logger_root]\nhandlers=\n[logger_gunicorn.error]\nhandlers=\nqualname = gunicorn.error\n[handlers]\nkeys=\n"
        try ini.write(toFile: dir + "/logging.ini", atomically: true, encoding: .utf8)
        try #"{"version": 1, "loggers": {"app": {}}}"#.write(toFile: dir + "/logging.json", atomically: true, encoding: .utf8)
        try #"["not", "an object"]"#.write(toFile: dir + "/list.json", atomically: true, encoding: .utf8)
        func build(_ arguments: [String]) throws -> ServerConfig {
            try ConfigBuilder(arguments: ["--chdir", dir] + arguments + ["x:app"], environment: [:],
                              readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") }).build()
        }
        #expect(LogConfigFiles.loggerNames(ini: ini) == ["gunicorn.error"])
        // Relative to --chdir, as the workers open it; Gunicorn's own logger named in the file is warned about.
        let fromINI = try build(["--log-config", "logging.ini"])
        try fromINI.validate()
        #expect(fromINI.notes.map(\.text) == [LogConfigFiles.gunicornLoggersWarning(setting: "logconfig", names: ["gunicorn.error"])!.text])
        #expect(fromINI.notes.first?.text.hasPrefix("logconfig configures gunicorn.error: ") == true)
        // Only the first of logconfig_json and logconfig applies: the other is named.
        let both = try build(["--log-config", "logging.ini", "--log-config-json", "logging.json"])
        #expect(both.notes.map(\.text) == ["logconfig not applied: logconfig_json takes precedence, as in Gunicorn"])
        // A file that is not there, or JSON that dictConfig cannot take, stops the server before any worker.
        for (arguments, reason) in [(["--log-config", "missing.ini"], "no such file"), (["--log-config-json", "list.json"], "not a JSON object"),
                                    (["--log-config-json", dir], "no such file")] {
            let config = try build(arguments)
            #expect(throws: ConfigError.self) { try config.validate() }
            do { try config.validate() } catch { #expect(error.description.contains(reason)) }
        }
    }

    @Test func inertSettingsAreKeptAndExplained() throws {
        var config = ServerConfig()
        try config.set("worker_connections", .integer(1000), source: "t")
        #expect(config.inertSettings["worker_connections"] == .integer(1000))
        #expect(config.notes.contains { $0.level == .info && $0.text.contains("worker_connections has no effect") })
    }

    @Test func hooksComeOnlyFromPythonFiles() throws {
        var config = ServerConfig()
        #expect(throws: ConfigError.self) { try config.set("post_fork", .string("print"), source: "t") }
        try config.set("post_fork", .string(ServerConfig.hookMarker), source: "t")
        #expect(config.hooks == ["post_fork"])
    }
}

@Suite struct CommandLineTests {
    @Test func readsGunicornForms() throws {
        let result = try CommandLineReader.read(["-w4", "--threads=8", "-b", "127.0.0.1:1", "--bind=unix:/tmp/s", "--preload",
                                                 "--max-requests", "10", "--graceful-t", "5", "--no-proxy-headers", "--proxy-protocol", "myapp:app", "-e", "A=1"])
        #expect(result.app == "myapp:app")
        #expect(result.value(of: "workers") == .string("4"))
        #expect(result.value(of: "threads") == .string("8"))
        #expect(result.value(of: "bind") == .array([.string("127.0.0.1:1"), .string("unix:/tmp/s")]))
        #expect(result.value(of: "preload_app") == .boolean(true))
        #expect(result.value(of: "max_requests") == .string("10"))
        #expect(result.value(of: "graceful_timeout") == .string("5"))
        #expect(result.value(of: "proxy_headers") == .boolean(false))
        #expect(result.value(of: "proxy_protocol") == .string("auto"))
        #expect(result.value(of: "raw_env") == .array([.string("A=1")]))
        #expect(try CommandLineReader.read(["--proxy-protocol", "v2", "a:b"]).value(of: "proxy_protocol") == .string("v2"))
    }

    @Test func refusesWhatItCannotRead() {
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.read(["--workerz", "2"]) }
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.read(["--work", "2"]) }
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.read(["a:b", "c:d"]) }
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.read(["--workers"]) }
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.read(["--preload=maybe"]) }
    }

    @Test func splitsLikeShlex() throws {
        #expect(try CommandLineReader.split(#"--bind 0.0.0.0:80 -e 'A=b c' --name "my app" x\ y"#) ==
                ["--bind", "0.0.0.0:80", "-e", "A=b c", "--name", "my app", "x y"])
        #expect(throws: CommandLineReader.UsageError.self) { try CommandLineReader.split("'open") }
    }

    @Test func precedenceIsCommandLineThenEnvironmentThenFileThenDefaults() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("appserver-precedence-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = dir + "/a.toml"
        try "workers = 2\nthreads = 3\ntimeout = 40\nkeepalive = 9\n".write(toFile: file, atomically: true, encoding: .utf8)
        let builder = ConfigBuilder(arguments: ["-c", file, "--threads", "5", "x:app"],
                                    environment: ["GUNICORN_CMD_ARGS": "--timeout 50 --threads 4 --max-requests 7", "APPSERVER_CMD_ARGS": "--max-requests 8",
                                                  "WEB_CONCURRENCY": "6", "PORT": "9999"],
                                    readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") })
        let config = try builder.build()
        #expect(config.threads == 5)          // command line over all
        #expect(config.timeout == 50)         // GUNICORN_CMD_ARGS over the file
        #expect(config.maxRequests == 8)      // APPSERVER_CMD_ARGS over GUNICORN_CMD_ARGS
        #expect(config.workers == 2)          // the file over WEB_CONCURRENCY
        #expect(config.keepAlive == 9)
        #expect(config.bind.map(\.description) == ["0.0.0.0:9999"])   // PORT, Gunicorn's default
        #expect(config.app == "x:app")
    }

    /// A HUP builds the settings again from inside `--chdir`'s directory: the paths must still mean
    /// what they meant where the server started.
    @Test func pathsAreFromTheStartDirectoryWhereverTheBuildRuns() throws {
        let start = FileManager.default.temporaryDirectory.appendingPathComponent("appserver-paths-\(getpid())").path
        try FileManager.default.createDirectory(atPath: start + "/app", withIntermediateDirectories: true)
        try "workers = 2\n".write(toFile: start + "/conf.toml", atomically: true, encoding: .utf8)
        let builder = ConfigBuilder(arguments: ["-c", "conf.toml", "--chdir", "app", "--virtualenv", "../start/./venv", "x:app"],
                                    environment: [:], baseDirectory: start,
                                    readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") })
        let before = FileManager.default.currentDirectoryPath
        #expect(FileManager.default.changeCurrentDirectoryPath(start + "/app"))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(before) }
        let config = try builder.build()
        #expect(config.workers == 2)
        #expect(config.configFile == start + "/conf.toml")
        #expect(config.chdir == start + "/app")
        #expect(config.virtualenv == URL(fileURLWithPath: start).deletingLastPathComponent().path + "/start/venv")
        let absolute = ConfigBuilder(arguments: ["--chdir", "/srv/a/../b/", "--virtualenv", "/v", "x:app"], environment: ["VIRTUAL_ENV": "/ignored"],
                                     baseDirectory: start, readPythonFile: { path, _ throws(ConfigError) in throw ConfigError.configFile(path: path, reason: "unexpected") })
        let given = try absolute.build()
        #expect(given.chdir == "/srv/b" && given.virtualenv == "/v" && given.configFile == nil)
    }
}

@Suite struct BindAddressTests {
    @Test func parsesGunicornForms() throws {
        #expect(try BindAddress(parsing: "127.0.0.1:8000") == .tcp(host: "127.0.0.1", port: 8000))
        #expect(try BindAddress(parsing: "[::1]:9000") == .tcp(host: "::1", port: 9000))
        #expect(try BindAddress(parsing: ":8080") == .tcp(host: "127.0.0.1", port: 8080))
        #expect(try BindAddress(parsing: "8081") == .tcp(host: "127.0.0.1", port: 8081))
        #expect(try BindAddress(parsing: "localhost") == .tcp(host: "localhost", port: 8000))
        #expect(try BindAddress(parsing: "unix:/run/app.sock") == .unix(path: "/run/app.sock"))
        #expect(try BindAddress(parsing: "[::1]:9000").description == "[::1]:9000")
    }

    @Test(arguments: ["unix:", "[::1", "[::1]9000", "::1:9000", "host:99999", "host:http"])
    func rejectsMalformedAddresses(text: String) {
        #expect(throws: ConfigError.self) { try BindAddress(parsing: text) }
    }
}

@Suite struct ServerConfigTests {
    @Test func setsValuesByEitherSpelling() throws {
        var config = ServerConfig()
        try config.set("max-requests", .string("100"), source: "cli")
        try config.set("max_requests_jitter", .integer(10), source: "file")
        try config.set("env", .array([.string("A=1"), .string("B=x=y")]), source: "cli")
        try config.set("pythonpath", .string("a, b,,c"), source: "cli")
        try config.set("log-level", .string("WARN"), source: "cli")
        try config.set("keep_alive", .integer(7), source: "file")
        #expect(config.maxRequests == 100 && config.maxRequestsJitter == 10)
        #expect(config.env == ["A": "1", "B": "x=y"])
        #expect(config.pythonpath == ["a", "b", "c"])
        #expect(config.logLevel == .warning)
        #expect(config.keepAlive == 7)
    }

    @Test func rejectsBadValuesWithOneClearMessage() {
        var config = ServerConfig()
        #expect(throws: ConfigError.invalidValue(key: "workers", value: "0", reason: "must be from 1 to 1024")) {
            try config.set("workers", .string("0"), source: "cli")
        }
        #expect(throws: ConfigError.unknownKey("wrkers", source: "cli")) {
            try config.set("wrkers", .integer(2), source: "cli")
        }
        #expect(throws: ConfigError.self) { try config.set("timeout", .boolean(true), source: "cli") }
    }

    @Test func appReferenceDefaultsToApplication() throws {
        #expect(try AppReference(parsing: "mysite.wsgi") == AppReference(module: "mysite.wsgi", callable: "application"))
        #expect(try AppReference(parsing: "pkg.mod:make.app").callable == "make.app")
        #expect(throws: ConfigError.self) { try AppReference(parsing: "bad module:app") }
        #expect(throws: ConfigError.self) { try AppReference(parsing: "mod:") }
        #expect(try AppReference(parsing: "superset.app:create_app()").isFactoryCall)
        #expect(try AppReference(parsing: "pkg:make(1, name='x')").callable == "make(1, name='x')")
        #expect(throws: ConfigError.self) { try AppReference(parsing: "pkg:make(") }
    }

    @Test func validationNeedsAnApp() {
        #expect(throws: ConfigError.self) { try ServerConfig().validate() }
    }
}
