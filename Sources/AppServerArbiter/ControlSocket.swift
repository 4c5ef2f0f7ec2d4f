import AppServerSystemd
import Foundation

/// The arbiter's control socket, through which `appserver reload|upgrade|status --pid PID` asks for
/// an action and waits for its outcome: a signal cannot say whether the reload it started worked.
///
/// An abstract unix socket named after the arbiter's pid (no file to create, clean up or protect, and
/// it works under any sandboxing that allows AF_UNIX). The protocol is one line each way: the client
/// sends `reload`, `upgrade` or `status`; the arbiter answers `ok MESSAGE` or `error MESSAGE` once the
/// outcome is known, then closes. Only root and the arbiter's own user may ask (SO_PEERCRED).
public enum ControlProtocol {
    public enum Request: String, Sendable {
        case reload, upgrade, status
        case statusJSON = "status-json"
    }

    static func name(pid: pid_t) -> String { "appserver-control-\(pid)" }

    /// The abstract address of the arbiter `pid`'s control socket.
    static func address(pid: pid_t) -> UnixSocketAddress {
        // The name is ~30 bytes, well inside the 107 an address holds.
        UnixSocketAddress(abstract: name(pid: pid))!
    }

    /// `struct ucred` (Glibc's module hides it without _GNU_SOURCE): three 32-bit ids, in this order.
    struct PeerCredentials {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
    }

    static func peerCredentials(_ fd: CInt) -> PeerCredentials? {
        var credentials = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 ? credentials : nil
    }
}

/// The arbiter's side: accepts clients, reads their one-line request, and answers when told.
final class ControlSocket {
    /// A connected client, until its request line has arrived.
    private struct Pending {
        var buffer: [UInt8] = []
        let since: Double
    }

    private let listener: CInt
    private var pending: [CInt: Pending] = [:]
    private static let maxPending = 16
    /// Seconds a client has to send its request line.
    private static let requestTimeout = 5.0

    /// Binds and listens on `appserver-control-<pid>`.
    init(pid: pid_t) throws(ControlSocketError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(operation: "socket") }
        guard ControlProtocol.address(pid: pid).withSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0 else {
            let error = ControlSocketError(operation: "bind")
            close(fd)
            throw error
        }
        listener = fd
    }

    /// The descriptors to poll: the listener and the clients whose request has not arrived.
    var descriptors: [CInt] { [listener] + pending.keys }

    /// Accepts new clients and reads what the pending ones sent; returns the complete requests.
    /// Clients that are not allowed, send nonsense or take too long are answered and closed here.
    func collectRequests(now: Double) -> [(client: CInt, request: ControlProtocol.Request)] {
        while pending.count < Self.maxPending {
            let client = accept(listener, nil, nil)
            if client < 0 { break }
            // Set before any fork: the arbiter is single-threaded.
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            _ = fcntl(client, F_SETFL, O_NONBLOCK)
            guard let credentials = ControlProtocol.peerCredentials(client),
                  credentials.uid == 0 || credentials.uid == geteuid() else {
                answer(client, ok: false, "permission denied: only root or the server's user may control it")
                continue
            }
            pending[client] = Pending(since: now)
        }
        var complete: [(CInt, ControlProtocol.Request)] = []
        for (client, var state) in pending {
            var chunk = [UInt8](repeating: 0, count: 64)
            let n = read(client, &chunk, chunk.count)
            if n > 0 { state.buffer += chunk[0..<n] }
            if let newline = state.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                pending[client] = nil
                let word = String(decoding: state.buffer[..<newline], as: UTF8.self)
                if let request = ControlProtocol.Request(rawValue: word) {
                    complete.append((client, request))
                } else {
                    answer(client, ok: false, "unknown request '\(word.prefix(40))'")
                }
            } else if n == 0 || (n < 0 && errno != EAGAIN) || state.buffer.count > 256 || now - state.since > Self.requestTimeout {
                pending[client] = nil
                close(client)
            } else {
                pending[client] = state
            }
        }
        return complete
    }

    /// Writes the one-line answer and closes the client (a client that left is no error).
    func answer(_ client: CInt, ok: Bool, _ message: String) {
        let line = Array("\(ok ? "ok" : "error") \(message.replacingOccurrences(of: "\n", with: " "))\n".utf8)
        _ = line.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        close(client)
    }

    /// In a forked worker, which must not hold the arbiter's control descriptors.
    func closeInChild() {
        close(listener)
        for client in pending.keys { close(client) }
    }

    func closeAll() {
        for client in pending.keys { close(client) }
        pending = [:]
        close(listener)
    }
}

struct ControlSocketError: Error, CustomStringConvertible {
    let operation: String
    let code = errno
    var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// The command's side: `appserver reload|upgrade|status --pid PID`.
public enum ControlClient {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sends `request` to the arbiter `pid` and waits up to `timeout` seconds for its answer; returns
    /// the message of an `ok` answer and throws with the reason otherwise.
    public static func send(_ request: ControlProtocol.Request, to pid: pid_t, timeout: Double) throws(Failure) -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ControlProtocol.address(pid: pid).withSockaddr({ connect(fd, $0, $1) }) == 0 else {
            let reason = errno == ECONNREFUSED ? "no appserver arbiter with pid \(pid) is listening for control requests"
                : String(cString: strerror(errno))
            throw Failure(description: kill(pid, 0) != 0 && errno == ESRCH ? "no process with pid \(pid)" : reason)
        }
        // The name is open to anyone: make sure the process answering is the one we mean.
        if let peer = ControlProtocol.peerCredentials(fd), peer.pid != pid {
            throw Failure(description: "the control socket of pid \(pid) belongs to process \(peer.pid); not sending")
        }
        let line = Array("\(request.rawValue)\n".utf8)
        // A refusal may be answered (and the socket closed) before the request is even sent: then
        // the send fails, but the answer is there to read.
        let sendError = line.withUnsafeBytes({ Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == line.count
            ? nil : String(cString: strerror(errno))
        var answer: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw Failure(description: "no answer within \(Int(timeout)) seconds; the \(request.rawValue) may still be in progress") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(left, 3600) * 1000))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            answer += chunk[0..<n]
            if answer.contains(UInt8(ascii: "\n")) { break }
        }
        let text = String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("ok ") { return String(text.dropFirst(3)) }
        if text.hasPrefix("error ") { throw Failure(description: String(text.dropFirst(6))) }
        if let sendError { throw Failure(description: "cannot send the request: \(sendError)") }
        throw Failure(description: "the server closed the connection without an answer (did it stop?)")
    }
}
