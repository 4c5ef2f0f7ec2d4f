/// A value read from a config file or the command line.
public enum ConfigValue: Equatable, Sendable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    case array([ConfigValue])
}

/// Reads the TOML that appserver's config files use: `key = value` lines, comments, basic and literal
/// strings, integers, floats, booleans, (multi-line) arrays and `[table]` headers (keys inside a table
/// come out dotted, `table.key`). Anything else is an error naming the line, never a guess.
public struct TOMLReader {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    private var bytes: [UInt8]
    private var index = 0
    private var line = 1

    public static func parse(_ text: String) throws(ParseError) -> [(key: String, value: ConfigValue, line: Int)] {
        var reader = TOMLReader(bytes: Array(text.utf8))
        return try reader.document()
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private var atEnd: Bool { index >= bytes.count }
    private var peek: UInt8? { atEnd ? nil : bytes[index] }

    private func fail(_ message: String) -> ParseError { ParseError(line: line, message: message) }

    private mutating func skipSpaces() {
        while let c = peek, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { index += 1 }
    }

    private mutating func skipComment() {
        if peek == UInt8(ascii: "#") { while let c = peek, c != UInt8(ascii: "\n") { index += 1 } }
    }

    /// Skips blanks, comments and newlines (inside arrays and between statements).
    private mutating func skipTrivia() {
        while true {
            skipSpaces()
            skipComment()
            if peek == UInt8(ascii: "\r") { index += 1; continue }
            if peek == UInt8(ascii: "\n") { index += 1; line += 1; continue }
            return
        }
    }

    private mutating func endOfStatement() throws(ParseError) {
        skipSpaces()
        skipComment()
        if peek == UInt8(ascii: "\r") { index += 1 }
        guard atEnd || peek == UInt8(ascii: "\n") else { throw fail("unexpected text after the value") }
    }

    private mutating func document() throws(ParseError) -> [(key: String, value: ConfigValue, line: Int)] {
        var entries: [(key: String, value: ConfigValue, line: Int)] = []
        var seen = Set<String>()
        var table = ""
        while true {
            skipTrivia()
            guard let c = peek else { return entries }
            if c == UInt8(ascii: "[") {
                index += 1
                skipSpaces()
                let name = try key()
                skipSpaces()
                guard peek == UInt8(ascii: "]") else { throw fail("expected ']' to close the table header") }
                index += 1
                try endOfStatement()
                table = name + "."
                continue
            }
            let startLine = line
            let name = table + (try key())
            skipSpaces()
            guard peek == UInt8(ascii: "=") else { throw fail("expected '=' after '\(name)'") }
            index += 1
            skipSpaces()
            let v = try value()
            try endOfStatement()
            guard seen.insert(name).inserted else { throw ParseError(line: startLine, message: "'\(name)' is set twice") }
            entries.append((name, v, startLine))
        }
    }

    private static func isBareKeyByte(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    private mutating func key() throws(ParseError) -> String {
        var parts: [String] = []
        while true {
            if peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'") {
                guard case .string(let s) = try value() else { throw fail("bad quoted key") }
                parts.append(s)
            } else {
                let start = index
                while let c = peek, Self.isBareKeyByte(c) { index += 1 }
                guard index > start else { throw fail("expected a key") }
                parts.append(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            skipSpaces()
            guard peek == UInt8(ascii: ".") else { return parts.joined(separator: ".") }
            index += 1
            skipSpaces()
        }
    }

    private mutating func value() throws(ParseError) -> ConfigValue {
        guard let c = peek else { throw fail("expected a value") }
        switch c {
        case UInt8(ascii: "\""): return .string(try basicString())
        case UInt8(ascii: "'"): return .string(try literalString())
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "{"): throw fail("inline tables are not used in appserver's config")
        default: return try scalar()
        }
    }

    private mutating func basicString() throws(ParseError) -> String {
        index += 1
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw fail("unterminated string") }
            index += 1
            switch c {
            case UInt8(ascii: "\""): return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\n"): throw fail("unterminated string")
            case UInt8(ascii: "\\"):
                guard let e = peek else { throw fail("unterminated string") }
                index += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let n = e == UInt8(ascii: "u") ? 4 : 8
                    guard index + n <= bytes.count,
                          let code = UInt32(String(decoding: bytes[index..<index + n], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(code) else { throw fail("bad unicode escape") }
                    index += n
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw fail("unknown escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            default: out.append(c)
            }
        }
    }

    private mutating func literalString() throws(ParseError) -> String {
        index += 1
        let start = index
        while let c = peek, c != UInt8(ascii: "'") {
            if c == UInt8(ascii: "\n") { throw fail("unterminated string") }
            index += 1
        }
        guard peek == UInt8(ascii: "'") else { throw fail("unterminated string") }
        defer { index += 1 }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func array() throws(ParseError) -> ConfigValue {
        index += 1
        var items: [ConfigValue] = []
        while true {
            skipTrivia()
            if peek == UInt8(ascii: "]") { index += 1; return .array(items) }
            items.append(try value())
            skipTrivia()
            if peek == UInt8(ascii: ",") { index += 1; continue }
            guard peek == UInt8(ascii: "]") else { throw fail("expected ',' or ']' in an array") }
        }
    }

    private mutating func scalar() throws(ParseError) -> ConfigValue {
        let start = index
        while let c = peek, c != UInt8(ascii: ","), c != UInt8(ascii: "]"), c != UInt8(ascii: "#"),
              c != UInt8(ascii: " "), c != UInt8(ascii: "\t"), c != UInt8(ascii: "\n"), c != UInt8(ascii: "\r") { index += 1 }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if text == "true" { return .boolean(true) }
        if text == "false" { return .boolean(false) }
        let digits = text.replacingUnderscoresBetweenDigits()
        if let i = Int(digits) { return .integer(i) }
        if digits.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let d = Double(digits) { return .float(d) }
        throw fail(text.isEmpty ? "expected a value" : "'\(text)' is not a TOML value (strings need quotes)")
    }
}

extension String {
    fileprivate func replacingUnderscoresBetweenDigits() -> String {
        guard contains("_") else { return self }
        let chars = Array(self)
        var out = ""
        for (i, ch) in chars.enumerated() {
            if ch == "_", i > 0, i + 1 < chars.count, chars[i - 1].isNumber, chars[i + 1].isNumber { continue }
            out.append(ch)
        }
        return out
    }
}
