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

    /// Borrowing: an owned parameter (an init's default) cost the caller a retain and a release around the call.
    init(exchange: borrowing HTTPExchange, serial: Int) {
        self.exchange = copy exchange
        self.serial = serial
        self.writer = ResponseWriter(request: exchange.request, recycling: exchange.responseBuffer(), drain: exchange.serverIsDraining)
    }
}

/// One Python thread of a worker, running one request at a time from start to end: the environ,
/// the app call, the body iteration, `close()`, the access log line.
final class WSGIThread: @unchecked Sendable {
    /// Strong (the host lives as long as the worker process: the cycle with its list of threads is
    /// never broken, and need not be): a checked unowned reference cost an atomic retain and release at
    /// each use, and an unowned(unsafe) one at each method call on it.
    let host: WSGIHost
    let index: Int
    private(set) var request: ActiveRequest?
    private var serial = 0
    /// When the running request last made progress (monotonic ns); 0 while idle or waiting for I/O.
    let busySince = Atomic<Int64>(0)

    /// This thread's `start_response`, `write` and wsgi.input readers.
    private(set) var natives: Natives!

    /// The native functions of one app thread, bound to it (they keep the thread alive, which lives
    /// as long as the worker anyway).
    final class Natives: @unchecked Sendable {
        let startResponse: PyRef
        let write: PyRef
        /// For `InputStream(read, readline, serial)`.
        let read: PyRef
        let readline: PyRef

        init(_ thread: WSGIThread) {
            let capsule = OwnerCapsule(retaining: thread)
            startResponse = WSGIThread.startResponseNative.bind(capsule: capsule)
            write = WSGIThread.writeNative.bind(capsule: capsule)
            read = WSGIThread.readNative.bind(capsule: capsule)
            readline = WSGIThread.readlineNative.bind(capsule: capsule)
        }
    }

    /// Made with the GIL held.
    init(host: WSGIHost, index: Int) {
        self.host = host
        self.index = index
        natives = Natives(self)
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
        var python = PythonThreadState()
        python.enter()
        while true {
            host.accessLog?.flush()   // the lines of the requests this thread ran back to back, before it waits
            // Waits for work without the GIL; while work is queued, keeps it from one item to the next,
            // unless other threads kept the GIL busy meanwhile: then it runs this item alone.
            let (next, waited) = GIL.released(timingReturn: { host.next() })
            let goesOn = !(next.joined && host.joinerFoundTheGILBusy(waited: waited))
            var item = next.item
            while true {
                switch item {
                case .request(let exchange):
                    if !serve(exchange) { host.finished() }
                case .continuation(let continuation):
                    resume(continuation)
                    host.finished()
                }
                guard goesOn else { host.endActive(); break }
                guard let next = host.nextForActive() else { break }
                item = next
            }
        }
    }

    /// The Python thread state of the I/O thread when it runs requests itself (sync mode).
    private var inlineState = PythonThreadState()
    /// True while this thread serves on the I/O thread, where it must never wait.
    private(set) var isInline = false

    /// Runs one request on the calling (I/O) thread. Returns true when the rest of the response was
    /// handed to an app thread (which then ends the request). The thread keeps the GIL after it, for
    /// the tick's next request, until `leaveInline` at the tick's end: giving it back and taking it
    /// again cost ~500 instructions between two requests of a tick.
    func serveInline(_ exchange: HTTPExchange) -> Bool {
        inlineState.enter()
        isInline = true
        defer { isInline = false }
        return serve(exchange)
    }

    /// The tick's inline requests are done: the GIL goes back (to app threads and the app's own threads).
    func leaveInline() {
        inlineState.leave()
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
        BytesBuffer.releaseWritten()
        let request = ActiveRequest(exchange: exchange, serial: serial)
        self.request = request
        defer {
            self.request = nil
            markWaiting()
        }
        if exchange.isAborted { return false }
        let result: PyRef
        do {
            let environ = try host.environConstants.build(for: exchange, serial: serial, natives: natives)
            result = try Python.call(host.runtime.app.pointer, environ.pointer, natives.startResponse.pointer)
        } catch {
            fail(request)
            writeAccessLog(request)
            return false
        }
        if sendBody(of: result.pointer, request) { return true }
        close(result.pointer, request)
        _ = consume result   // before the access log line, as the app's objects go
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
        if let iterator = continuation.iterator.take(), let result = continuation.result.take() {
            _ = iterate(iterator.pointer, request, result: result.pointer)
            _ = consume iterator
            close(result.pointer, request)
        }
        writeAccessLog(request)
    }

    /// Sends the app's body; true when its iteration was handed to an app thread to finish.
    private func sendBody(of result: PyObjectPointer, _ request: ActiveRequest) -> Bool {
        if appserver_is_exact_list_or_tuple(result) != 0 && !request.writer.headSent {
            sendSequence(result, request)
        } else if host.sendfile, PyObject_IsInstance(result, host.environConstants.fileWrapperClass) == 1, sendFile(result, request) {
            return false
        } else {
            guard let iterator = PyRef(newReference: PyObject_GetIter(result)) else {
                fail(request)
                return false
            }
            return iterate(iterator.pointer, request, result: result)
        }
        return false
    }

    /// A list or tuple of bytes: its length is known, so the response gets a Content-Length and
    /// usually goes out as one write.
    private func sendSequence(_ result: PyObjectPointer, _ request: ActiveRequest) {
        let count = appserver_sequence_fast_size(result)
        var total = 0, copied = 0
        for i in 0..<count {
            var length = 0
            guard appserver_bytes_view(appserver_sequence_fast_item(result, i), &length) != nil else {
                _ = PythonError.typeError("the app's body must be an iterable of bytes, not of \(Python.typeName(appserver_sequence_fast_item(result, i)))")
                return fail(request)
            }
            total += length
            copied += BytesBuffer.copiedSize(length)
        }
        guard request.startResponseCalled else { return failNoStartResponse(request) }
        var buffer = request.writer.finishHead(knownLength: Int64(total))
        if request.writer.framing == .noBody {
            request.writer.finishBody(into: &buffer)
            emit(request, buffer, end: true)
            return
        }
        buffer.reserveCapacity(minimumWritableBytes: min(copied, 1 << 20) + 16)
        var pieces: [ByteBuffer] = []
        for i in 0..<count {
            var length = 0
            let item = appserver_sequence_fast_item(result, i)!
            let bytes = appserver_bytes_view(item, &length)!
            BytesBuffer.append(item, UnsafeRawBufferPointer(start: bytes, count: length), with: &request.writer, to: &buffer, pieces: &pieces)
            if buffer.readableBytes >= 1 << 20 {
                // The list is in memory already; on the I/O thread it is queued whole.
                if emit(request, buffer, pieces, end: false) == .disconnected { return }
                buffer = request.exchange.allocator.buffer(capacity: 0)
                pieces = []
            }
        }
        request.writer.finishBody(into: &buffer)
        emit(request, buffer, pieces, end: true)
    }

    /// Sends what the iterator yields, then ends the response. On the I/O thread, when the socket
    /// has too much queued, the iteration moves to an app thread (returns true; the continuation
    /// holds references of its own to the iterator and `result`).
    private func iterate(_ iterator: PyObjectPointer, _ request: ActiveRequest, result: PyObjectPointer) -> Bool {
        // The first chunk is held back until the second one shows up: a body of one chunk (most
        // framework responses) then goes out whole, with a Content-Length, in one write. It is held
        // as the app's bytes object (immutable), not copied.
        var held: PyRef?
        // Kept across chunks: once a write has let go of it, the next chunk's pieces reuse its storage.
        var pieces: [ByteBuffer] = []
        while let item = PyRef(newReference: PyIter_Next(iterator)) {
            var length = 0
            guard let bytes = appserver_bytes_view(item.pointer, &length) else {
                _ = PythonError.typeError("the app's body must be an iterable of bytes, not of \(Python.typeName(item.pointer))")
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
                held = consume item
                continue
            }
            var buffer: ByteBuffer
            pieces.removeAll(keepingCapacity: true)
            if let first = held.take() {
                let firstView = Self.bytesView(first)
                buffer = request.writer.finishHead(knownLength: nil)
                buffer.reserveCapacity(minimumWritableBytes: BytesBuffer.copiedSize(firstView.count) + BytesBuffer.copiedSize(length) + 32)
                BytesBuffer.append(first.pointer, firstView, with: &request.writer, to: &buffer, pieces: &pieces)
            } else {
                // A large chunk under a Content-Length needs no buffer: a zero capacity allocates nothing.
                buffer = request.exchange.allocator.buffer(capacity: BytesBuffer.copiedSize(length) + request.writer.framingRoom)
            }
            BytesBuffer.append(item.pointer, chunk, with: &request.writer, to: &buffer, pieces: &pieces)
            switch emit(request, buffer, pieces, end: false) {
            case .sent: continue
            case .disconnected: return false
            case .mustWait:
                // Only on the I/O thread: it cannot wait for itself to drain the socket.
                host.enqueue(.continuation(ResponseContinuation(request: request, result: PyRef(retaining: result),
                                                                 iterator: PyRef(retaining: iterator))),
                             on: request.exchange.eventLoop)
                return true
            }
        }
        if PyErr_Occurred() != nil {
            fail(request)
            return false
        }
        if let first = held.take() {
            let body = Self.bytesView(first)
            var buffer = request.writer.finishHead(knownLength: Int64(body.count))
            buffer.reserveCapacity(minimumWritableBytes: BytesBuffer.copiedSize(body.count) + 8)
            var pieces: [ByteBuffer] = []
            BytesBuffer.append(first.pointer, body, with: &request.writer, to: &buffer, pieces: &pieces)
            request.writer.finishBody(into: &buffer)
            emit(request, buffer, pieces, end: true)
            return false
        }
        finishResponse(request)
        return false
    }

    /// The bytes of a bytes object that `iterate` already checked is one; valid while it is referenced.
    private static func bytesView(_ object: borrowing PyRef) -> UnsafeRawBufferPointer {
        var length = 0
        return UnsafeRawBufferPointer(start: appserver_bytes_view(object.pointer, &length), count: length)
    }

    /// `wsgi.file_wrapper` around a regular file: sent with sendfile(2) from its current position.
    /// Returns false (nothing sent) when the file-like object has no usable descriptor, or when the
    /// head already went out (the app called write()): its framing may be chunked, and the wrapper's
    /// blocks, iterated, are framed like any body.
    private func sendFile(_ wrapper: PyObjectPointer, _ request: ActiveRequest) -> Bool {
        guard !request.writer.headSent else { return false }
        let fd: Int32
        var info = stat()
        guard let filelike = try? Python.attribute(wrapper, "filelike"),
              let fileno = try? Python.callMethod(filelike.pointer, "fileno"), let number = try? Python.int(fileno.pointer),
              let descriptor = Int32(exactly: number), fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            PyErr_Clear()
            return false
        }
        fd = descriptor
        var position: Int64
        if let tell = try? Python.callMethod(filelike.pointer, "tell"), let offset = try? Python.int(tell.pointer) {
            position = Int64(offset)
        } else {
            PyErr_Clear()
            position = Int64(lseek(fd, 0, SEEK_CUR))
        }
        guard request.startResponseCalled else { failNoStartResponse(request); return true }
        let (head, length) = request.writer.finishFileResponse(available: max(0, Int64(info.st_size) - position))
        if length == 0 {
            emit(request, head, end: true)
            return true
        }
        let copy = dup(fd)
        guard copy >= 0 else { return false }
        request.ended = true
        do {
            // The end of the response: nothing to wait for (see `emit`).
            _ = try request.exchange.sendFile(descriptor: copy, offset: position, length: length, header: head, end: true,
                                              close: request.writer.closeConnection)
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
    /// `pieces`, when there are any, go before `buffer` in one write (uncopied chunks, BytesBuffer).
    @discardableResult
    private func emit(_ request: ActiveRequest, _ buffer: ByteBuffer, _ pieces: [ByteBuffer] = [], end: Bool) -> EmitResult {
        if request.disconnected { return .disconnected }
        if end { request.ended = true }
        do {
            // On the I/O thread a streamed chunk is written at once, keeping the GIL: the write does not
            // block (the socket is non-blocking; a full one queues it and says mustWait), and giving the
            // GIL up and back around it cost ~350 instructions a chunk. Other Python threads get it
            // at the tick's end (WSGIHost.afterReadsHandled) and when the switch interval asks for it.
            let mustWait = try request.exchange.send(buffer, after: pieces.isEmpty ? nil : pieces, end: end,
                                                     close: request.writer.closeConnection)
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
        defer { markBusy() }
        try GIL.released { () throws(ExchangeError) in try request.exchange.waitUntilDrained() }
    }

    /// The body iterable's `close()`, always called (PEP 3333), even after an error.
    private func close(_ result: PyObjectPointer, _ request: ActiveRequest) {
        // Lists and tuples have no close(); asking would raise and clear an AttributeError each time.
        if appserver_is_exact_list_or_tuple(result) != 0 { return }
        guard PyObject_HasAttrString(result, "close") == 1 else { return }
        if (try? Python.callMethod(result, "close")) == nil { fail(request) }
    }

    // MARK: errors

    private func failNoStartResponse(_ request: ActiveRequest) {
        _ = PythonError.runtimeError("the app returned a body without calling start_response()")
        fail(request)
    }

    /// The app raised (the exception is set): log it with its traceback, then answer 500 (or 413 for
    /// a body over the limit) when no head went out yet, or else close the connection.
    private func fail(_ request: ActiveRequest) {
        let exception = PythonError.fetch()
        let constants = host.environConstants
        let raised = exception.pointer
        func isA(_ type: PyObjectPointer) -> Bool { raised.map { PyObject_IsInstance($0, type) == 1 } ?? false }
        let tooLarge = isA(constants.tooLargeClass)
        let badBody = isA(constants.badRequestClass)
        let disconnected = request.disconnected || isA(constants.disconnectedClass)
        let uri = request.exchange.request.uri
        if disconnected {
            host.logger.debug("client went away during \(request.exchange.request.method) \(uri)")
        } else if tooLarge {
            host.logger.info("request body over the limit: \(request.exchange.request.method) \(uri)")
        } else if badBody {
            host.logger.debug("malformed request body: \(request.exchange.request.method) \(uri)")
        } else {
            WorkerMetrics.current?.appException()
            host.logger.error("Error handling request \(uri)\n\(raised.map { Python.format(exception: $0) } ?? "no exception set")",
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
        log.write(record, gate: host.accessGate)
    }
}
