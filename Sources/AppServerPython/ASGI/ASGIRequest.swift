import AppServerHTTP
import CPython
import CPythonShim
import Glibc
import NIOCore

/// One ASGI `http` request: its `receive` and `send` callables (native functions bound to
/// this object through a capsule) and the state between them. Made on the I/O thread; everything
/// else happens on the loop thread with the GIL, except the observer calls, which only post events.
final class ASGIRequest: ExchangeObserver, @unchecked Sendable {
    /// Strong, though the host lives as long as the worker process: one retain and one release a
    /// request. A checked unowned reference cost an atomic retain and release at each use, and so did an
    /// unowned(unsafe) one at each method call on it (made strong for the call), several a request.
    let host: ASGIHost
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
    private var pendingReceive = PendingFuture()
    /// The future of a `send()` that waits for the socket to drain.
    private var pendingSend = PendingFuture()

    /// Borrowing: each is retained once, for its store. Owned parameters (an init's default) cost the
    /// caller a retain and a release of each around the call besides.
    init(host: borrowing ASGIHost, exchange: borrowing HTTPExchange) {
        self.host = copy host
        self.exchange = copy exchange
        self.writer = ResponseWriter(request: exchange.request, recycling: exchange.responseBuffer(), drain: exchange.serverIsDraining)
    }

    // MARK: ExchangeObserver (I/O thread)

    func exchangeDrained() { host.post(.drained(self), from: exchange.eventLoop) }
    func exchangeAborted() { host.post(.aborted(self), from: exchange.eventLoop) }

    // MARK: callables

    /// `receive` and `send`, which keep this request alive.
    func makeCallables() -> ASGICallables {
        ASGICallables(bound: self, receive: Self.receiveNative, send: Self.sendNative)
    }

    static let receiveNative = NativeFunction<ASGIRequest>("receive", "receive(): the next ASGI event of this request") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIRequest.self) { request, _ throws(PythonError) in try request.receive() }
    }
    static let sendNative = NativeFunction<ASGIRequest>("send", "send(message): an ASGI message for this request") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGIRequest.self) { request, arguments throws(PythonError) in
            try arguments.expect(1...1, "send() takes one message")
            return try request.send(arguments[0])
        }
    }

    // MARK: receive

    func receive() throws(PythonError) -> PyRef {
        if pendingReceive.isWaiting { throw PendingFuture.secondReceive() }
        let message = try nextMessage()
        return try pendingReceive.receive(on: host, message: message)
    }

    /// The next message if one is ready; nil when `receive` has to wait (a body read is then armed).
    private func nextMessage() throws(PythonError) -> PyRef? {
        if disconnected || responseComplete { return try host.messages.disconnect() }
        if bodyComplete { return nil }   // waits for the client to leave or the response to end
        // Held by the body until it ends or fails (the connection going away fails it), so not weak:
        // a weak reference would give this object a side table (an allocation, and slow retains).
        let poll = exchange.body.poll(max: 1 << 20, allocator: exchange.allocator) { [self] in
            host.post(.bodyReadable(self), from: exchange.eventLoop)
        }
        switch poll {
        case .data(let buffer, let more):
            bodyComplete = !more
            let body = buffer.readableBytes == 0 ? host.messages.emptyBytes.copy()
                : try Python.bytes(buffer)
            return try host.messages.request(body: body, more: more)
        case .pending:
            return nil
        case .failed(.tooLarge(let limit)):
            host.logger.info("request body over the limit (\(limit) bytes): \(exchange.request.method) \(exchange.request.uri)")
            if !responseStarted { sendServerError("413 Request Entity Too Large") }
            disconnected = true
            return try host.messages.disconnect()
        case .failed(.malformed(let reason)):
            host.logger.debug("malformed request body (\(reason)): \(exchange.request.method) \(exchange.request.uri)")
            if !responseStarted { sendServerError("400 Bad Request") }
            disconnected = true
            return try host.messages.disconnect()
        case .failed:
            disconnected = true
            return try host.messages.disconnect()
        }
    }

    /// Body bytes arrived (or the end, or a failure) while `receive` waited.
    func bodyReadable() {
        guard pendingReceive.isWaiting else { return }
        do {
            let message = try nextMessage()
            pendingReceive.deliver(on: host, message: message)
        } catch {
            pendingReceive.fail(on: host)   // making the message failed (no memory): the app's await raises it
        }
    }

    // MARK: send

    func send(_ message: PyObjectPointer) throws(PythonError) -> PyRef {
        guard appserver_is_dict(message) != 0 else { throw PythonError.typeError("send() takes an ASGI message dict") }
        let messages = host.messages
        guard let type = Python.item(message, messages.type.pointer) else { throw PythonError.valueError("an ASGI message needs a 'type'") }
        // The two types of every response are told without making a String of them, the one the
        // response expects next first (each message then costs one comparison).
        if !responseStarted && messages.isType(type, messages.httpResponseStart) {
            try startResponse(message)
            return host.completedFuture()
        }
        if messages.isType(type, messages.httpResponseBody) {
            guard responseStarted else { throw PythonError.runtimeError("http.response.body sent before http.response.start") }
            if responseComplete {
                if disconnected { return host.completedFuture() }
                throw PythonError.runtimeError("http.response.body sent after the response was complete")
            }
            return try sendBody(message)
        }
        if responseStarted && messages.isType(type, messages.httpResponseStart) {
            throw PythonError.runtimeError("http.response.start sent twice")
        }
        switch try Python.string(type) {
        case "http.response.trailers":
            return host.completedFuture()   // trailers are not sent (HTTP/1.1 clients rarely ask for them)
        case "http.response.pathsend" where host.config.sendfile:
            guard responseStarted else { throw PythonError.runtimeError("http.response.pathsend sent before http.response.start") }
            if responseComplete {
                if disconnected { return host.completedFuture() }
                throw PythonError.runtimeError("http.response.pathsend sent after the response was complete")
            }
            try sendPath(message)
            return host.completedFuture()
        case let other:
            throw PythonError.valueError("unexpected ASGI message type '\(other)' for an http scope")
        }
    }

    private func startResponse(_ message: PyObjectPointer) throws(PythonError) {
        guard let statusObject = Python.item(message, host.messages.status.pointer) else {
            throw PythonError.valueError("http.response.start needs a 'status'")
        }
        let code = try Python.int(statusObject)
        guard host.messages.statusLine(code).withUnsafeBytes({ (try? writer.begin(status: $0)) != nil }) else {
            throw PythonError.valueError("invalid response status \(code)")
        }
        if let headers = Python.item(message, host.messages.headers.pointer) { try addHeaders(headers) }
        responseStarted = true
    }

    private func addHeaders(_ headers: PyObjectPointer) throws(PythonError) {
        let sequence = try PyRef.checked(PySequence_Fast(headers, "the response headers must be a list of [name, value] pairs"))
        for index in 0..<appserver_sequence_fast_size(sequence.pointer) {
            let pair = appserver_sequence_fast_item(sequence.pointer, index)!
            guard PySequence_Size(pair) == 2 else {
                PyErr_Clear()
                throw PythonError.valueError("each response header must be a [name, value] pair of bytes")
            }
            let name = try PyRef.checked(PySequence_GetItem(pair, 0)), value = try PyRef.checked(PySequence_GetItem(pair, 1))
            var nameLength = 0, valueLength = 0
            guard let nameBytes = appserver_bytes_view(name.pointer, &nameLength), let valueBytes = appserver_bytes_view(value.pointer, &valueLength) else {
                throw PythonError.typeError("response header names and values must be bytes")
            }
            let nameBuffer = UnsafeRawBufferPointer(start: nameBytes, count: nameLength)
            if (try? writer.addHeader(name: nameBuffer, value: UnsafeRawBufferPointer(start: valueBytes, count: valueLength))) == nil {
                throw PythonError.valueError("invalid response header \(String(decoding: nameBuffer, as: UTF8.self))")
            }
        }
    }

    private func sendBody(_ message: PyObjectPointer) throws(PythonError) -> PyRef {
        var length = 0
        var body: UnsafePointer<CChar>?
        if let object = Python.item(message, host.messages.body.pointer) {
            body = appserver_bytes_view(object, &length)
            if body == nil {
                var view = Py_buffer()
                guard PyObject_GetBuffer(object, &view, PyBUF_SIMPLE) == 0 else { throw PythonError() }
                defer { PyBuffer_Release(&view) }
                return try sendBody(UnsafeRawBufferPointer(start: view.buf, count: view.len), of: nil, more: moreBody(message))
            }
            return try sendBody(UnsafeRawBufferPointer(start: body, count: length), of: object, more: moreBody(message))
        }
        return try sendBody(UnsafeRawBufferPointer(start: nil, count: 0), of: nil, more: moreBody(message))
    }

    private func moreBody(_ message: PyObjectPointer) -> Bool {
        guard let more = Python.item(message, host.messages.moreBody.pointer) else { return false }
        return PyObject_IsTrue(more) == 1
    }

    /// `chunk` is the bytes of `object` when that is a bytes object (a large one goes out uncopied).
    private func sendBody(_ chunk: UnsafeRawBufferPointer, of object: PyObjectPointer?, more: Bool) throws(PythonError) -> PyRef {
        var buffer: ByteBuffer
        if !writer.headSent {
            buffer = writer.finishHead(knownLength: more ? nil : Int64(chunk.count))
        } else {
            // A large chunk under a Content-Length needs no buffer: a zero capacity allocates nothing.
            let copied = object == nil ? chunk.count : BytesBuffer.copiedSize(chunk.count)
            buffer = exchange.allocator.buffer(capacity: copied + writer.framingRoom)
        }
        var pieces: [ByteBuffer] = []
        if let object {
            BytesBuffer.append(object, chunk, with: &writer, to: &buffer, pieces: &pieces)
        } else {
            writer.appendBody(chunk, to: &buffer)
        }
        if !more {
            writer.finishBody(into: &buffer)
            completeResponse()
        }
        if disconnected { return host.completedFuture() }
        let mustWait: Bool
        do {
            mustWait = try host.queueWrite(exchange, buffer, after: pieces, end: !more, close: writer.closeConnection)
        } catch {
            disconnected = true
            return host.completedFuture()
        }
        if mustWait && more { return try pendingSend.arm(on: host) }
        return host.completedFuture()
    }

    /// `http.response.pathsend` (ASGI's Path Send extension, offered unless `--no-sendfile`): the file at
    /// `path` is the rest of the response, sent with sendfile(2) by the I/O thread. A relative path is
    /// the worker's working directory's, as the app's own `open` would take it. A file that cannot be
    /// opened raises its OSError in the app before anything went out (so the client gets a 500).
    private func sendPath(_ message: PyObjectPointer) throws(PythonError) {
        guard let path = Python.item(message, host.messages.path.pointer) else {
            throw PythonError.valueError("http.response.pathsend needs a 'path'")
        }
        guard !writer.headSent else {
            // Its framing is set by the body that went: the file cannot be its remainder.
            throw PythonError.runtimeError("http.response.pathsend sent after http.response.body: it must be the whole body")
        }
        let encoded = try PyRef.checked(PyUnicode_EncodeFSDefault(path))
        var info = stat()
        let fd = open(PyBytes_AsString(encoded.pointer), O_RDONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0, fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            let error = fd < 0 ? errno : (info.st_mode & S_IFMT) == S_IFDIR ? EISDIR : EINVAL
            if fd >= 0 { close(fd) }
            errno = error
            PyErr_SetFromErrnoWithFilenameObject(appserver_exc_os_error(), path)
            throw PythonError()
        }
        if disconnected {
            close(fd)
            completeResponse()
            return
        }
        let (head, length) = writer.finishFileResponse(available: Int64(info.st_size))
        completeResponse()
        do {
            if length == 0 {
                close(fd)
                _ = try host.queueWrite(exchange, head, end: true, close: writer.closeConnection)
            } else {
                host.flushOutbox()   // the responses before this one go first
                // The end of the response: nothing to wait for (the I/O thread closes the file).
                _ = try exchange.sendFile(descriptor: fd, offset: 0, length: length, header: head, end: true, close: writer.closeConnection)
            }
        } catch {
            disconnected = true
        }
    }

    /// The response is whole: a `receive` waiting for the client's departure gets `http.disconnect`
    /// (as with Uvicorn), and the access log gets its line.
    private func completeResponse() {
        responseComplete = true
        writeAccessLog()
        guard pendingReceive.isWaiting else { return }
        if let message = try? host.messages.disconnect() { pendingReceive.deliver(on: host, message: message) } else { pendingReceive.fail(on: host) }
    }

    func drained() {
        pendingSend.resolve(on: host, with: appserver_none())
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
        if let raised {
            if !disconnected {
                WorkerMetrics.current?.appException()
                host.logger.error("Exception in ASGI application (\(exchange.request.method) \(exchange.request.uri))\n\(Python.format(exception: raised))",
                                  metadata: exchange.request.logMetadata)
            }
        } else if !responseComplete && !disconnected {
            host.logger.error("ASGI callable returned without \(responseStarted ? "completing" : "starting") the response (\(exchange.request.method) \(exchange.request.uri))")
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
        pendingReceive.drop()
        pendingSend.drop()
    }

    private func sendServerError(_ status: String) {
        let buffer = writer.serverError(status: status)
        responseStarted = true
        completeResponse()
        _ = try? host.queueWrite(exchange, buffer, end: true, close: true)
    }

    private func writeAccessLog() {
        guard host.accessLog != nil else { return }
        let record = AccessLogRecord(request: exchange.request, status: writer.statusCode, responseBytes: writer.bodyBytesSent,
                                     responseHeaders: [], finished: .now())
        host.writeAccessLine(record, gate: host.accessGate)
    }
}

/// The `receive` and `send` of one request or websocket: native functions bound to it through one
/// capsule.
struct ASGICallables: ~Copyable {
    let receive: PyRef
    let send: PyRef

    init<Owner: AnyObject>(bound owner: Owner, receive: NativeFunction<Owner>, send: NativeFunction<Owner>) {
        let capsule = OwnerCapsule(retaining: owner)
        self.receive = receive.bind(capsule: capsule)
        self.send = send.bind(capsule: capsule)
    }
}
