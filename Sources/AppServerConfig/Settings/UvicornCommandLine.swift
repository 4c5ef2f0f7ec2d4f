/// Uvicorn's command line, for those who start their app with `uvicorn main:app --host ... --port ...`
/// (Uvicorn's own process manager, which its docs now suggest over Gunicorn's UvicornWorker). Its
/// options become appserver's before the command line is read: the same meaning under appserver's
/// name, or a note that one has no effect here, or a refusal that says what to use instead. Options
/// that Uvicorn and Gunicorn share (`--workers`, `--reload`, `--root-path`, `--proxy-headers`,
/// `--forwarded-allow-ips`, `--backlog`, `--lifespan`, `--loop`, `--ws-max-size`) need nothing.
public enum UvicornCommandLine {
    public struct Translation: Equatable {
        public var arguments: [String]
        public var notes: [ServerConfig.Note]
        /// `--factory`: the app is a factory, to be called for the app (`module:create_app()`).
        public var factory: Bool
    }

    private enum Rule {
        /// The same meaning under appserver's (or Gunicorn's) flag.
        case renamed(String)
        /// A flag without a value, as these arguments.
        case replaced([String])
        /// Uvicorn's own tuning of its HTTP and websocket layer: accepted, and said to have no effect.
        case inert(takesValue: Bool)
        /// Not offered: the reason, with what to use instead.
        case refused(String)
        /// Read specially below (--host, --port, --uds, --fd, --factory, --log-config, --interface, --log-level).
        case special
    }

    private static let rules: [String: Rule] = [
        "--host": .special, "--port": .special, "--uds": .special, "--fd": .special, "--factory": .special,
        "--log-config": .special, "--interface": .special, "--log-level": .special,
        "--timeout-keep-alive": .renamed("--keep-alive"),
        "--limit-max-requests": .renamed("--max-requests"),
        "--timeout-graceful-shutdown": .renamed("--graceful-timeout"),
        "--app-dir": .renamed("--pythonpath"),
        "--access-log": .replaced(["--access-logfile", "-"]),
        "--no-access-log": .replaced([]),
        "--ssl-keyfile": .renamed("--keyfile"), "--ssl-certfile": .renamed("--certfile"), "--ssl-ca-certs": .renamed("--ca-certs"),
        "--ssl-ciphers": .renamed("--ciphers"), "--ssl-version": .renamed("--ssl-version"), "--ssl-cert-reqs": .renamed("--cert-reqs"),
        "--ssl-keyfile-password": .renamed("--keyfile"),
        "--env-file": .refused("Uvicorn's --env-file is not read: give the variables with -e KEY=VALUE (or systemd's EnvironmentFile=)"),
        "--http": .inert(takesValue: true), "--ws": .inert(takesValue: true), "--ws-ping-interval": .inert(takesValue: true),
        "--ws-ping-timeout": .inert(takesValue: true), "--ws-per-message-deflate": .inert(takesValue: true),
        "--limit-concurrency": .inert(takesValue: true), "--h11-max-incomplete-event-size": .inert(takesValue: true),
        "--header": .inert(takesValue: true), "--timeout-worker-healthcheck": .inert(takesValue: true),
        "--reload-dir": .inert(takesValue: true), "--reload-include": .inert(takesValue: true),
        "--reload-exclude": .inert(takesValue: true), "--reload-delay": .inert(takesValue: true),
        "--use-colors": .inert(takesValue: false), "--no-use-colors": .inert(takesValue: false),
        "--server-header": .inert(takesValue: false), "--no-server-header": .inert(takesValue: false),
        "--date-header": .inert(takesValue: false), "--no-date-header": .inert(takesValue: false),
    ]

    public static func translate(_ arguments: [String]) throws(CommandLineReader.UsageError) -> Translation {
        var out: [String] = []
        var notes: [ServerConfig.Note] = []
        var factory = false
        var host: String?, port: String?
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" {
                out += arguments[(index - 1)...]
                break
            }
            let flag = argument.hasPrefix("--") ? String(argument.prefix { $0 != "=" }) : argument
            guard let rule = rules[flag] else {
                out.append(argument)
                continue
            }
            let attached = flag.count < argument.count ? String(argument.dropFirst(flag.count + 1)) : nil
            func value() throws(CommandLineReader.UsageError) -> String {
                if let attached { return attached }
                guard index < arguments.count else { throw CommandLineReader.UsageError(description: "option '\(flag)' needs a value") }
                index += 1
                return arguments[index - 1]
            }
            switch rule {
            case .renamed(let name):
                out += [name, try value()]
            case .replaced(let replacement):
                out += replacement
            case .inert(let takesValue):
                if takesValue { _ = try value() }
                notes.append(.init(level: .info, text: "Uvicorn's \(flag) has no effect: it tunes Uvicorn's own HTTP and websocket layer"))
            case .refused(let reason):
                throw CommandLineReader.UsageError(description: reason)
            case .special:
                switch flag {
                case "--host": host = try value()
                case "--port": port = try value()
                case "--uds": out += ["--bind", "unix:" + (try value())]
                case "--fd": out += ["--bind", "fd://" + (try value())]
                case "--factory": factory = true
                case "--log-config":
                    // Uvicorn's takes .json and .yaml too; Gunicorn's is a fileConfig file.
                    let path = try value()
                    if path.hasSuffix(".json") {
                        out += ["--log-config-json", path]
                    } else if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
                        throw CommandLineReader.UsageError(description: "a YAML logging config is not read: give it as JSON (--log-config-json) or a fileConfig .ini (--log-config)")
                    } else {
                        out += ["--log-config", path]
                    }
                case "--log-level":
                    let level = try value()
                    out += ["--log-level", level == "trace" ? "debug" : level]   // Uvicorn's level below debug
                default:   // --interface: Uvicorn's asgi3 is ASGI; asgi2 (a class per connection) is not served
                    let kind = try value()
                    if kind == "asgi2" {
                        throw CommandLineReader.UsageError(description: "ASGI 2 apps are not served: an ASGI 3 app is one coroutine function (scope, receive, send)")
                    }
                    out += ["--interface", kind == "asgi3" ? "asgi" : kind]
                }
            }
        }
        if host != nil || port != nil {
            // Uvicorn's defaults: 127.0.0.1 and 8000.
            let name = host ?? "127.0.0.1"
            out += ["--bind", (name.contains(":") ? "[\(name)]" : name) + ":" + (port ?? "8000")]
        }
        return Translation(arguments: out, notes: notes, factory: factory)
    }
}
