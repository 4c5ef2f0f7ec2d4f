import AppServerHTTP
import CPython
import CPythonShim
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The state of the request an app thread is running.
final class ActiveRequest {
    let exchange: HTTPExchange
    let serial: Int
    var writer: ResponseWriter
    var startResponseCalled = false
    var ended = false
    var disconnected = false
    var logHeaders: [(name: String, value: String)] = []

    init(exchange: HTTPExchange, serial: Int) {
        self.exchange = exchange
        self.serial = serial
        self.writer = ResponseWriter(request: exchange.request, allocator: exchange.allocator, drain: exchange.serverIsDraining)
    }
}

/// One Python thread of a worker, running one request at a time from start to end: the environ,
/// the app call, the body iteration, `close()`, the access log line.
final class WSGIThread: @unchecked Sendable {
    unowned let host: WSGIHost
    let index: Int
    private(set) var request: ActiveRequest?
    private var serial = 0
    /// When the running request last made progress (monotonic ns); 0 while idle or waiting for I/O.
    let busySince = Atomic<Int64>(0)

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The app thread running on the calling thread, if any.
    static var current: WSGIThread? {
        pthread_getspecific(key).map { Unmanaged<WSGIThread>.fromOpaque($0).takeUnretainedValue() }
    }

    init(host: WSGIHost, index: Int) {
        self.host = host
        self.index = index
    }

    func start() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            let me = Unmanaged<WSGIThread>.fromOpaque(context!).takeRetainedValue()
            me.run()
            return nil
        }, context)
        precondition(status == 0, "cannot start an app thread: \(String(cString: strerror(status)))")
        pthread_detach(thread)
    }

    private func run() {
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        _ = PyGILState_Ensure()
        var threadState = PyEval_SaveThread()
        while true {
            guard var item = host.next(wait: true) else { continue }
            PyEval_RestoreThread(threadState)
            // While work is queued, keep the GIL from one item to the next.
            while true {
                switch item {
                case .request(let exchange):
                    if !serve(exchange) { host.finished() }
                case .continuation(let continuation):
                    resume(continuation)
                    host.finished()
                }
                guard let next = host.next(wait: false) else { break }
                item = next
            }
            threadState = PyEval_SaveThread()
        }
    }

    /// The thread state of the I/O thread when it runs requests itself (sync mode).
    private var inlineState: UnsafeMutablePointer<PyThreadState>?
    /// True while this thread serves on the I/O thread, where it must never wait.
    private(set) var isInline = false

    /// Runs one request on the calling (I/O) thread. Returns true when the rest of the response was
    /// handed to an app thread (which then ends the request).
    func serveInline(_ exchange: HTTPExchange) -> Bool {
        if let inlineState {
            PyEval_RestoreThread(inlineState)
        } else {
            pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
            _ = PyGILState_Ensure()
        }
        isInline = true
        let handedOff = serve(exchange)
        isInline = false
        inlineState = PyEval_SaveThread()
        return handedOff
    }

    func busyWaiting(_ waiting: Bool) { waiting ? markWaiting() : markBusy() }

    /// For `write()`: it runs inside the app's own call, so on the I/O thread it cannot hand off and
    /// does not wait (the bytes queue up; `write()` is a legacy API that streaming apps do not use).
    func sendFromCallable(_ request: ActiveRequest, _ buffer: ByteBuffer) -> Bool {
        emit(request, buffer, end: false) != .disconnected
    }

    private func markBusy() { busySince.store(Monotonic.now().nanoseconds, ordering: .relaxed) }
    private func markWaiting() { busySince.store(0, ordering: .relaxed) }

    // MARK: one request

    /// Runs one request to its end; returns true when its body iteration was handed to an app thread.
    private func serve(_ exchange: HTTPExchange) -> Bool {
        serial += 1
        markBusy()
        let request = ActiveRequest(exchange: exchange, serial: serial)
        self.request = request
        defer {
            self.request = nil
            markWaiting()
        }
        if exchange.isAborted { return false }
        guard let environ = host.environConstants.build(for: exchange, serial: serial) else {
            fail(request)
            writeAccessLog(request)
            return false
        }
        var args: (PyObjectPointer?, PyObjectPointer?) = (environ, NativeFunctions.startResponse)
        let result = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 2) { PyObject_Vectorcall(host.runtime.app, $0, 2, nil) }
        }
        Py_DecRef(environ)
        if let result {
            if sendBody(of: result, request) { return true }
            close(result, request)
            Py_DecRef(result)
        } else {
            fail(request)
        }
        writeAccessLog(request)
        return false
    }

    /// The rest of a response started on the I/O thread.
    private func resume(_ continuation: ResponseContinuation) {
        let request = continuation.request
        self.request = request
        markBusy()
        defer {
            self.request = nil
            markWaiting()
        }
        _ = iterate(continuation.iterator, request, result: continuation.result)
        Py_DecRef(continuation.iterator)
        close(continuation.result, request)
        Py_DecRef(continuation.result)
        writeAccessLog(request)
    }

    /// Sends the app's body; true when its iteration was handed to an app thread to finish.
    private func sendBody(of result: PyObjectPointer, _ request: ActiveRequest) -> Bool {
        if appserver_is_exact_list_or_tuple(result) != 0 && !request.writer.headSent {
            sendSequence(result, request)
        } else if host.sendfile, PyObject_IsInstance(result, host.environConstants.fileWrapperClass) == 1, sendFile(result, request) {
            return false
        } else {
            guard let iterator = PyObject_GetIter(result) else {
                fail(request)
                return false
            }
            if iterate(iterator, request, result: result) { return true }
            Py_DecRef(iterator)
        }
        return false
    }

    /// A list or tuple of bytes: its length is known, so the response gets a Content-Length and
    /// usually goes out as one write.
    private func sendSequence(_ result: PyObjectPointer, _ request: ActiveRequest) {
        let count = appserver_sequence_fast_size(result)
        var total = 0
        for i in 0..<count {
            var length = 0
            guard appserver_bytes_view(appserver_sequence_fast_item(result, i), &length) != nil else {
                PyErr_SetString(appserver_exc_type_error(), "the app's body must be an iterable of bytes, not of \(typeName(appserver_sequence_fast_item(result, i)))")
                return fail(request)
            }
            total += length
        }
        guard request.startResponseCalled else { return failNoStartResponse(request) }
        var buffer = request.writer.finishHead(knownLength: Int64(total))
        if request.writer.framing == .noBody {
            request.writer.finishBody(into: &buffer)
            emit(request, buffer, end: true)
            return
        }
        buffer.reserveCapacity(minimumWritableBytes: min(total, 1 << 20) + 16)
        for i in 0..<count {
            var length = 0
            let bytes = appserver_bytes_view(appserver_sequence_fast_item(result, i), &length)!
            request.writer.appendBody(UnsafeRawBufferPointer(start: bytes, count: length), to: &buffer)
            if buffer.readableBytes >= 1 << 20 {
                // The list is in memory already; on the I/O thread it is queued whole.
                if emit(request, buffer, end: false) == .disconnected { return }
                buffer = request.exchange.allocator.buffer(capacity: 0)
            }
        }
        request.writer.finishBody(into: &buffer)
        emit(request, buffer, end: true)
    }

    /// Sends what the iterator yields, then ends the response. On the I/O thread, when the socket
    /// has too much queued, the iteration moves to an app thread (returns true; it then owns the
    /// iterator and `result`).
    private func iterate(_ iterator: PyObjectPointer, _ request: ActiveRequest, result: PyObjectPointer) -> Bool {
        // The first chunk is held back until the second one shows up: a body of one chunk (most
        // framework responses) then goes out whole, with a Content-Length, in one write.
        var held: ByteBuffer?
        while let item = PyIter_Next(iterator) {
            defer { Py_DecRef(item) }
            var length = 0
            guard let bytes = appserver_bytes_view(item, &length) else {
                PyErr_SetString(appserver_exc_type_error(), "the app's body must be an iterable of bytes, not of \(typeName(item))")
                fail(request)
                return false
            }
            if length == 0 { continue }
            guard request.startResponseCalled else {
                failNoStartResponse(request)
                return false
            }
            let chunk = UnsafeRawBufferPointer(start: bytes, count: length)
            if !request.writer.headSent && held == nil {
                var copy = request.exchange.allocator.buffer(capacity: length)
                copy.writeBytes(chunk)
                held = copy
                continue
            }
            var buffer: ByteBuffer
            if var first = held {
                held = nil
                buffer = request.writer.finishHead(knownLength: nil)
                first.withUnsafeReadableBytes { _ = request.writer.appendBody($0, to: &buffer) }
            } else {
                buffer = request.exchange.allocator.buffer(capacity: length + 16)
            }
            request.writer.appendBody(chunk, to: &buffer)
            switch emit(request, buffer, end: false) {
            case .sent: continue
            case .disconnected: return false
            case .mustWait:
                // Only on the I/O thread: it cannot wait for itself to drain the socket.
                Py_IncRef(result)
                host.enqueue(.continuation(ResponseContinuation(request: request, result: result, iterator: iterator)))
                return true
            }
        }
        if PyErr_Occurred() != nil {
            fail(request)
            return false
        }
        if let first = held {
            var buffer = request.writer.finishHead(knownLength: Int64(first.readableBytes))
            first.withUnsafeReadableBytes { _ = request.writer.appendBody($0, to: &buffer) }
            request.writer.finishBody(into: &buffer)
            emit(request, buffer, end: true)
            return false
        }
        finishResponse(request)
        return false
    }

    /// `wsgi.file_wrapper` around a regular file: sent with sendfile(2) from its current position.
    /// Returns false (nothing sent) when the file-like object has no usable descriptor.
    private func sendFile(_ wrapper: PyObjectPointer, _ request: ActiveRequest) -> Bool {
        guard let filelike = PyObject_GetAttrString(wrapper, "filelike") else { PyErr_Clear(); return false }
        defer { Py_DecRef(filelike) }
        guard let filenoResult = callMethod(filelike, "fileno") else { PyErr_Clear(); return false }
        let fd = Int32(truncatingIfNeeded: PyLong_AsLong(filenoResult))
        Py_DecRef(filenoResult)
        var info = stat()
        guard PyErr_Occurred() == nil, fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { PyErr_Clear(); return false }
        var position: Int64 = 0
        if let tell = callMethod(filelike, "tell") {
            position = Int64(PyLong_AsLongLong(tell))
            Py_DecRef(tell)
        }
        if PyErr_Occurred() != nil { PyErr_Clear(); position = Int64(lseek(fd, 0, SEEK_CUR)) }
        guard request.startResponseCalled else { failNoStartResponse(request); return true }
        let available = max(0, Int64(info.st_size) - position)
        let head = request.writer.finishHead(knownLength: available)
        let length = request.writer.reserveFileBody(available)
        var tail = request.exchange.allocator.buffer(capacity: 8)
        request.writer.finishBody(into: &tail)
        if length == 0 {
            var buffer = head
            buffer.writeBuffer(&tail)
            emit(request, buffer, end: true)
            return true
        }
        let copy = dup(fd)
        guard copy >= 0 else { return false }
        request.ended = true
        do {
            // The end of the response: nothing to wait for (see `emit`).
            _ = try request.exchange.sendFile(descriptor: copy, offset: position, length: length, header: head,
                                              trailer: tail.readableBytes > 0 ? tail : nil, end: true, close: request.writer.closeConnection)
        } catch {
            request.disconnected = true
        }
        return true
    }

    private func finishResponse(_ request: ActiveRequest) {
        guard request.startResponseCalled else { return failNoStartResponse(request) }
        var buffer = request.writer.headSent
            ? request.exchange.allocator.buffer(capacity: 8)
            : request.writer.finishHead(knownLength: request.exchange.request.isHead ? nil : 0)
        request.writer.finishBody(into: &buffer)
        emit(request, buffer, end: true)
    }

    enum EmitResult { case sent, disconnected, mustWait }

    /// Queues bytes for the socket; waits without the GIL when too much is queued, except on the
    /// I/O thread (which cannot wait for itself), where it says so. After the end of a response
    /// nothing waits: the bytes are queued and the next request may start.
    @discardableResult
    private func emit(_ request: ActiveRequest, _ buffer: ByteBuffer, end: Bool) -> EmitResult {
        if request.disconnected { return .disconnected }
        if end { request.ended = true }
        do {
            let mustWait: Bool
            if isInline && !end {
                // On the I/O thread a chunk is written at once (a socket write): without the GIL.
                let state = PyEval_SaveThread()
                defer { PyEval_RestoreThread(state) }
                mustWait = try request.exchange.send(buffer, end: end, close: request.writer.closeConnection)
            } else {
                mustWait = try request.exchange.send(buffer, end: end, close: request.writer.closeConnection)
            }
            if mustWait && !end {
                if isInline { return .mustWait }
                try waitForDrain(request)
            }
            return .sent
        } catch {
            request.disconnected = true
            return .disconnected
        }
    }

    private func waitForDrain(_ request: ActiveRequest) throws(ExchangeError) {
        markWaiting()
        let state = PyEval_SaveThread()
        defer {
            PyEval_RestoreThread(state)
            markBusy()
        }
        try request.exchange.waitUntilDrained()
    }

    /// The body iterable's `close()`, always called (PEP 3333), even after an error.
    private func close(_ result: PyObjectPointer, _ request: ActiveRequest) {
        // Lists and tuples have no close(); asking would raise and clear an AttributeError each time.
        if appserver_is_exact_list_or_tuple(result) != 0 { return }
        guard PyObject_HasAttrString(result, "close") == 1 else { return }
        if let value = callMethod(result, "close") {
            Py_DecRef(value)
        } else {
            fail(request)
        }
    }

    // MARK: errors

    private func failNoStartResponse(_ request: ActiveRequest) {
        PyErr_SetString(appserver_exc_runtime_error(), "the app returned a body without calling start_response()")
        fail(request)
    }

    /// The app raised (the exception is set): log it with its traceback, then answer 500 (or 413 for
    /// a body over the limit) when no head went out yet, or else close the connection.
    private func fail(_ request: ActiveRequest) {
        let exception = PythonRuntime.fetchException()
        defer { Py_DecRef(exception) }
        let constants = host.environConstants
        let tooLarge = exception.map { PyObject_IsInstance($0, constants.tooLargeClass) == 1 } ?? false
        let badBody = exception.map { PyObject_IsInstance($0, constants.badRequestClass) == 1 } ?? false
        let disconnected = request.disconnected || (exception.map { PyObject_IsInstance($0, constants.disconnectedClass) == 1 } ?? false)
        let uri = request.exchange.request.uri
        if disconnected {
            host.logger.debug("client went away during \(request.exchange.request.method) \(uri)")
        } else if tooLarge {
            host.logger.info("request body over the limit: \(request.exchange.request.method) \(uri)")
        } else if badBody {
            host.logger.debug("malformed request body: \(request.exchange.request.method) \(uri)")
        } else {
            WorkerMetrics.current?.appException()
            host.logger.error("Error handling request \(uri)\n\(exception.map(PythonRuntime.formatException) ?? "no exception set")",
                              metadata: request.exchange.request.logMetadata)
        }
        if request.ended { return }
        if request.writer.headSent || disconnected {
            request.ended = true
            request.exchange.abortConnection()
            return
        }
        sendError(request, status: tooLarge ? "413 Request Entity Too Large" : badBody ? "400 Bad Request" : "500 Internal Server Error")
    }

    private func sendError(_ request: ActiveRequest, status: String) {
        let buffer = request.writer.serverError(status: status)
        request.logHeaders = []
        emit(request, buffer, end: true)
    }

    private func writeAccessLog(_ request: ActiveRequest) {
        guard let log = host.accessLog else { return }
        let record = AccessLogRecord(request: request.exchange.request, status: request.writer.statusCode,
                                     responseBytes: request.writer.bodyBytesSent, responseHeaders: request.logHeaders,
                                     finished: .now())
        let line = log.formatter.format(record)
        log.file.write(log.file.isJournal ? "<6>" + line : line)
    }
}

func typeName(_ object: PyObjectPointer?) -> String {
    guard let object, let type = PyObject_Type(object) else { return "?" }
    defer { Py_DecRef(type) }
    guard let name = PyObject_GetAttrString(type, "__name__") else { PyErr_Clear(); return "?" }
    defer { Py_DecRef(name) }
    return PyUnicode_AsUTF8(name).map { String(cString: $0) } ?? "?"
}

/// `object.name()`, without the variadic PyObject_CallMethod.
func callMethod(_ object: PyObjectPointer, _ name: String) -> PyObjectPointer? {
    guard let method = PyObject_GetAttrString(object, name) else { return nil }
    defer { Py_DecRef(method) }
    return PyObject_CallNoArgs(method)
}
