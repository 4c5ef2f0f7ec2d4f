import Foundation

/// The arbiter's own small HTTP listener (`metrics_bind`): /metrics, /healthz, /readyz and /status.
/// It runs inside the arbiter's loop on non-blocking sockets, so it never blocks the loop and needs
/// no thread (a thread in a process that forks would risk a lock held across fork). Each client
/// sends one request and gets one answer with `Connection: close`; one that is slow, too long or
/// not HTTP is dropped after `clientTimeout` seconds.
final class MetricsEndpoint {
    struct Response {
        var status: Int
        var contentType = "text/plain; charset=utf-8"
        var body: String
        var extraHeaders: [String] = []
    }

    private struct Client {
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var answered: Bool { !output.isEmpty }
        let since: Double
    }

    let listener: Listener
    private var clients: [CInt: Client] = [:]
    private static let maxClients = 64
    private static let maxRequestBytes = 8192
    private static let clientTimeout = 10.0

    init(listener: Listener) {
        self.listener = listener
        _ = fcntl(listener.descriptor, F_SETFL, fcntl(listener.descriptor, F_GETFL) | O_NONBLOCK)
    }

    /// What to poll: the listener and clients whose request is still arriving (read), clients whose
    /// answer did not fit in the socket at once (write).
    /// At the most clients the listener is left out: new connections wait in its backlog (polling it
    /// would wake the loop at once, again and again, until a client leaves).
    var readDescriptors: [CInt] {
        (clients.count < Self.maxClients ? [listener.descriptor] : []) + clients.filter { !$0.value.answered }.map(\.key)
    }
    var writeDescriptors: [CInt] { clients.filter { $0.value.answered }.map(\.key) }

    /// Accepts, reads, answers and writes whatever is ready, without waiting. `answer` gets the
    /// method and the path of each complete request.
    func service(now: Double, answer: (_ method: String, _ path: String) -> Response) {
        while clients.count < Self.maxClients {
            let client = accept(listener.descriptor, nil, nil)
            if client < 0 { break }
            // Set before any fork: the arbiter is single-threaded.
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            _ = fcntl(client, F_SETFL, O_NONBLOCK)
            clients[client] = Client(since: now)
        }
        for (fd, var client) in clients {
            if !client.answered {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                if n > 0 { client.input += chunk[0..<n] }
                if let request = Self.requestLine(client.input) {
                    let response = Self.route(request, answer)
                    client.output = Self.encode(response, headOnly: request.method == "HEAD")
                } else if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                    drop(fd)
                    continue
                } else if client.input.count > Self.maxRequestBytes {
                    client.output = Self.encode(Response(status: 431, body: "request head too large\n"), headOnly: false)
                }
            }
            if client.answered {
                let n = client.output[client.written...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n > 0 { client.written += n }
                if client.written >= client.output.count || (n < 0 && errno != EAGAIN && errno != EINTR) {
                    drop(fd)
                    continue
                }
            }
            if now - client.since > Self.clientTimeout {
                drop(fd)
                continue
            }
            clients[fd] = client
        }
    }

    private func drop(_ fd: CInt) {
        clients[fd] = nil
        close(fd)
    }

    /// The method and path of a complete request head (the rest of it is not needed).
    static func requestLine(_ input: [UInt8]) -> (method: String, path: String)? {
        guard let end = input.firstRange(of: [13, 10, 13, 10]) ?? input.firstRange(of: [10, 10]) else { return nil }
        // The request line, up to its LF (a String would take CR LF for one character).
        var line = input[..<(input.firstIndex(of: 10) ?? end.lowerBound)]
        if line.last == 13 { line = line.dropLast() }
        let words = String(decoding: line, as: UTF8.self).split(separator: " ")
        guard words.count == 3, words[2].hasPrefix("HTTP/1.") else { return ("", "") }
        let target = words[1]
        return (String(words[0]), String(target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""))
    }

    private static func route(_ request: (method: String, path: String), _ answer: (String, String) -> Response) -> Response {
        if request.method.isEmpty { return Response(status: 400, body: "bad request\n") }
        guard request.method == "GET" || request.method == "HEAD" else {
            return Response(status: 405, body: "only GET and HEAD\n", extraHeaders: ["Allow: GET, HEAD"])
        }
        return answer(request.method, request.path)
    }

    static func encode(_ response: Response, headOnly: Bool) -> [UInt8] {
        let body = Array(response.body.utf8)
        var head = "HTTP/1.1 \(response.status) \(reason(response.status))\r\nServer: appserver\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(body.count)\r\nCache-Control: no-store\r\nConnection: close\r\n"
        for header in response.extraHeaders { head += header + "\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (headOnly ? [] : body)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 431: return "Request Header Fields Too Large"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }

    /// In a forked worker, which must not hold the arbiter's descriptors.
    func closeInChild() {
        close(listener.descriptor)
        for fd in clients.keys { close(fd) }
    }

    /// Stops answering (the listening socket stays open where another arbiter needs it).
    func closeClients() {
        for fd in clients.keys { close(fd) }
        clients = [:]
    }
}
