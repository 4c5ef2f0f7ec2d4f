import AppServerConfig
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
    /// Its name for LISTEN_FDNAMES when handed to a new arbiter (systemd's FileDescriptorName, or ours).
    public var name: String = "appserver"
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
    /// The sockets systemd passed, when it passed any; else the configured addresses, bound now.
    static func open(config: ServerConfig, upgrading: Bool) throws(ListenerError) -> [Listener] {
        let inherited = Systemd.listenDescriptors()
        if !inherited.isEmpty {
            let from = upgrading ? "inherited from the previous arbiter" : "systemd"
            return inherited.map {
                Listener(descriptor: $0.descriptor, description: describe($0.descriptor), origin: "\(from) (\($0.name))", name: $0.name)
            }
        }
        var listeners: [Listener] = []
        for address in config.bind {
            listeners.append(try bind(address, backlog: config.backlog))
        }
        return listeners
    }

    static func bind(_ address: BindAddress, backlog: Int) throws(ListenerError) -> Listener {
        switch address {
        case .unix(let path):
            return try bindUnix(path, backlog: backlog)
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
            // `[::]` keeps the kernel's default (dual-stack on Debian), as Gunicorn does.
            guard Glibc.bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0, listen(fd, CInt(backlog)) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw .bind(address.description, reason)
            }
            return Listener(descriptor: fd, description: describe(fd), origin: "bound")
        }
    }

    private static func bindUnix(_ path: String, backlog: Int) throws(ListenerError) -> Listener {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { throw .bind("unix:\(path)", "the path is longer than \(capacity - 1) bytes") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        // A socket file left by a server that died is replaced; any other file is not touched.
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else { throw .bind("unix:\(path)", "the path exists and is not a socket") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .bind("unix:\(path)", String(cString: strerror(errno))) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, CInt(backlog)) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .bind("unix:\(path)", reason)
        }
        return Listener(descriptor: fd, description: "unix:\(path)", origin: "bound", unixPathToRemove: path)
    }

    /// `http://HOST:PORT` or `unix:PATH` of a listening descriptor.
    static func describe(_ fd: CInt) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard ok == 0 else { return "fd \(fd)" }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var addr = p.pointee.sin_addr
                    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    inet_ntop(AF_INET, &addr, &text, socklen_t(text.count))
                    return "http://\(String(cString: text)):\(UInt16(bigEndian: p.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var addr = p.pointee.sin6_addr
                    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    inet_ntop(AF_INET6, &addr, &text, socklen_t(text.count))
                    return "http://[\(String(cString: text))]:\(UInt16(bigEndian: p.pointee.sin6_port))"
                }
            }
        case AF_UNIX:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { p in
                    var path = p.pointee.sun_path
                    let text = withUnsafeBytes(of: &path) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                    return "unix:\(text)"
                }
            }
        default:
            return "fd \(fd)"
        }
    }
}
