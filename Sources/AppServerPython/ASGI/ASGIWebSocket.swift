import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// One ASGI `websocket` connection: the handshake decided by the app (`websocket.accept`, or
/// `websocket.close` first for a 403), then whole messages both ways, close codes and reasons.
/// Like `ASGIRequest`, made on the I/O thread and otherwise used on the loop thread with the GIL;
/// the I/O thread's callbacks only post events.
final class ASGIWebSocket: ExchangeObserver, WebSocketDelegate, @unchecked Sendable {
    private enum State { case connecting, open, closed }

    /// Strong (the host lives as long as the worker process): a checked unowned reference cost an
    /// atomic retain and release at each use, and an unowned(unsafe) one at each method call on it.
    let host: ASGIHost
    let exchange: HTTPExchange
    private var state = State.connecting
    private var connectSent = false
    private var connection: WebSocketConnection?
    private var finished = false
    /// Messages the app has not received yet.
    private var inbound: [WebSocketMessage] = []
    /// How the connection ended, once it did (the app's `websocket.disconnect`).
    private var closedWith: (code: Int, reason: String)?
    private var pendingReceive = PendingFuture()
    private var pendingSend = PendingFuture()
    private var statusCode = 101

    init(host: ASGIHost, exchange: HTTPExchange) {
        self.host = host
        self.exchange = exchange
    }

    // MARK: I/O thread

    func exchangeDrained() {}
    func exchangeAborted() { host.post(.webSocketClosed(self, code: 1006, reason: ""), from: exchange.eventLoop) }
    func webSocketReceived(_ message: WebSocketMessage) { host.post(.webSocketMessage(self, message), from: exchange.eventLoop) }
    func webSocketClosed(code: Int, reason: String) { host.post(.webSocketClosed(self, code: code, reason: reason), from: exchange.eventLoop) }
    func webSocketDrained() { host.post(.webSocketDrained(self), from: exchange.eventLoop) }

    // MARK: loop thread

    func makeCallables() -> ASGICallables {
        ASGICallables(bound: self, receive: Self.receiveNative, send: Self.sendNative)
    }

    static let receiveNative = NativeFunction<ASGIWebSocket>("receive", "receive(): the next event of this websocket") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIWebSocket.self) { socket, _ throws(PythonError) in try socket.receive() }
    }
    static let sendNative = NativeFunction<ASGIWebSocket>("send", "send(message): an ASGI message for this websocket") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIWebSocket.self) { socket, arguments throws(PythonError) in
            try arguments.expect(1...1, "send() takes one message")
            return try socket.send(arguments[0])
        }
    }

    func receive() throws(PythonError) -> PyRef {
        if pendingReceive.isWaiting { throw PendingFuture.secondReceive() }
        let message = try nextMessage()
        return try pendingReceive.receive(on: host, message: message)
    }

    /// The next event if one is ready (nil: wait).
    private func nextMessage() throws(PythonError) -> PyRef? {
        let messages = host.messages
        if !connectSent {
            connectSent = true
            return try messages.simple(messages.webSocketConnect)
        }
        if !inbound.isEmpty {
            let message = inbound.removeFirst()
            connection?.consumed(message.size)
            let event = try messages.simple(messages.webSocketReceive)
            switch message {
            case .text(let buffer):
                let decoded = buffer.withUnsafeReadableBytes {
                    PyUnicode_DecodeUTF8($0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count, nil)
                }
                guard let text = PyRef(newReference: decoded) else {
                    // Not UTF-8: the protocol says close with 1007.
                    PyErr_Clear()
                    connection?.close(code: 1007, reason: "invalid UTF-8")
                    closed(code: 1007, reason: "invalid UTF-8")
                    return try disconnectMessage()
                }
                try Python.setItem(event.pointer, messages.text.pointer, text.pointer)
            case .binary(let buffer):
                let data = try Python.bytes(buffer)
                try Python.setItem(event.pointer, messages.bytes.pointer, data.pointer)
            }
            return event
        }
        if closedWith != nil { return try disconnectMessage() }
        return nil
    }

    private func disconnectMessage() throws(PythonError) -> PyRef {
        let messages = host.messages
        let event = try messages.simple(messages.webSocketDisconnect)
        try Python.setItem(event.pointer, messages.code.pointer, try Python.int(closedWith?.code ?? 1005))
        try Python.setItem(event.pointer, messages.reason.pointer, try Python.str(closedWith?.reason ?? ""))
        return event
    }

    private func wakeReceiver() {
        guard pendingReceive.isWaiting else { return }
        do {
            let message = try nextMessage()
            pendingReceive.deliver(on: host, message: message)
        } catch {
            pendingReceive.fail(on: host)   // making the message failed (no memory): the app's await raises it
        }
    }

    func received(_ message: WebSocketMessage) {
        guard state == .open else { return }
        inbound.append(message)
        wakeReceiver()
    }

    func closed(code: Int, reason: String) {
        if closedWith == nil { closedWith = (code, reason) }
        state = .closed
        wakeReceiver()
        drained()
    }

    func drained() {
        pendingSend.resolve(on: host, with: appserver_none())
    }

    func send(_ message: PyObjectPointer) throws(PythonError) -> PyRef {
        let messages = host.messages
        guard appserver_is_dict(message) != 0, let type = Python.item(message, messages.type.pointer) else {
            throw PythonError.typeError("send() takes an ASGI message dict with a 'type'")
        }
        let kind = try Python.string(type)
        switch (kind, state) {
        case ("websocket.accept", .connecting):
            try accept(message)
        case ("websocket.close", .connecting):
            // Refused before the handshake: 403, as Uvicorn.
            reject(status: "403 Forbidden")
        case ("websocket.send", .open):
            return try sendMessage(message)
        case ("websocket.close", .open):
            let code = try Python.item(message, messages.code.pointer).map { (value) throws(PythonError) -> Int in try Python.int(value) } ?? 1000
            var reason = ""
            if let value = Python.item(message, messages.reason.pointer), value != appserver_none() { reason = try Python.string(value) }
            connection?.close(code: code, reason: reason)
            closed(code: code, reason: reason)
        case ("websocket.send", .closed), ("websocket.close", .closed):
            break   // the peer is gone; what the app still sends is dropped
        case (_, .connecting) where kind.hasPrefix("websocket.http.response"):
            throw PythonError.runtimeError("the websocket denial response extension is not supported; send websocket.close for a 403")
        default:
            throw PythonError.runtimeError("unexpected ASGI message '\(kind)' for a websocket in state \(state)")
        }
        return host.completedFuture()
    }

    /// `websocket.accept`: the subprotocol and extra headers (pairs of bytes) go into the 101 response.
    private func accept(_ message: PyObjectPointer) throws(PythonError) {
        let messages = host.messages
        var subprotocol: String?
        if let value = Python.item(message, messages.subprotocol.pointer), value != appserver_none() {
            subprotocol = try Python.string(value)
        }
        var headers: [(name: [UInt8], value: [UInt8])] = []
        if let list = Python.item(message, messages.headers.pointer) {
            let sequence = try PyRef.checked(PySequence_Fast(list, "websocket.accept headers must be a list of [name, value] pairs"))
            for index in 0..<appserver_sequence_fast_size(sequence.pointer) {
                let pair = appserver_sequence_fast_item(sequence.pointer, index)!
                guard PySequence_Size(pair) == 2 else {
                    PyErr_Clear()
                    throw PythonError.valueError("each websocket.accept header must be a [name, value] pair of bytes")
                }
                // Each item is owned here: when the second cannot be had, the first is released all the same.
                let name = try PyRef.checked(PySequence_GetItem(pair, 0)), value = try PyRef.checked(PySequence_GetItem(pair, 1))
                var nameLength = 0, valueLength = 0
                guard let n = appserver_bytes_view(name.pointer, &nameLength), let v = appserver_bytes_view(value.pointer, &valueLength) else {
                    throw PythonError.typeError("websocket.accept header names and values must be bytes")
                }
                headers.append((Array(UnsafeRawBufferPointer(start: n, count: nameLength)), Array(UnsafeRawBufferPointer(start: v, count: valueLength))))
            }
        }
        let head = WebSocketHandshake.acceptResponse(for: exchange.request, subprotocol: subprotocol, headers: headers,
                                                     allocator: exchange.allocator)
        state = .open
        connection = exchange.upgradeToWebSocket(head: head, maxMessageSize: host.config.wsMaxSize, delegate: self)
        writeAccessLog()
    }

    private func sendMessage(_ message: PyObjectPointer) throws(PythonError) -> PyRef {
        let messages = host.messages
        var payload: WebSocketMessage?
        if let text = Python.item(message, messages.text.pointer), text != appserver_none() {
            var length = 0
            guard let utf8 = PyUnicode_AsUTF8AndSize(text, &length) else { throw PythonError() }
            var buffer = exchange.allocator.buffer(capacity: length)
            buffer.writeBytes(UnsafeRawBufferPointer(start: utf8, count: length))
            payload = .text(buffer)
        } else if let data = Python.item(message, messages.bytes.pointer), data != appserver_none() {
            var length = 0
            guard let raw = appserver_bytes_view(data, &length) else { throw PythonError.typeError("websocket.send 'bytes' must be bytes") }
            var buffer = exchange.allocator.buffer(capacity: length)
            buffer.writeBytes(UnsafeRawBufferPointer(start: raw, count: length))
            payload = .binary(buffer)
        }
        guard let payload else { throw PythonError.valueError("websocket.send needs 'text' or 'bytes'") }
        if let connection, connection.send(payload) { return try pendingSend.arm(on: host) }
        return host.completedFuture()
    }

    private func reject(status: String) {
        var writer = ResponseWriter(request: exchange.request, allocator: exchange.allocator, drain: true)
        let buffer = writer.serverError(status: status)
        statusCode = writer.statusCode
        state = .closed
        if closedWith == nil { closedWith = (1006, "") }
        _ = try? exchange.send(buffer, end: true, close: true)
        writeAccessLog()
    }

    /// The app's coroutine returned (`raised` nil) or raised.
    func done(_ raised: PyObjectPointer?) {
        guard !finished else { return }
        finished = true
        if let raised {
            WorkerMetrics.current?.appException()
            host.logger.error("Exception in ASGI application (websocket \(exchange.request.uri))\n\(Python.format(exception: raised))",
                              metadata: exchange.request.logMetadata)
        }
        switch state {
        case .connecting:
            // The app ended without accepting: 500 after an error, else 403.
            reject(status: raised == nil ? "403 Forbidden" : "500 Internal Server Error")
        case .open:
            connection?.close(code: raised == nil ? 1000 : 1011, reason: "")
            closed(code: raised == nil ? 1000 : 1011, reason: "")
        case .closed:
            break
        }
        pendingReceive.drop()
        pendingSend.drop()
    }

    private func writeAccessLog() {
        guard host.accessLog != nil else { return }
        let record = AccessLogRecord(request: exchange.request, status: statusCode, responseBytes: 0, responseHeaders: [], finished: .now())
        // Not gated: Uvicorn logs a websocket's acceptance to uvicorn.error, not to its access logger.
        host.writeAccessLine(record, gate: nil)
    }
}
