import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// One ASGI `http` request: its `receive` and `send` callables (native functions bound to
/// this object through a capsule) and the state between them. Made on the I/O thread; everything
/// else happens on the loop thread with the GIL, except the observer calls, which only post events.
final class ASGIRequest: ExchangeObserver, @unchecked Sendable {
    unowned let host: ASGIHost
    let exchange: HTTPExchange
    private var writer: ResponseWriter
    private var responseStarted = false
    private var responseComplete = false
    private var bodyComplete = false
    private var disconnected = false
    private var finished = false
    /// The app's coroutine until it ends (`done` lets it go; not weak: a weak reference costs an
    /// allocation per request).
    var task: ASGITask?
    var isFinished: Bool { finished }
    /// The future of a `receive()` that waits for body bytes or the client leaving.
    private var pendingReceive: PyObjectPointer?
    /// The future of a `send()` that waits for the socket to drain.
    private var pendingSend: PyObjectPointer?

    init(host: ASGIHost, exchange: HTTPExchange) {
        self.host = host
        self.exchange = exchange
        self.writer = ResponseWriter(request: exchange.request, allocator: exchange.allocator, drain: exchange.serverIsDraining)
    }

    // MARK: ExchangeObserver (I/O thread)

    func exchangeDrained() { host.post(.drained(self), from: exchange.eventLoop) }
    func exchangeAborted() { host.post(.aborted(self), from: exchange.eventLoop) }

    // MARK: callables

    /// New references to `receive` and `send`, which keep this request alive.
    func makeCallables() -> ASGICallables.Set {
        ASGICallables.make(bound: self, receive: ASGICallables.receive, send: ASGICallables.send)
    }

    // MARK: receive

    func receive() -> PyObjectPointer? {
        if pendingReceive != nil {
            PyErr_SetString(appserver_exc_runtime_error(), "receive() called again before the previous call returned")
            return nil
        }
        if let message = nextMessage() { return host.doneFuture(with: message) }
        guard let future = host.newFuture() else { return nil }
        Py_IncRef(future)
        pendingReceive = future
        return future
    }

    /// The next message if one is ready; nil when `receive` has to wait (a body read is then armed).
    private func nextMessage() -> PyObjectPointer? {
        if disconnected || responseComplete { return host.messages.disconnect() }
        if bodyComplete { return nil }   // waits for the client to leave or the response to end
        let poll = exchange.body.poll(max: 1 << 20, allocator: exchange.allocator) { [weak self] in
            guard let self else { return }
            self.host.post(.bodyReadable(self), from: self.exchange.eventLoop)
        }
        switch poll {
        case .data(let buffer, let more):
            bodyComplete = !more
            let body = buffer.readableBytes == 0 ? retained(host.messages.emptyBytes)
                : buffer.withUnsafeReadableBytes { bytes(Array($0)) }
            return host.messages.request(body: body, more: more)
        case .pending:
            return nil
        case .failed(.tooLarge(let limit)):
            host.logger.info("request body over the limit (\(limit) bytes): \(exchange.request.method) \(exchange.request.uri)")
            if !responseStarted { sendServerError("413 Request Entity Too Large") }
            disconnected = true
            return host.messages.disconnect()
        case .failed(.malformed(let reason)):
            host.logger.debug("malformed request body (\(reason)): \(exchange.request.method) \(exchange.request.uri)")
            if !responseStarted { sendServerError("400 Bad Request") }
            disconnected = true
            return host.messages.disconnect()
        case .failed:
            disconnected = true
            return host.messages.disconnect()
        }
    }

    /// Body bytes arrived (or the end, or a failure) while `receive` waited.
    func bodyReadable() {
        guard let future = pendingReceive, let message = nextMessage() else { return }
        pendingReceive = nil
        host.resolve(future, with: message)
        Py_DecRef(future)
    }

    // MARK: send

    func send(_ message: PyObjectPointer?) -> PyObjectPointer? {
        guard let message, appserver_is_dict(message) != 0 else {
            PyErr_SetString(appserver_exc_type_error(), "send() takes an ASGI message dict")
            return nil
        }
        guard let type = PyDict_GetItem(message, host.messages.type), let typeText = PyUnicode_AsUTF8(type) else {
            if PyErr_Occurred() == nil { PyErr_SetString(appserver_exc_value_error(), "an ASGI message needs a 'type'") }
            return nil
        }
        switch String(cString: typeText) {
        case "http.response.start":
            if responseStarted {
                PyErr_SetString(appserver_exc_runtime_error(), "http.response.start sent twice")
                return nil
            }
            guard startResponse(message) else { return nil }
            return retained(host.doneFuture)
        case "http.response.body":
            guard responseStarted else {
                PyErr_SetString(appserver_exc_runtime_error(), "http.response.body sent before http.response.start")
                return nil
            }
            if responseComplete {
                if disconnected { return retained(host.doneFuture) }
                PyErr_SetString(appserver_exc_runtime_error(), "http.response.body sent after the response was complete")
                return nil
            }
            return sendBody(message)
        case "http.response.trailers":
            return retained(host.doneFuture)   // trailers are not sent (HTTP/1.1 clients rarely ask for them)
        default:
            PyErr_SetString(appserver_exc_value_error(), "unexpected ASGI message type '\(String(cString: typeText))' for an http scope")
            return nil
        }
    }

    private func startResponse(_ message: PyObjectPointer) -> Bool {
        guard let statusObject = PyDict_GetItem(message, host.messages.status) else {
            PyErr_SetString(appserver_exc_value_error(), "http.response.start needs a 'status'")
            return false
        }
        let code = PyLong_AsLong(statusObject)
        if code == -1 && PyErr_Occurred() != nil { return false }
        guard host.messages.statusLine(code).withUnsafeBytes({ (try? writer.begin(status: $0)) != nil }) else {
            PyErr_SetString(appserver_exc_value_error(), "invalid response status \(code)")
            return false
        }
        if let headers = PyDict_GetItem(message, host.messages.headers), !addHeaders(headers) { return false }
        responseStarted = true
        return true
    }

    private func addHeaders(_ headers: PyObjectPointer) -> Bool {
        guard let sequence = PySequence_Fast(headers, "the response headers must be a list of [name, value] pairs") else { return false }
        defer { Py_DecRef(sequence) }
        for index in 0..<appserver_sequence_fast_size(sequence) {
            let pair = appserver_sequence_fast_item(sequence, index)!
            guard PySequence_Size(pair) == 2, let name = PySequence_GetItem(pair, 0) else {
                PyErr_Clear()
                PyErr_SetString(appserver_exc_value_error(), "each response header must be a [name, value] pair of bytes")
                return false
            }
            defer { Py_DecRef(name) }
            guard let value = PySequence_GetItem(pair, 1) else { return false }
            defer { Py_DecRef(value) }
            var nameLength = 0, valueLength = 0
            guard let nameBytes = appserver_bytes_view(name, &nameLength), let valueBytes = appserver_bytes_view(value, &valueLength) else {
                PyErr_SetString(appserver_exc_type_error(), "response header names and values must be bytes")
                return false
            }
            let added = (try? writer.addHeader(name: UnsafeRawBufferPointer(start: nameBytes, count: nameLength),
                                              value: UnsafeRawBufferPointer(start: valueBytes, count: valueLength))) != nil
            if !added {
                PyErr_SetString(appserver_exc_value_error(), "invalid response header \(String(decoding: UnsafeRawBufferPointer(start: nameBytes, count: nameLength), as: UTF8.self))")
                return false
            }
        }
        return true
    }

    private func sendBody(_ message: PyObjectPointer) -> PyObjectPointer? {
        var length = 0
        var body: UnsafePointer<CChar>?
        if let object = PyDict_GetItem(message, host.messages.body) {
            body = appserver_bytes_view(object, &length)
            if body == nil {
                var view = Py_buffer()
                guard PyObject_GetBuffer(object, &view, PyBUF_SIMPLE) == 0 else { return nil }
                defer { PyBuffer_Release(&view) }
                return sendBody(UnsafeRawBufferPointer(start: view.buf, count: view.len), more: moreBody(message))
            }
        }
        return sendBody(UnsafeRawBufferPointer(start: body, count: length), more: moreBody(message))
    }

    private func moreBody(_ message: PyObjectPointer) -> Bool {
        guard let more = PyDict_GetItem(message, host.messages.moreBody) else { return false }
        return PyObject_IsTrue(more) == 1
    }

    private func sendBody(_ chunk: UnsafeRawBufferPointer, more: Bool) -> PyObjectPointer? {
        var buffer: ByteBuffer
        if !writer.headSent {
            buffer = writer.finishHead(knownLength: more ? nil : Int64(chunk.count))
        } else {
            buffer = exchange.allocator.buffer(capacity: chunk.count + 16)
        }
        writer.appendBody(chunk, to: &buffer)
        if !more {
            writer.finishBody(into: &buffer)
            completeResponse()
        }
        if disconnected { return retained(host.doneFuture) }
        do {
            let mustWait = try host.queueWrite(exchange, buffer, end: !more, close: writer.closeConnection)
            if mustWait && more, let future = host.newFuture() {
                Py_IncRef(future)
                pendingSend = future
                return future
            }
        } catch {
            disconnected = true
        }
        return retained(host.doneFuture)
    }

    /// The response is whole: a `receive` waiting for the client's departure gets `http.disconnect`
    /// (as with Uvicorn), and the access log gets its line.
    private func completeResponse() {
        responseComplete = true
        writeAccessLog()
        if let future = pendingReceive {
            pendingReceive = nil
            host.resolve(future, with: host.messages.disconnect())
            Py_DecRef(future)
        }
    }

    func drained() {
        guard let future = pendingSend else { return }
        pendingSend = nil
        host.resolve(future, with: retained(appserver_none()))
        Py_DecRef(future)
    }

    func aborted() {
        disconnected = true
        bodyReadable()   // a waiting receive() gets http.disconnect
        drained()        // a waiting send() returns; what the app sends from now on is dropped
        // Answered 504 after `timeout`: the coroutine is cancelled, as asyncio.timeout would.
        if exchange.timedOut { task?.cancel(message: "appserver: the request ran past the timeout") }
    }

    // MARK: the end of the app's call

    /// The app's coroutine returned (`raised` nil) or raised.
    func done(_ raised: PyObjectPointer?) {
        guard !finished else { return }
        finished = true
        task = nil
        let uri = exchange.request.uri
        if let raised {
            if !disconnected {
                WorkerMetrics.current?.appException()
                host.logger.error("Exception in ASGI application (\(exchange.request.method) \(uri))\n\(PythonRuntime.formatException(raised))",
                                  metadata: exchange.request.logMetadata)
            }
        } else if !responseComplete && !disconnected {
            host.logger.error("ASGI callable returned without \(responseStarted ? "completing" : "starting") the response (\(exchange.request.method) \(uri))")
        }
        if !responseComplete {
            if writer.headSent || disconnected {
                responseComplete = true
                host.flushOutbox()   // what the app sent goes out before the connection closes
                exchange.abortConnection()
            } else {
                sendServerError("500 Internal Server Error")
            }
        }
        for future in [pendingReceive, pendingSend].compactMap({ $0 }) { Py_DecRef(future) }
        pendingReceive = nil
        pendingSend = nil
    }

    private func sendServerError(_ status: String) {
        let buffer = writer.serverError(status: status)
        responseStarted = true
        completeResponse()
        _ = try? host.queueWrite(exchange, buffer, end: true, close: true)
    }

    private func writeAccessLog() {
        guard let log = host.accessLog else { return }
        let record = AccessLogRecord(request: exchange.request, status: writer.statusCode, responseBytes: writer.bodyBytesSent,
                                     responseHeaders: [], finished: .now())
        let line = log.formatter.format(record)
        log.file.write(log.file.isJournal ? "<6>" + line : line)
    }
}

/// The native functions behind each request's callables, and the loop's own hooks.
enum ASGICallables {
    typealias FastCall = @convention(c) (PyObjectPointer?, UnsafePointer<PyObjectPointer?>?, Py_ssize_t) -> PyObjectPointer?

    nonisolated(unsafe) static let receive = definition("receive", "receive(): the next ASGI event of this request") { capsule, _, _ in
        guard let request = ASGICallables.owner(capsule, as: ASGIRequest.self) else { return nil }
        return request.receive()
    }
    nonisolated(unsafe) static let send = definition("send", "send(message): an ASGI message for this request") { capsule, args, count in
        guard let request = ASGICallables.owner(capsule, as: ASGIRequest.self) else { return nil }
        guard count == 1, let args else { return NativeFunctions.typeError("send() takes one message") }
        return request.send(args[0])
    }
    typealias Set = (receive: PyObjectPointer, send: PyObjectPointer)

    /// Two native functions bound (through one capsule that retains it) to `owner`.
    static func make(bound owner: AnyObject, receive: UnsafeMutablePointer<PyMethodDef>, send: UnsafeMutablePointer<PyMethodDef>) -> Set {
        let capsule = capsule(retaining: owner)
        defer { Py_DecRef(capsule) }
        return (PyCFunction_NewEx(receive, capsule, nil)!, PyCFunction_NewEx(send, capsule, nil)!)
    }

    /// A capsule that keeps `owner` alive, for binding native functions to it (a new reference).
    static func capsule(retaining owner: AnyObject) -> PyObjectPointer {
        PyCapsule_New(Unmanaged.passRetained(owner).toOpaque(), nil) { capsule in
            guard let pointer = PyCapsule_GetPointer(capsule, nil) else { return }
            Unmanaged<AnyObject>.fromOpaque(pointer).release()
        }!
    }

    /// The object a bound function's capsule holds.
    static func owner<Owner: AnyObject>(_ capsule: PyObjectPointer?, as type: Owner.Type) -> Owner? {
        guard let capsule, let pointer = PyCapsule_GetPointer(capsule, nil) else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? Owner
    }

    static func definition(_ name: String, _ doc: String, _ body: FastCall) -> UnsafeMutablePointer<PyMethodDef> {
        let definition = UnsafeMutablePointer<PyMethodDef>.allocate(capacity: 1)   // lives as long as the process
        definition.initialize(to: PyMethodDef(ml_name: UnsafePointer(strdup(name)), ml_meth: unsafeBitCast(body, to: PyCFunction.self),
                                              ml_flags: METH_FASTCALL, ml_doc: UnsafePointer(strdup(doc))))
        return definition
    }
}

/// `object` with one more reference (to return it).
func retained(_ object: PyObjectPointer) -> PyObjectPointer {
    Py_IncRef(object)
    return object
}
