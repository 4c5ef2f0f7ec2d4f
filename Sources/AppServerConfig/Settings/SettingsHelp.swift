/// `--help` and the README's settings list, from the table.
extension SettingsTable {
    public static func helpText(version: String) -> String {
        var text = """
            appserver \(version): a pre-forking application server for Python web apps (WSGI and ASGI), systemd-native.

            Usage: appserver [OPTIONS] APP
                   appserver reload|upgrade|status --pid PID

            APP is MODULE:CALLABLE (default callable: application), or MODULE:FACTORY(ARGS).
            Settings come from, weakest first: defaults, the config file (-c; Python like gunicorn.conf.py, or
            TOML), $GUNICORN_CMD_ARGS, $APPSERVER_CMD_ARGS, the command line. Gunicorn's flags and config keys
            mean what they mean in Gunicorn.

            Signals: HUP reload the app, USR2 upgrade to the binary on disk, TERM/QUIT graceful stop, INT fast
            stop, TTIN/TTOU one worker more/less, USR1 reopen the log files.

            """
        for section in Setting.Section.allCases {
            let rows = self.rows.filter { $0.section == section && !$0.flags.isEmpty && !isGunicornOnly($0) }
            guard !rows.isEmpty else { continue }
            text += "\n\(section.rawValue):\n"
            for row in rows { text += line(for: row) }
        }
        text += "\n  -h, --help                Show this help.\n  -v, --version             Show the version.\n"
        let others = rows.filter(isGunicornOnly).map(\.name)
        text += "\nAccepted for Gunicorn's sake (without effect, or refused unless off; see the README): " + others.joined(separator: ", ") + ".\n"
        text += "Server hooks (in a Python config file): " + hookNames.joined(separator: ", ") + ".\n"
        return text
    }

    static func isGunicornOnly(_ row: Setting) -> Bool {
        switch row.support {
        case .implemented, .hook: return false
        case .noEffect, .refused: return true
        }
    }

    /// `-w, --workers INT`, with each flag and metavar dressed by the caller (plain text or roff).
    static func synopsis(of row: Setting, flag: (String) -> String = { $0 }, metavar: (String) -> String = { $0 }) -> String {
        var flags = row.flags.map(flag).joined(separator: ", ")
        switch row.form {
        case .value(let name), .repeated(let name): flags += " " + metavar(name)
        case .optionalValue(let name, _): flags += " [" + metavar(name) + "]"
        case .flag(let negatable): if negatable { flags += ", " + flag("--no-" + row.flags.last!.dropFirst(2)) }
        case .fileOnly: break
        }
        return flags
    }

    /// The help text with the default, unless the text says it already.
    static func helpWithDefault(_ row: Setting) -> String {
        guard let value = row.defaultText, !row.help.lowercased().contains("default"), value != "false" else { return row.help }
        return row.help + " (default \(value))"
    }

    static func line(for row: Setting) -> String {
        let flags = synopsis(of: row)
        var help = helpWithDefault(row)
        if !row.reloadable { help += " [restart]" }
        let pad = flags.count < 26 ? String(repeating: " ", count: 26 - flags.count) : "\n" + String(repeating: " ", count: 28)
        return "  \(flags)\(pad)\(help)\n"
    }

    /// A Markdown table of every setting (README, "Settings").
    public static func markdown() -> String {
        var text = "| setting | flags | what it does | default | HUP |\n|---|---|---|---|---|\n"
        for row in rows {
            let what: String
            switch row.support {
            case .implemented, .hook: what = row.help
            case .noEffect(let reason): what = "accepted, no effect: \(reason)"
            case .refused(let reason): what = "refused unless off: \(reason)"
            }
            let flags = row.flags.map { "`\($0)`" }.joined(separator: " ")
            text += "| `\(row.name)`\(row.aliases.isEmpty ? "" : " (" + row.aliases.map { "`\($0)`" }.joined(separator: ", ") + ")") | \(flags) | \(what.replacingOccurrences(of: "|", with: "\\|")) | \(row.defaultText.map { "`\($0.replacingOccurrences(of: "|", with: "\\|"))`" } ?? "") | \(row.reloadable ? "yes" : "restart") |\n"
        }
        return text
    }
}

extension SettingsTable {
    /// The man page's OPTIONS entries (packaging/appserver.1; a unit test keeps it in step).
    public static func roff() -> String {
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "\\", with: "\\e").replacingOccurrences(of: "-", with: "\\-")
        }
        var text = ""
        for section in Setting.Section.allCases {
            let rows = self.rows.filter { $0.section == section && !$0.flags.isEmpty && !isGunicornOnly($0) }
            guard !rows.isEmpty else { continue }
            text += ".SS \(section.rawValue)\n"
            for row in rows {
                let flags = synopsis(of: row, flag: { "\\fB\(escape($0))\\fR" }, metavar: { "\\fI\(escape($0))\\fR" })
                var help = helpWithDefault(row)
                help += " Config key \(row.keys.joined(separator: ", "))."
                if !row.reloadable { help += " Changed by a restart, not by HUP." }
                text += ".TP\n\(flags)\n\(escape(help))\n"
            }
        }
        return text
    }

    /// `appserver --generate-completion-script bash`: every flag, and the control commands.
    public static func bashCompletion() -> String {
        let flags = (rows.flatMap(\.flags) + rows.compactMap { row -> String? in
            if case .flag(negatable: true) = row.form { return "--no-" + row.flags.last!.dropFirst(2) }
            return nil
        } + ["--help", "--version"]).sorted()
        return """
            _appserver() {
                local current=${COMP_WORDS[COMP_CWORD]} previous=${COMP_WORDS[COMP_CWORD-1]}
                case $previous in
                    -c|--config|--chdir|--virtualenv|--pid|-p|--access-logfile|--error-logfile|--log-file|--worker-tmp-dir|--reload-extra-file|--log-config|--log-config-json)
                        COMPREPLY=($(compgen -f -- "$current")); return ;;
                esac
                if [ "$COMP_CWORD" -eq 1 ] && [[ $current != -* ]]; then
                    COMPREPLY=($(compgen -W "reload upgrade status" -- "$current"))
                elif [[ $current == -* ]]; then
                    COMPREPLY=($(compgen -W "\(flags.joined(separator: " "))" -- "$current"))
                fi
            }
            complete -F _appserver appserver

            """
    }
}
