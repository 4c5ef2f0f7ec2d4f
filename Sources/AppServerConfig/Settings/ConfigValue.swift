/// A value read from a config file, the command line or the environment, before its setting checks it.
public enum ConfigValue: Equatable, Sendable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    case array([ConfigValue])
    case table([String: ConfigValue])
    /// Python's `None` in a config file: the setting's default.
    case null
}

extension ConfigValue {
    func string(_ key: String) throws(ConfigError) -> String {
        switch self {
        case .string(let s): return s
        case .integer(let i): return String(i)
        default: throw ConfigError.invalidValue(key: key, value: "\(self.text)", reason: "expected a string")
        }
    }

    /// A string, or nil for `None` (settings that are off unless given).
    func optionalString(_ key: String) throws(ConfigError) -> String? {
        if self == .null { return nil }
        return try string(key)
    }

    func strings(_ key: String) throws(ConfigError) -> [String] {
        switch self {
        case .array(let items): return try items.map { item throws(ConfigError) in try item.string(key) }
        case .null: return []
        default: return [try string(key)]
        }
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
        case .null: return false
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

    /// A whole number (Python's `int(text, 0)` forms too: 0x1F, 0o17, 1_000).
    func wholeNumber(_ key: String) throws(ConfigError) -> Int {
        switch self {
        case .integer(let i): return i
        case .string(let s):
            guard let i = ServerConfig.parseAutoInteger(s) else { throw ConfigError.invalidValue(key: key, value: s, reason: "expected a whole number") }
            return i
        case .float(let d) where d == d.rounded() && abs(d) < 1e15: return Int(d)
        default: throw ConfigError.invalidValue(key: key, value: text, reason: "expected a whole number")
        }
    }

    func integer(_ key: String, min: Int, max: Int) throws(ConfigError) -> Int {
        let number = try wholeNumber(key)
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
        case .table(let entries): return "{" + entries.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value.text)" }.joined(separator: ", ") + "}"
        case .null: return "None"
        }
    }

    /// True for the values that mean "not set": None, false, "", [] and {}.
    var isUnset: Bool {
        switch self {
        case .null, .boolean(false): return true
        case .string(let s): return s.isEmpty
        case .array(let items): return items.isEmpty
        case .table(let entries): return entries.isEmpty
        default: return false
        }
    }
}
