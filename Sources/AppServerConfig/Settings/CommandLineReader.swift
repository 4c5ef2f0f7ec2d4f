/// Reads a command line (or `GUNICORN_CMD_ARGS`) the way Gunicorn's argparse does, from the settings
/// table's flags: `--workers 4`, `--workers=4`, `-w 4`, `-w4`, unambiguous prefixes of long flags
/// (`--work 4`), repeatable options, flags with an optional value, and the app as the one positional.
public struct CommandLineReader {
    public struct Result: Equatable, Sendable {
        /// The settings given, by canonical name, in order; repeated options are one array each.
        public var settings: [(name: String, value: ConfigValue)] = []
        public var app: String?
        public var help = false
        public var version = false

        public static func == (a: Result, b: Result) -> Bool {
            a.app == b.app && a.help == b.help && a.version == b.version
                && a.settings.map(\.name) == b.settings.map(\.name) && a.settings.map(\.value) == b.settings.map(\.value)
        }

        /// The value given for a setting, if any.
        public func value(of name: String) -> ConfigValue? { settings.last { $0.name == name }?.value }
    }

    /// An argument that is not right: one line for the user.
    public struct UsageError: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    public static func read(_ arguments: [String]) throws(UsageError) -> Result {
        var result = Result()
        var repeated: [String: [ConfigValue]] = [:]
        var order: [String] = []
        func record(_ row: Setting, _ value: ConfigValue) {
            if case .repeated = row.form {
                repeated[row.name, default: []].append(value)
            }
            if !order.contains(row.name) { order.append(row.name) }
            if case .repeated = row.form { return }
            result.settings.removeAll { $0.name == row.name }
            result.settings.append((row.name, value))
        }

        var index = 0
        var positionalOnly = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if positionalOnly || argument == "-" || !argument.hasPrefix("-") {
                guard result.app == nil else { throw UsageError(description: "unexpected argument '\(argument)': give one app (MODULE:CALLABLE)") }
                result.app = argument
                continue
            }
            if argument == "--" { positionalOnly = true; continue }
            if argument == "-h" || argument == "--help" { result.help = true; continue }
            if argument == "-v" || argument == "--version" { result.version = true; continue }

            // Split off an attached value: --name=value, -w4.
            var flag = argument
            var attached: String?
            if argument.hasPrefix("--") {
                if let eq = argument.firstIndex(of: "=") {
                    flag = String(argument[..<eq])
                    attached = String(argument[argument.index(after: eq)...])
                }
            } else if argument.count > 2 {
                flag = String(argument.prefix(2))
                attached = String(argument.dropFirst(2))
            }
            var negated = false
            guard let row = try lookUp(flag, negated: &negated) else {
                throw UsageError(description: "Unknown option '\(flag)'\(suggestion(for: flag).map { " (did you mean '\($0)'?)" } ?? "")")
            }
            switch row.form {
            case .flag:
                if let attached {
                    // --preload=false and friends, as a config file would say it.
                    guard let value = try? ConfigValue.string(attached).boolean(row.name) else {
                        throw UsageError(description: "option '\(flag)' takes no value (got '\(attached)')")
                    }
                    record(row, .boolean(negated ? !value : value))
                } else {
                    record(row, .boolean(!negated))
                }
            case .optionalValue(_, let implied):
                if let attached {
                    record(row, .string(attached))
                } else if index < arguments.count, !arguments[index].hasPrefix("-"), ProxyProtocolMode(text: arguments[index]) != nil {
                    record(row, .string(arguments[index]))
                    index += 1
                } else {
                    record(row, .string(implied))
                }
            case .value, .repeated:
                let value: String
                if let attached {
                    value = attached
                } else {
                    guard index < arguments.count else { throw UsageError(description: "option '\(flag)' needs a value") }
                    value = arguments[index]
                    index += 1
                }
                record(row, .string(value))
            case .fileOnly:
                throw UsageError(description: "'\(row.name)' is set in a config file only")
            }
        }
        for name in order {
            if let values = repeated[name] { result.settings.append((name, .array(values))) }
        }
        // Keep the command line's order: a repeated setting sits where it was first given.
        result.settings.sort { (order.firstIndex(of: $0.name) ?? 0) < (order.firstIndex(of: $1.name) ?? 0) }
        return result
    }

    /// A flag's row: exact, `--no-` of a negatable flag, or an unambiguous prefix of one long flag.
    private static func lookUp(_ flag: String, negated: inout Bool) throws(UsageError) -> Setting? {
        if let row = SettingsTable.row(forFlag: flag) { return row }
        if flag.hasPrefix("--no-"), let row = SettingsTable.row(forFlag: "--" + flag.dropFirst(5)), row.form == .flag(negatable: true) {
            negated = true
            return row
        }
        guard flag.hasPrefix("--"), flag.count > 3 else { return nil }
        let candidates = Set(SettingsTable.longFlags.filter { $0.hasPrefix(flag) }.compactMap { SettingsTable.row(forFlag: $0)?.name })
        if candidates.count > 1 {
            throw UsageError(description: "ambiguous option '\(flag)': could be \(SettingsTable.longFlags.filter { $0.hasPrefix(flag) }.joined(separator: ", "))")
        }
        return candidates.first.flatMap { name in SettingsTable.longFlags.first { $0.hasPrefix(flag) }.flatMap(SettingsTable.row(forFlag:)) }
    }

    static func suggestion(for flag: String) -> String? {
        let bare = flag.drop { $0 == "-" }
        return SettingsTable.longFlags.map { ($0, editDistance(String(bare), String($0.dropFirst(2)))) }
            .filter { $0.1 <= max(1, bare.count / 4) }.min { $0.1 < $1.1 }?.0
    }

    /// Splits `GUNICORN_CMD_ARGS` as Python's shlex.split does (POSIX quoting).
    public static func split(_ text: String) throws(UsageError) -> [String] {
        var words: [String] = []
        var word = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for character in text {
            if escaped {
                if quote == "\"" && !"\\\"$`\n".contains(character) { word.append("\\") }
                if character != "\n" || quote != nil { word.append(character) }
                escaped = false
                inWord = true
                continue
            }
            switch (quote, character) {
            case (nil, "\\"), ("\"", "\\"): escaped = true
            case (nil, "'"), (nil, "\""): quote = character; inWord = true
            case ("'", "'"), ("\"", "\""): quote = nil
            case (nil, _) where character.isWhitespace:
                if inWord { words.append(word); word = ""; inWord = false }
            default: word.append(character); inWord = true
            }
        }
        if quote != nil || escaped { throw UsageError(description: "unbalanced quotes in '\(text)'") }
        if inWord { words.append(word) }
        return words
    }
}

extension SettingsTable {
    /// The known key nearest to a misspelt one, for "did you mean".
    public static func suggestion(for key: String) -> String? {
        let bare = key.replacingOccurrences(of: "-", with: "_").lowercased()
        return rows.flatMap(\.keys).map { ($0, editDistance(bare, $0)) }.filter { $0.1 <= max(1, bare.count / 4) }.min { $0.1 < $1.1 }?.0
    }
}

/// Levenshtein distance, for suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
