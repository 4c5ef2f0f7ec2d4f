/// A configuration problem: always one clear sentence for the user, and exit status 2.
public enum ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    case unknownKey(String, source: String)
    case invalidValue(key: String, value: String, reason: String)
    case configFile(path: String, reason: String)
    case app(String)
    /// A Gunicorn setting appserver does not do, given a value that asks for it.
    case refused(key: String, reason: String)

    public var description: String {
        switch self {
        case .unknownKey(let key, let source): return "unknown setting '\(key)' in \(source)"
        case .invalidValue(let key, let value, let reason): return "invalid value '\(value)' for '\(key)': \(reason)"
        case .configFile(let path, let reason): return "config file \(path): \(reason)"
        case .app(let reason): return reason
        case .refused(let key, let reason): return "'\(key)' is not supported: \(reason)"
        }
    }
}
