import Foundation

/// The logging files of logconfig (fileConfig's ini) and logconfig_json, read at start for what they
/// would surprise a Gunicorn user with: a file that is not there, one that another setting overrides,
/// and styling for Gunicorn's own loggers, which are not where appserver's own logs go.
public enum LogConfigFiles {
    /// The file's path as the workers open it: relative to `chdir` (Gunicorn sets logging up after it).
    static func path(_ given: String, chdir: String?) -> String {
        given.hasPrefix("/") ? given : (chdir ?? FileManager.default.currentDirectoryPath) + "/" + given
    }

    /// A missing or unreadable file, before any worker would fail on it.
    static func check(_ config: ServerConfig) throws(ConfigError) {
        for (key, given) in [("logconfig", config.logconfig), ("logconfig_json", config.logconfigJSON)] {
            guard let given else { continue }
            let full = path(given, chdir: config.chdir)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw ConfigError.invalidValue(key: key, value: given, reason: "no such file (\(full))")
            }
            guard let data = FileManager.default.contents(atPath: full) else {
                throw ConfigError.invalidValue(key: key, value: given, reason: "the file cannot be read (\(full))")
            }
            if key == "logconfig_json" && (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] == nil {
                throw ConfigError.invalidValue(key: key, value: given, reason: "not a JSON object, as logging.config.dictConfig takes (\(full))")
            }
        }
    }

    /// What the arbiter logs at start (and --check-config prints) about the logging settings.
    static func notes(_ config: ServerConfig) -> [ServerConfig.Note] {
        var notes: [ServerConfig.Note] = []
        // Gunicorn applies the first of logconfig_dict, logconfig_json, logconfig; so does appserver.
        let given = [("logconfig_dict", config.logconfigDict != nil), ("logconfig_json", config.logconfigJSON != nil),
                     ("logconfig", config.logconfig != nil)].filter(\.1).map(\.0)
        if given.count > 1 {
            notes.append(.init(level: .warning, text: "\(given.dropFirst().joined(separator: " and ")) not applied: \(given[0]) takes precedence, as in Gunicorn"))
        }
        guard let first = given.first, first != "logconfig_dict" else { return notes }
        let file = path(first == "logconfig" ? config.logconfig! : config.logconfigJSON!, chdir: config.chdir)
        guard let data = FileManager.default.contents(atPath: file) else { return notes }   // check() says why
        let names = first == "logconfig" ? loggerNames(ini: String(decoding: data, as: UTF8.self)) : loggerNames(json: data)
        if let warning = gunicornLoggersWarning(setting: first, names: names) { notes.append(warning) }
        return notes
    }

    /// A warning when `names` include Gunicorn's own loggers: appserver's error and access logs are not
    /// Python loggers, so styling them reaches only what the app logs there.
    static func gunicornLoggersWarning(setting: String, names: [String]) -> ServerConfig.Note? {
        let gunicorns = Set(names.filter { $0 == "gunicorn" || $0.hasPrefix("gunicorn.") }).sorted()
        guard !gunicorns.isEmpty else { return nil }
        return .init(level: .warning, text: "\(setting) configures \(gunicorns.joined(separator: ", ")): appserver's own error and access logs are not Python loggers, so that styles only what the app logs there (shape the server's with loglevel, errorlog, accesslog and access_log_format)")
    }

    /// The loggers of a fileConfig file: each `[logger_*]` section names its logger with `qualname`.
    static func loggerNames(ini text: String) -> [String] {
        var names: [String] = []
        var inLoggerSection = false
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                inLoggerSection = line.hasPrefix("[logger_")
            } else if inLoggerSection, let separator = line.firstIndex(where: { $0 == "=" || $0 == ":" }),
                      line[..<separator].trimmingCharacters(in: .whitespaces).lowercased() == "qualname" {
                names.append(line[line.index(after: separator)...].trimmingCharacters(in: .whitespaces))
            }
        }
        return names
    }

    /// The `loggers` of a dictConfig JSON file; none when it is not a JSON object.
    static func loggerNames(json data: Data) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let loggers = object["loggers"] as? [String: Any] else { return [] }
        return Array(loggers.keys)
    }
}
