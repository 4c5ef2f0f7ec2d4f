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

    unowned let host: ASGIHost
    let exchange: HTTPExchange
    private var state = State.connecting
    private var connectSent = false
    private var connection: WebSocketConnection?
    private var finished = false
    /// Messages the app has not received yet.
    private var inbound: [WebSocketMessage] = []
    /// How the connection ended, once it did (the app's `websocket.disconnect`).
    private var closedWith: (code: Int, reason: String)?
    private var pendingReceive: PyObjectPointer?
    private var pendingSend: PyObjectPointer?
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

    func makeCallables() -> ASGICallables.Set {
        ASGICallables.make(bound: self, receive: ASGIWebSocketCallables.receive, send: ASGIWebSocketCallables.send)
    }

    func receive() -> PyObjectPointer? {
        if pendingReceive != nil {
            PyErr_SetString(appserver_exc_runtime_error(), "receive() called again before the previous call returned")
            return nil
        }
        if let message = nextMessage() { return message.flatMap { host.doneFuture(with: $0) } }
        guard let future = host.newFuture() else { return nil }
        pendingReceive = retained(future)
        return future
    }

    /// The next event if one is ready (nil: wait); `.some(nil)` when making it raised.
    private func nextMessage() -> PyObjectPointer?? {
        let messages = host.messages
        if !connectSent {
            connectSent = true
            return .some(messages.simple(messages.webSocketConnect))
        }
        if !inbound.isEmpty {
            let message = inbound.removeFirst()
            connection?.consumed(message.size)
            let event = PyDict_New()!
            PyDict_SetItem(event, messages.type, messages.webSocketReceive)
            switch message {
            case .text(let buffer):
                let text = buffer.withUnsafeReadableBytes {
                    PyUnicode_DecodeUTF8($0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count, nil)
                }
                guard let text else {
                    // Not UTF-8: the protocol says close with 1007.
                    PyErr_Clear()
                    Py_DecRef(event)
                    connection?.close(code: 1007, reason: "invalid UTF-8")
                    closed(code: 1007, reason: "invalid UTF-8")
                    return .some(disconnectMessage())
                }
                PyDict_SetItem(event, messages.text, text)
                Py_DecRef(text)
            case .binary(let buffer):
                let data = buffer.withUnsafeReadableBytes { bytes(Array($0)) }
                PyDict_SetItem(event, messages.bytes, data)
                Py_DecRef(data)
            }
            return .some(event)
        }
        if closedWith != nil { return .some(disconnectMessage()) }
        return nil
    }

    private func disconnectMessage() -> PyObjectPointer {
        let messages = host.messages
        let event = PyDict_New()!
        PyDict_SetItem(event, messages.type, messages.webSocketDisconnect)
        let code = PyLong_FromLong(closedWith?.code ?? 1005)!
        PyDict_SetItem(event, messages.code, code)
        Py_DecRef(code)
        let reason = PyUnicode_FromString(closedWith?.reason ?? "")!
        PyDict_SetItem(event, messages.reason, reason)
        Py_DecRef(reason)
        return event
    }

    private func wakeReceiver() {
        guard let future = pendingReceive, let message = nextMessage() else { return }
        pendingReceive = nil
        if let message { host.resolve(future, with: message) } else { PyErr_Clear() }
        Py_DecRef(future)
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
        guard let future = pendingSend else { return }
        pendingSend = nil
        host.resolve(future, with: retained(appserver_none()))
        Py_DecRef(future)
    }

    func send(_ message: PyObjectPointer?) -> PyObjectPointer? {
        let messages = host.messages
        guard let message, appserver_is_dict(message) != 0,
              let type = PyDict_GetItem(message, messages.type), let typeText = PyUnicode_AsUTF8(type) else {
            if PyErr_Occurred() == nil { PyErr_SetString(appserver_exc_type_error(), "send() takes an ASGI message dict with a 'type'") }
            return nil
        }
        let kind = String(cString: typeText)
        switch (kind, state) {
        case ("websocket.accept", .connecting):
            accept(message)
        case ("websocket.close", .connecting):
            // Refused before the handshake: 403, as Uvicorn.
            reject(status: "403 Forbidden")
        case ("websocket.send", .open):
            return sendMessage(message)
        case ("websocket.close", .open):
            let code = PyDict_GetItem(message, messages.code).map { Int(PyLong_AsLong($0)) } ?? 1000
            let reason = PyDict_GetItem(message, messages.reason).flatMap { $0 == appserver_none() ? nil : PyUnicode_AsUTF8($0) }
                .map { String(cString: $0) } ?? ""
            if PyErr_Occurred() != nil { return nil }
            connection?.close(code: code, reason: reason)
            closed(code: code, reason: reason)
        case ("websocket.send", .closed), ("websocket.close", .closed):
            break   // the peer is gone; what the app still sends is dropped
        case (_, .connecting) where kind.hasPrefix("websocket.http.response"):
            PyErr_SetString(appserver_exc_runtime_error(), "the websocket denial response extension is not supported; send websocket.close for a 403")
            return nil
        default:
            PyErr_SetString(appserver_exc_runtime_error(), "unexpected ASGI message '\(kind)' for a websocket in state \(state)")
            return nil
        }
        return retained(host.doneFuture)
    }

    private func accept(_ message: PyObjectPointer) {
        let messages = host.messages
        var subprotocol: String?
        if let value = PyDict_GetItem(message, messages.subprotocol), value != appserver_none(), let text = PyUnicode_AsUTF8(value) {
            subprotocol = String(cString: text)
        }
        var headers: [(name: [UInt8], value: [UInt8])] = []
        if let list = PyDict_GetItem(message, messages.headers), let sequence = PySequence_Fast(list, "headers must be a list") {
            for index in 0..<appserver_sequence_fast_size(sequence) {
                let pair = appserver_sequence_fast_item(sequence, index)!
                guard PySequence_Size(pair) == 2, let name = PySequence_GetItem(pair, 0), let value = PySequence_GetItem(pair, 1) else {
                    PyErr_Clear()
                    continue
                }
                var nameLength = 0, valueLength = 0
                if let n = appserver_bytes_view(name, &nameLength), let v = appserver_bytes_view(value, &valueLength) {
                    headers.append((Array(UnsafeRawBufferPointer(start: n, count: nameLength)), Array(UnsafeRawBufferPointer(start: v, count: valueLength))))
                }
                Py_DecRef(name)
                Py_DecRef(value)
            }
            Py_DecRef(sequence)
        }
        PyErr_Clear()
        let head = WebSocketHandshake.acceptResponse(for: exchange.request, subprotocol: subprotocol, headers: headers,
                                                     allocator: exchange.allocator)
        state = .open
        connection = exchange.upgradeToWebSocket(head: head, maxMessageSize: host.config.wsMaxSize, delegate: self)
        writeAccessLog()
    }

    private func sendMessage(_ message: PyObjectPointer) -> PyObjectPointer? {
        let messages = host.messages
        var payload: WebSocketMessage?
        if let text = PyDict_GetItem(message, messages.text), text != appserver_none() {
            var length = 0
            guard let utf8 = PyUnicode_AsUTF8AndSize(text, &length) else { return nil }
            var buffer = exchange.allocator.buffer(capacity: length)
            buffer.writeBytes(UnsafeRawBufferPointer(start: utf8, count: length))
            payload = .text(buffer)
        } else if let data = PyDict_GetItem(message, messages.bytes), data != appserver_none() {
            var length = 0
            guard let raw = appserver_bytes_view(data, &length) else {
                PyErr_SetString(appserver_exc_type_error(), "websocket.send 'bytes' must be bytes")
                return nil
            }
            var buffer = exchange.allocator.buffer(capacity: length)
            buffer.writeBytes(UnsafeRawBufferPointer(start: raw, count: length))
            payload = .binary(buffer)
        }
        guard let payload else {
            PyErr_SetString(appserver_exc_value_error(), "websocket.send needs 'text' or 'bytes'")
            return nil
        }
        if let connection, connection.send(payload), let future = host.newFuture() {
            pendingSend = retained(future)
            return future
        }
        return retained(host.doneFuture)
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
            host.logger.error("Exception in ASGI application (websocket \(exchange.request.uri))\n\(PythonRuntime.formatException(raised))",
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
        for future in [pendingReceive, pendingSend].compactMap({ $0 }) { Py_DecRef(future) }
        pendingReceive = nil
        pendingSend = nil
    }

    private func writeAccessLog() {
        guard let log = host.accessLog else { return }
        let record = AccessLogRecord(request: exchange.request, status: statusCode, responseBytes: 0, responseHeaders: [], finished: .now())
        let line = log.formatter.format(record)
        log.file.write(log.file.isJournal ? "<6>" + line : line)
    }
}

enum ASGIWebSocketCallables {
    nonisolated(unsafe) static let receive = ASGICallables.definition("receive", "receive(): the next event of this websocket") { capsule, _, _ in
        ASGICallables.owner(capsule, as: ASGIWebSocket.self)?.receive()
    }
    nonisolated(unsafe) static let send = ASGICallables.definition("send", "send(message): an ASGI message for this websocket") { capsule, args, count in
        guard let socket = ASGICallables.owner(capsule, as: ASGIWebSocket.self) else { return nil }
        guard count == 1, let args else { return NativeFunctions.typeError("send() takes one message") }
        return socket.send(args[0])
    }
}
