import Foundation

/// Puts a configuration together from its sources, weakest first: the defaults (and Gunicorn's
/// environment defaults, WEB_CONCURRENCY and PORT), the config file, `GUNICORN_CMD_ARGS`, then
/// `APPSERVER_CMD_ARGS`, then the command line; `$VIRTUAL_ENV` when nothing named a virtualenv.
///
/// The paths read while building (the config file, Gunicorn's default ./gunicorn.conf.py) and the ones
/// used after `--chdir` took effect (`chdir` itself, `virtualenv`) mean what they meant in the directory
/// the server was started in (`baseDirectory`), also when a HUP builds the configuration again from
/// inside `--chdir`'s directory. (Gunicorn makes `chdir` absolute the same way.) The other paths (log
/// files, the pid file) are opened after `--chdir`, relative to it, as Gunicorn's are.
public struct ConfigBuilder {
    /// What a Python config file gave: its settings (hooks as `ServerConfig.hookMarker`), and the
    /// names it defines that are no setting (Gunicorn ignores them; appserver says so).
    public struct PythonFileSettings {
        public var settings: [(key: String, value: ConfigValue)]
        public var unknownNames: [String]
        public init(settings: [(key: String, value: ConfigValue)], unknownNames: [String]) {
            self.settings = settings
            self.unknownNames = unknownNames
        }
    }

    public typealias PythonFileReader = (_ path: String, _ virtualenv: String?) throws(ConfigError) -> PythonFileSettings

    /// What Python says of a worker class appserver does not know by name: the paths of the classes it
    /// derives from (itself first) and its CONFIG_KWARGS.
    public struct WorkerClassDescription {
        public var bases: [String]
        public var configKwargs: [String: ConfigValue]
        public init(bases: [String], configKwargs: [String: ConfigValue]) {
            self.bases = bases
            self.configKwargs = configKwargs
        }
    }

    public typealias WorkerClassDescriber = (_ path: String, _ config: ServerConfig) throws(ConfigError) -> WorkerClassDescription

    public var arguments: [String]
    public var environment: [String: String]
    public var readPythonFile: PythonFileReader
    public var describeWorkerClass: WorkerClassDescriber
    /// Where relative paths of the command line and the environment start from.
    public var baseDirectory: String

    public init(arguments: [String], environment: [String: String], baseDirectory: String = FileManager.default.currentDirectoryPath,
                readPythonFile: @escaping PythonFileReader,
                describeWorkerClass: @escaping WorkerClassDescriber = { path, _ throws(ConfigError) in
                    throw ConfigError.invalidValue(key: "worker_class", value: path, reason: "not a worker class appserver knows")
                }) {
        self.arguments = arguments
        self.environment = environment
        self.baseDirectory = baseDirectory
        self.readPythonFile = readPythonFile
        self.describeWorkerClass = describeWorkerClass
    }

    /// `path` from `baseDirectory` when it is relative, with `.` and `..` taken out.
    public func resolved(_ path: String) -> String {
        guard !path.isEmpty else { return path }
        let base = URL(fileURLWithPath: baseDirectory, isDirectory: true)
        return URL(fileURLWithPath: path, relativeTo: path.hasPrefix("/") ? nil : base).standardizedFileURL.path
    }

    /// A config file's path resolved; `python:module.name` names a module, not a path.
    private func resolvedConfigFile(_ path: String) -> String {
        path.hasPrefix("python:") ? path : resolved(path)
    }

    /// The command line as read, for --help and --version.
    public func commandLine() throws(CommandLineReader.UsageError) -> CommandLineReader.Result {
        try readCommandLine().result
    }

    /// The command line, Uvicorn's options in it first made appserver's, and what that found worth saying.
    private func readCommandLine() throws(CommandLineReader.UsageError) -> (result: CommandLineReader.Result, notes: [ServerConfig.Note]) {
        let uvicorn = try UvicornCommandLine.translate(arguments)
        var result = try CommandLineReader.read(uvicorn.arguments)
        // Uvicorn's --factory: the app is called for the app, as MODULE:FACTORY() says it.
        if uvicorn.factory, let app = result.app, !app.hasSuffix(")") { result.app = app + "()" }
        return (result, uvicorn.notes)
    }

    public func build() throws(ConfigError) -> ServerConfig {
        let commandLine: CommandLineReader.Result
        let commandLineNotes: [ServerConfig.Note]
        var environmentArguments: [(source: String, result: CommandLineReader.Result)] = []
        do {
            (commandLine, commandLineNotes) = try readCommandLine()
            for name in ["GUNICORN_CMD_ARGS", "APPSERVER_CMD_ARGS"] {
                if let text = environment[name], !text.trimmingWhitespace().isEmpty {
                    do {
                        environmentArguments.append(("$\(name)", try CommandLineReader.read(CommandLineReader.split(text))))
                    } catch {
                        throw CommandLineReader.UsageError(description: "$\(name): \(error.description)")
                    }
                }
            }
        } catch let error as CommandLineReader.UsageError {
            throw ConfigError.app(error.description)
        } catch {
            throw ConfigError.app("\(error)")
        }
        let layers = environmentArguments + [("the command line", commandLine)]

        var config = ServerConfig()
        config.applyEnvironmentDefaults(environment)
        config.notes += commandLineNotes
        // The file named last wins; without one, Gunicorn's default ./gunicorn.conf.py when it exists.
        /// The value the strongest layer gives a setting of the command-line kind.
        func given(_ name: String) -> String? {
            layers.reversed().lazy.compactMap { layer -> String? in
                if case .string(let text)? = layer.result.value(of: name) { return text }
                return nil
            }.first
        }
        var file = given("config").map(resolvedConfigFile)
        let gunicornDefault = resolved("gunicorn.conf.py")
        if file == nil, FileManager.default.fileExists(atPath: gunicornDefault) { file = gunicornDefault }
        if let file, !file.isEmpty {
            config.configFile = file
            if Self.isPython(file) {
                let venv = (given("virtualenv") ?? environment["VIRTUAL_ENV"].flatMap { $0.isEmpty ? nil : $0 }).map(resolved)
                let read = try readPythonFile(file, venv)
                for name in read.unknownNames {
                    config.notes.append(.init(level: .warning, text: "config file \(file): '\(name)' is not a setting; ignored\(SettingsTable.suggestion(for: name).map { " (did you mean '\($0)'?)" } ?? "")"))
                }
                for entry in read.settings {
                    do {
                        try config.set(entry.key, entry.value, source: file)
                    } catch {
                        throw ConfigError.configFile(path: file, reason: "\(error)")
                    }
                }
                if let venv, let fileVenv = config.virtualenv, resolved(fileVenv) != venv {
                    throw ConfigError.configFile(path: file, reason: "a Python config file runs in the app's virtualenv, so it cannot choose it: give --virtualenv on the command line or set $VIRTUAL_ENV")
                }
            } else {
                try config.load(file: file)
            }
            config.configFile = file
        }
        for layer in layers {
            for (name, value) in layer.result.settings {
                do {
                    try config.set(name, value, source: layer.source)
                } catch {
                    if layer.source == "the command line" { throw error }
                    throw ConfigError.configFile(path: layer.source, reason: "\(error)")
                }
            }
            if let app = layer.result.app { config.app = app }
        }
        if config.virtualenv == nil, let venv = environment["VIRTUAL_ENV"], !venv.isEmpty { config.virtualenv = venv }
        config.virtualenv = config.virtualenv.map(resolved)
        config.configFile = config.configFile.map(resolvedConfigFile)
        config.chdir = config.chdir.map(resolved)
        if let path = config.workerClassToDescribe {
            let described = try describeWorkerClass(path, config)
            try config.adoptWorkerClass(path, bases: described.bases, configKwargs: described.configKwargs)
        }
        config.notes += LogConfigFiles.notes(config)
        if config.reload && config.preloadApp {
            config.notes.append(.init(level: .warning, text: "--reload with --preload: the app loaded at start is not imported again, so only changes to code imported after the fork are seen (drop --preload while developing)"))
        }
        return config
    }

    /// `python:module.name`, or a file that is not TOML: Gunicorn's config files are Python.
    public static func isPython(_ path: String) -> Bool {
        path.hasPrefix("python:") || !path.hasSuffix(".toml")
    }

    /// The settings of `config` as a TOML config file (`--print-config`): every setting with a value,
    /// under its config-file name.
    public static func render(_ config: ServerConfig) -> String {
        var lines: [(name: String, value: ConfigValue)] = []
        for row in SettingsTable.rows where row.name != "config" {
            if let value = row.render(config), value != .null { lines.append((row.name, value)) }
        }
        return TOMLConfig.render(lines)
    }
}

extension ServerConfig {
    /// A reload's new settings with the running values of the settings only a restart changes
    /// (`bind`, `virtualenv`, `preload_app`, ...), and the names of those that differed.
    public func keepingRestartSettings(of running: ServerConfig) -> (config: ServerConfig, changes: [String]) {
        var result = self
        var changes: [String] = []
        for row in SettingsTable.rows where !row.reloadable && !["config", "check_config", "print_config"].contains(row.name) {
            let old = row.render(running)
            guard row.render(self) != old else { continue }
            changes.append(row.name)
            do { try row.apply(&result, old ?? .null) } catch { continue }
        }
        return (result, changes)
    }
}
