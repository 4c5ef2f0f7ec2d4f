/// One row of the settings table (SettingsTable.swift): everything about a setting in one place, as in
/// Gunicorn's config.py. The command line, the config files, `--print-config`, `--help` and the
/// README's settings list all come from these rows.
public struct Setting: Sendable {
    /// How the setting is written on the command line.
    public enum Form: Sendable, Equatable {
        /// `--workers 4`, `--workers=4`, `-w 4`, `-w4`.
        case value(metavar: String)
        /// Repeatable; the values given on one command line replace the file's list.
        case repeated(metavar: String)
        /// `--preload`: sets true. With `negatable`, `--no-NAME` sets false.
        case flag(negatable: Bool)
        /// `--proxy-protocol` alone means `implied`; a value may follow.
        case optionalValue(metavar: String, implied: String)
        /// Config files only (hooks, dictionaries).
        case fileOnly
    }

    /// What appserver does with the setting.
    public enum Support: Sendable, Equatable {
        /// Gunicorn's meaning (or appserver's own setting).
        case implemented
        /// Accepted for Gunicorn's sake, with no effect here; the reason is logged once at start.
        case noEffect(String)
        /// Accepted only with a value that asks for nothing (false, None, empty, Gunicorn's default);
        /// anything else is refused with this reason, which says what to use instead.
        case refused(String)
        /// A server hook: a function in a Python config file.
        case hook
    }

    /// Groups for `--help` and the README, in Gunicorn's order.
    public enum Section: String, CaseIterable, Sendable {
        case configFile = "Config file", app = "The app", socket = "Server socket", workers = "Worker processes"
        case limits = "Request limits", edge = "Behind a proxy", mechanics = "Server mechanics", logging = "Logging"
        case naming = "Process naming", metrics = "Metrics", hooks = "Server hooks", reload = "Development"
        case tls = "TLS", http = "HTTP parsing", asgi = "ASGI"
    }

    public typealias Apply = @Sendable (inout ServerConfig, ConfigValue) throws(ConfigError) -> Void
    public typealias Render = @Sendable (ServerConfig) -> ConfigValue?

    /// The config-file key: Gunicorn's name where Gunicorn has the setting.
    public let name: String
    /// Other keys for the same setting (appserver's earlier names, dashed spellings are always accepted).
    public let aliases: [String]
    /// Command-line flags, Gunicorn's first.
    public let flags: [String]
    public let form: Form
    public let section: Section
    public let help: String
    /// Whether a HUP reload applies a new value (otherwise it takes a restart or USR2).
    public let reloadable: Bool
    public let support: Support
    let apply: Apply
    /// The setting's value in a config, for `--print-config`; nil when it is unset.
    public let render: Render

    init(_ name: String, aliases: [String] = [], flags: [String] = [], form: Form = .value(metavar: "VALUE"),
         _ section: Section, reloadable: Bool = true, support: Support = .implemented, help: String,
         apply: @escaping Apply, render: @escaping Render) {
        self.name = name
        self.aliases = aliases
        self.flags = flags
        self.form = form
        self.section = section
        self.help = help
        self.reloadable = reloadable
        self.support = support
        self.apply = apply
        self.render = render
    }

    /// Every key this setting answers to.
    public var keys: [String] { [name] + aliases }

    /// The default, as `--help` shows it.
    public var defaultText: String? {
        guard let value = render(ServerConfig()), !value.isUnset || value == .boolean(false) else { return nil }
        return value.text
    }
}
