import Foundation
import TOMLKit

/// appserver's TOML config files: read with a complete TOML 1.0 reader (toml++, through TOMLKit), and
/// written by `--print-config` in a form that reads back to the same settings.
public enum TOMLConfig {
    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The top-level keys and their values; tables become `.table` values.
    public static func parse(_ text: String) throws(ParseError) -> [(key: String, value: ConfigValue)] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ParseError(description: "line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)")
        } catch {
            throw ParseError(description: "\(error)")
        }
        return try table.map { entry throws(ParseError) in (entry.0, try value(entry.1, key: entry.0)) }
    }

    private static func value(_ node: TOMLValueConvertible, key: String) throws(ParseError) -> ConfigValue {
        switch node.type {
        case .string: return .string(node.string ?? "")
        case .int: return .integer(node.int ?? 0)
        case .double: return .float(node.double ?? 0)
        case .bool: return .boolean(node.bool ?? false)
        case .array:
            var items: [ConfigValue] = []
            for item in node.array ?? TOMLArray() { items.append(try value(item, key: key)) }
            return .array(items)
        case .table:
            var entries: [String: ConfigValue] = [:]
            for (name, item) in node.table ?? TOMLTable() { entries[name] = try value(item, key: "\(key).\(name)") }
            return .table(entries)
        case .date, .time, .dateTime:
            // No setting takes a date; its text still reaches the setting, which says what it expected.
            return .string("\(node)")
        }
    }

    /// A config file holding `settings` (name, value), one `key = value` line each.
    public static func render(_ settings: [(name: String, value: ConfigValue)]) -> String {
        settings.map { "\($0.name) = \(literal($0.value))" }.joined(separator: "\n") + "\n"
    }

    static func literal(_ value: ConfigValue) -> String {
        switch value {
        case .string(let text): return quoted(text)
        case .integer(let number): return String(number)
        case .float(let number): return number.isFinite ? String(number) : number.isNaN ? "nan" : number > 0 ? "inf" : "-inf"
        case .boolean(let flag): return flag ? "true" : "false"
        case .array(let items): return "[" + items.map(literal).joined(separator: ", ") + "]"
        case .table(let entries):
            return "{ " + entries.sorted { $0.key < $1.key }.map { "\(quoted($0.key)) = \(literal($0.value))" }.joined(separator: ", ") + " }"
        case .null: return "\"\""
        }
    }

    /// A TOML basic string.
    static func quoted(_ text: String) -> String { text.doubleQuotedEscaped }
}

extension String {
    /// In double quotes, with the escapes that JSON strings and TOML basic strings share: `\"`, `\\`,
    /// `\n`, `\t`, `\r`, and `\uXXXX` for other control characters.
    public var doubleQuotedEscaped: String {
        var result = "\""
        for scalar in unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += String(format: "\\u%04X", scalar.value)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}
