/// Where a listening socket is: a TCP host and port (IPv4, IPv6 in brackets), a unix socket path, or a
/// socket this process was started with (Gunicorn's `fd://N`, from a supervisor that bound it).
public enum BindAddress: Hashable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)
    case descriptor(Int32)

    /// Parses `HOST:PORT`, `[::1]:PORT`, `:PORT`, `PORT`, `unix:PATH` and `fd://N`, as Gunicorn does.
    public init(parsing text: String) throws(ConfigError) {
        let spec = text.trimmingWhitespace()
        if spec.lowercased().hasPrefix("fd://") {
            guard let fd = Int32(spec.dropFirst(5)), fd >= 0 else {
                throw ConfigError.invalidValue(key: "bind", value: text, reason: "fd:// takes a descriptor number, like fd://3")
            }
            self = .descriptor(fd)
            return
        }
        if spec.hasPrefix("unix:") {
            let path = String(spec.dropFirst(5))
            guard !path.isEmpty else { throw ConfigError.invalidValue(key: "bind", value: text, reason: "a unix socket needs a path") }
            self = .unix(path: path)
            return
        }
        var host = "127.0.0.1"
        var portText = spec
        if spec.hasPrefix("[") {
            guard let close = spec.firstIndex(of: "]") else {
                throw ConfigError.invalidValue(key: "bind", value: text, reason: "unterminated '[' in an IPv6 address")
            }
            host = String(spec[spec.index(after: spec.startIndex)..<close])
            let rest = spec[spec.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw ConfigError.invalidValue(key: "bind", value: text, reason: "expected ':PORT' after the IPv6 address")
            }
            portText = String(rest.dropFirst())
        } else if let colon = spec.lastIndex(of: ":") {
            let h = String(spec[..<colon])
            if h.contains(":") {
                throw ConfigError.invalidValue(key: "bind", value: text, reason: "write IPv6 addresses in brackets, like [::1]:8000")
            }
            if !h.isEmpty { host = h }
            portText = String(spec[spec.index(after: colon)...])
        } else if Int(spec) == nil {
            // A bare host: Gunicorn's default port.
            host = spec
            portText = "8000"
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigError.invalidValue(key: "bind", value: text, reason: "the port must be a number from 0 to 65535")
        }
        guard !host.isEmpty else { throw ConfigError.invalidValue(key: "bind", value: text, reason: "empty host") }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        case .descriptor(let fd): return "fd://\(fd)"
        }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
