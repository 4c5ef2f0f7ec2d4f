import AppServerConfig
import AppServerHTTP
import AppServerSystemd
import Foundation

/// A listening socket the arbiter holds for its workers.
public struct Listener: Sendable {
    public var descriptor: CInt
    /// `http://127.0.0.1:8000` or `unix:/run/app.sock`, for the log.
    public var description: String
    /// Where it came from: `bound` by us, or `systemd` (with its FileDescriptorName).
    public var origin: String
    /// A unix socket path this process created and removes on exit.
    public var unixPathToRemove: String?
    /// Its name for LISTEN_FDNAMES when handed to a new arbiter (systemd's FileDescriptorName, or ours:
    /// the scheme of a bind that gave one, so that the next arbiter serves it the same way).
    public var name: String = "appserver"
    /// What it speaks when its bind address or name says so; otherwise the server-wide settings.
    public var scheme: ListenerScheme?

    /// What a worker serves on it under `config` (which a reload may change, for listeners without a scheme).
    func options(_ config: ServerConfig) -> ListenerOptions {
        let protocolName = scheme?.protocolName ?? config.protocolName
        let proxy: ProxyProtocolMode
        if let scheme {
            proxy = scheme.proxyProtocol ? (config.proxyProtocol == .off ? .auto : config.proxyProtocol) : .off
        } else {
            proxy = config.proxyProtocol
        }
        return ListenerOptions(descriptor: descriptor, protocolName: protocolName, proxyProtocol: proxy)
    }
}

public enum ListenerError: Error, CustomStringConvertible {
    case bind(String, String)

    public var description: String {
        switch self {
        case .bind(let address, let reason): return "cannot listen on \(address): \(reason)"
        }
    }
}

enum Listeners {
    /// The name of the metrics socket among those systemd (or a previous arbiter) passes.
    static let metricsName = "metrics"

    /// The sockets systemd passed, when it passed any; else the configured addresses, bound now. A
    /// socket named `metrics` is the metrics endpoint's, not the app's; without one, `metrics_bind`
    /// is bound here.
    static func open(config: ServerConfig, upgrading: Bool) throws(ListenerError) -> (app: [Listener], metrics: Listener?) {
        let inherited = Systemd.listenDescriptors()
        var app: [Listener]
        var metrics: Listener?
        if !inherited.isEmpty {
            let from = upgrading ? "inherited from the previous arbiter" : "systemd"
            let all = inherited.map {
                Listener(descriptor: $0.descriptor, description: describe($0.descriptor), origin: "\(from) (\($0.name))", name: $0.name,
                         scheme: ListenerScheme(socketName: $0.name))
            }
            app = all.filter { $0.name != metricsName }
            metrics = all.first { $0.name == metricsName }
            if app.isEmpty { throw .bind("the sockets passed", "only a '\(metricsName)' socket was passed; the app needs one more") }
        } else {
            app = try bindConfigured(config)
        }
        if metrics == nil, let address = config.metricsBind {
            metrics = try bind(address, backlog: 64, umask: config.umask)
        }
        metrics?.name = metricsName
        return (app, metrics)
    }

    private static func bindConfigured(_ config: ServerConfig) throws(ListenerError) -> [Listener] {
        var listeners: [Listener] = []
        for spec in config.bind {
            var listener = try bind(spec.address, backlog: config.backlog, umask: config.umask,
                                    owner: (config.user?.uid, config.group ?? config.user?.primaryGroup), reusePort: config.reusePort)
            if let scheme = spec.scheme {
                listener.scheme = scheme
                listener.name = scheme.description
            }
            listeners.append(listener)
        }
        return listeners
    }

    static func bind(_ address: BindAddress, backlog: Int, umask mask: mode_t,
                     owner: (uid: uid_t?, gid: gid_t?) = (nil, nil), reusePort: Bool = false) throws(ListenerError) -> Listener {
        switch address {
        case .unix(let path):
            return try bindUnix(path, backlog: backlog, umask: mask, owner: owner)
        case .descriptor(let fd):
            return try adopt(fd, backlog: backlog)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &result)
            guard status == 0, let first = result else {
                throw .bind(address.description, String(cString: gai_strerror(status)))
            }
            defer { freeaddrinfo(result) }
            let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .bind(address.description, String(cString: strerror(errno))) }
            var one: CInt = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
            if reusePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<CInt>.size)) }
            // `[::]` keeps the kernel's default (dual-stack on Debian), as Gunicorn does.
            guard Glibc.bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0, listen(fd, CInt(backlog)) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw .bind(address.description, reason)
            }
            return Listener(descriptor: fd, description: describe(fd), origin: "bound")
        }
    }

    /// A socket this process was started with (`fd://N`, from a supervisor that bound it): a bound
    /// stream socket, listened on here if it is not yet, as Gunicorn does.
    private static func adopt(_ fd: CInt, backlog: Int) throws(ListenerError) -> Listener {
        let name = "fd://\(fd)"
        let flags = fcntl(fd, F_GETFD)
        guard flags >= 0 else { throw .bind(name, "descriptor \(fd) is not open; the process that starts appserver must pass it") }
        // Every descriptor the server opens itself is close-on-exec, and one that came through exec
        // cannot be: so a set flag means N was not passed, and the server's own socket took its number.
        guard flags & FD_CLOEXEC == 0 else { throw .bind(name, "descriptor \(fd) was not passed to appserver") }
        var type: CInt = 0, listening: CInt = 0
        var size = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 else { throw .bind(name, "descriptor \(fd) is not a socket") }
        guard type == CInt(SOCK_STREAM.rawValue) else { throw .bind(name, "descriptor \(fd) is not a stream (TCP or unix) socket") }
        size = socklen_t(MemoryLayout<CInt>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size)
        if listening == 0 {
            // listen() on an unbound socket would bind it to a random port.
            guard isBound(fd) else { throw .bind(name, "the socket on descriptor \(fd) is not bound to an address") }
            guard listen(fd, CInt(backlog)) == 0 else { throw .bind(name, String(cString: strerror(errno))) }
        }
        _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC)
        return Listener(descriptor: fd, description: describe(fd), origin: "passed as \(name)")
    }

    /// A socket's own address (getsockname) and its length; nil if it has none to tell.
    private static func localAddress(_ fd: CInt) -> (storage: sockaddr_storage, length: socklen_t)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return named == 0 ? (storage, length) : nil
    }

    /// Whether a socket has an address: a port, a path or an abstract name.
    private static func isBound(_ fd: CInt) -> Bool {
        guard let (storage, length) = localAddress(fd) else { return false }
        switch Int32(storage.ss_family) {
        case AF_INET, AF_INET6:
            // sin_port and sin6_port both follow the 2-byte family.
            return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: 2, as: UInt16.self) } != 0
        case AF_UNIX:
            return Int(length) > MemoryLayout<sa_family_t>.size
        default:
            return true
        }
    }

    private static func bindUnix(_ path: String, backlog: Int, umask mask: mode_t,
                                 owner: (uid: uid_t?, gid: gid_t?)) throws(ListenerError) -> Listener {
        guard let address = UnixSocketAddress(path: path) else {
            throw .bind("unix:\(path)", path.isEmpty ? "the path is empty" : "the path is longer than \(UnixSocketAddress.capacity) bytes")
        }
        // A socket file left by a server that died is replaced; any other file is not touched.
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else { throw .bind("unix:\(path)", "the path exists and is not a socket") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .bind("unix:\(path)", String(cString: strerror(errno))) }
        // The socket file's mode comes from the umask at bind time (Gunicorn's `umask`, default 0), so
        // that a proxy running as another user (nginx's www-data) can connect.
        let previousMask = Glibc.umask(mask)
        let bound = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        Glibc.umask(previousMask)
        // The workers' user and group own it, as in Gunicorn (`user`, `group`).
        if bound == 0, owner.uid != nil || owner.gid != nil,
           chown(path, owner.uid ?? uid_t.max, owner.gid ?? gid_t.max) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .bind("unix:\(path)", "cannot give the socket to the workers' user and group: \(reason)")
        }
        guard bound == 0, listen(fd, CInt(backlog)) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .bind("unix:\(path)", reason)
        }
        return Listener(descriptor: fd, description: "unix:\(path)", origin: "bound (mode \(fileMode(path)))", unixPathToRemove: path)
    }

    /// `0777 root:root`: a socket file's permissions and owner, for the log.
    static func fileMode(_ path: String) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { return "unknown" }
        let owner = getpwuid(info.st_uid).map { String(cString: $0.pointee.pw_name) } ?? String(info.st_uid)
        let group = getgrgid(info.st_gid).map { String(cString: $0.pointee.gr_name) } ?? String(info.st_gid)
        return "0" + String(info.st_mode & 0o777, radix: 8) + " \(owner):\(group)"
    }

    /// An IPv4 or IPv6 address as text (inet_ntop).
    private static func addressText(_ family: CInt, _ address: UnsafeRawPointer, _ capacity: Int) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: capacity) { text in
            inet_ntop(family, address, text.baseAddress, socklen_t(capacity)).map { String(cString: $0) } ?? "?"
        }
    }

    /// `http://HOST:PORT` or `unix:PATH` of a listening descriptor.
    static func describe(_ fd: CInt) -> String {
        guard let address = localAddress(fd) else { return "fd \(fd)" }
        var storage = address.storage
        let length = address.length
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var addr = p.pointee.sin_addr
                    return "http://\(addressText(AF_INET, &addr, Int(INET_ADDRSTRLEN))):\(UInt16(bigEndian: p.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var addr = p.pointee.sin6_addr
                    return "http://[\(addressText(AF_INET6, &addr, Int(INET6_ADDRSTRLEN)))]:\(UInt16(bigEndian: p.pointee.sin6_port))"
                }
            }
        case AF_UNIX:
            // sun_path follows the family; its length is what getsockname says.
            let start = MemoryLayout<sa_family_t>.size
            return withUnsafeBytes(of: storage) { raw in
                let path = raw[start..<max(start, Int(length))]
                // An abstract name (a leading NUL, no file) as systemd's ListenStream= writes it: @NAME.
                if path.first == 0 { return "unix:@" + String(decoding: path.dropFirst(), as: UTF8.self) }
                return "unix:" + String(decoding: path.prefix { $0 != 0 }, as: UTF8.self)
            }
        default:
            return "fd \(fd)"
        }
    }
}

extension Listeners {
    /// Connections waiting in each TCP listen queue, accepted by the kernel but not yet by a worker
    /// (TCP_INFO on a listening socket: tcpi_unacked), and the queue's length (tcpi_sacked).
    static func queues(_ listeners: [Listener]) -> [ServerSnapshot.ListenQueue] {
        listeners.compactMap { listener in
            var info = tcp_info()
            var size = socklen_t(MemoryLayout<tcp_info>.size)
            guard getsockopt(listener.descriptor, Int32(IPPROTO_TCP), TCP_INFO, &info, &size) == 0 else { return nil }
            return .init(listener: listener.description, waiting: Int(info.tcpi_unacked), limit: Int(info.tcpi_sacked))
        }
    }

    /// All of them, for statsd's `gunicorn.backlog`.
    static func backlog(_ listeners: [Listener]) -> Int {
        queues(listeners).reduce(0) { $0 + $1.waiting }
    }
}
