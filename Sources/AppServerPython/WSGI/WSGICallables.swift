import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// The natives behind `start_response`, `write` and `wsgi.input`, for the request of this thread.
extension WSGIThread {
    static let startResponseNative = NativeFunction<WSGIThread>("start_response", "start_response(status, headers, exc_info=None)") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: WSGIThread.self) { thread, arguments throws(PythonError) in try thread.startResponse(arguments) }
    }
    static let writeNative = NativeFunction<WSGIThread>("write", "write(data): the WSGI write() callable") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: WSGIThread.self) { thread, arguments throws(PythonError) in try thread.writeCallable(arguments) }
    }
    static let readNative = NativeFunction<WSGIThread>("read", "read(serial, size): wsgi.input's bytes") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: WSGIThread.self) { thread, arguments throws(PythonError) in try thread.readBody(arguments, line: false) }
    }
    static let readlineNative = NativeFunction<WSGIThread>("readline", "readline(serial, size): wsgi.input's next line") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: WSGIThread.self) { thread, arguments throws(PythonError) in try thread.readBody(arguments, line: true) }
    }

    private func currentRequest() throws(PythonError) -> ActiveRequest {
        guard let request else { throw PythonError.runtimeError("called outside of a request of the server") }
        return request
    }

    /// `start_response(status, response_headers, exc_info=None)` with PEP 3333's rules: a second call
    /// needs exc_info; with exc_info after the head went out, the app's exception is raised again.
    func startResponse(_ arguments: NativeArguments) throws(PythonError) -> PyRef {
        let request = try currentRequest()
        try arguments.expect(2...3, "start_response() takes status, headers and an optional exc_info")
        let status = arguments[0], headers = arguments[1]
        let excInfo = arguments.count == 3 && arguments[2] != appserver_none() ? arguments[2] : nil
        if let excInfo {
            if request.writer.headSent {
                guard appserver_is_tuple(excInfo) != 0, PyTuple_Size(excInfo) == 3,
                      let type = PyTuple_GetItem(excInfo, 0), let value = PyTuple_GetItem(excInfo, 1), let traceback = PyTuple_GetItem(excInfo, 2) else {
                    throw PythonError.typeError("exc_info must be a (type, value, traceback) tuple")
                }
                // PyErr_Restore takes the three references.
                PyErr_Restore(PyRef(retaining: type).take(), PyRef(retaining: value).take(),
                              traceback == appserver_none() ? nil : PyRef(retaining: traceback).take())
                throw PythonError()
            }
        } else if request.startResponseCalled {
            throw PythonError.raise(appserver_exc_assertion_error(), "start_response() was already called for this request (pass exc_info to call it again)")
        }
        var statusLength = 0
        guard let statusBytes = appserver_latin1_view(status, &statusLength) else {
            throw PythonError.typeError("the status must be a str of latin-1 characters, like '200 OK'")
        }
        guard appserver_is_list(headers) != 0 || appserver_is_tuple(headers) != 0 else {
            throw PythonError.typeError("the response headers must be a list of (name, value) tuples")
        }
        // The writer is changed in place (a copy would share its head buffer, and the first write
        // would copy that). A call that fails part way leaves a head that the next call's `begin`
        // clears, and `startResponseCalled` stays false until the whole head was taken.
        let statusText = UnsafeRawBufferPointer(start: statusBytes, count: statusLength)
        do {
            try request.writer.begin(status: statusText)
        } catch {
            throw PythonError.valueError("invalid status \(String(decoding: statusText, as: UTF8.self).debugDescription): expected a three-digit code, a space and a reason")
        }
        let keepHeaders = host.accessLog?.formatter.needsResponseHeaders ?? false
        var logHeaders: [(name: String, value: String)] = []
        let headerCount = appserver_sequence_fast_size(headers)
        for i in 0..<headerCount {
            let item = appserver_sequence_fast_item(headers, i)!
            guard appserver_is_tuple(item) != 0, PyTuple_Size(item) == 2, let name = PyTuple_GetItem(item, 0), let value = PyTuple_GetItem(item, 1) else {
                throw PythonError.typeError("each response header must be a (name, value) tuple, not \(Python.typeName(item))")
            }
            var nameLength = 0, valueLength = 0
            guard let nameBytes = appserver_latin1_view(name, &nameLength), let valueBytes = appserver_latin1_view(value, &valueLength) else {
                throw PythonError.typeError("header names and values must be str of latin-1 characters")
            }
            let nameBuffer = UnsafeRawBufferPointer(start: nameBytes, count: nameLength)
            let valueBuffer = UnsafeRawBufferPointer(start: valueBytes, count: valueLength)
            do {
                try request.writer.addHeader(name: nameBuffer, value: valueBuffer)
            } catch {
                throw PythonError.valueError("invalid response header \(String(decoding: nameBuffer, as: UTF8.self).debugDescription) (a bad name, a line break in the value, or a wrong Content-Length)")
            }
            if keepHeaders {
                logHeaders.append((String(decoding: nameBuffer, as: UTF8.self), String(decoding: valueBuffer, as: UTF8.self)))
            }
        }
        request.logHeaders = logHeaders
        request.startResponseCalled = true
        return natives.write.copy()
    }

    /// The `write(data)` callable start_response returns (for old apps; PEP 3333 discourages it).
    func writeCallable(_ arguments: NativeArguments) throws(PythonError) -> PyRef {
        let request = try currentRequest()
        try arguments.expect(1...1, "write() takes one bytes object")
        var length = 0
        guard let bytes = appserver_bytes_view(arguments[0], &length) else { throw PythonError.typeError("write() takes one bytes object") }
        guard request.startResponseCalled else {
            throw PythonError.raise(appserver_exc_assertion_error(), "write() called before start_response()")
        }
        if length > 0 || !request.writer.headSent {
            var buffer = request.writer.headSent
                ? request.exchange.allocator.buffer(capacity: length + 16)
                : request.writer.finishHead(knownLength: nil)
            request.writer.appendBody(UnsafeRawBufferPointer(start: bytes, count: length), to: &buffer)
            if !sendFromCallable(request, buffer) {
                throw PythonError.raise(host.environConstants.disconnectedClass, "the client closed the connection")
            }
        }
        return .noneObject
    }

    /// `read(serial, size)` and `readline(serial, size)` behind `wsgi.input`; the GIL is released
    /// while waiting for the client.
    func readBody(_ arguments: NativeArguments, line: Bool) throws(PythonError) -> PyRef {
        try arguments.expect(2...2, line ? "readline(serial, size)" : "read(serial, size)")
        let serial = try Python.int(arguments[0])
        let size = try Python.int(arguments[1])
        guard let request, request.serial == serial, size != 0 else {
            return try Python.bytes([])   // a stream kept past its request reads nothing
        }
        let body = request.exchange.body
        let allocator = request.exchange.allocator
        let timeout = host.bodyTimeout
        let max: Int? = size < 0 ? nil : size
        func read() -> Result<ByteBuffer, RequestBodyError> {
            do {
                return .success(line ? try body.readLine(max: max, timeout: timeout, allocator: allocator)
                                     : try body.read(max: max, timeout: timeout, allocator: allocator))
            } catch {
                return .failure(error)
            }
        }
        // Waiting for the client happens without the GIL; a body that is all here needs no wait.
        let result: Result<ByteBuffer, RequestBodyError>
        if body.isComplete {
            result = read()
        } else {
            busyWaiting(true)
            result = GIL.released(read)
            busyWaiting(false)
        }
        switch result {
        case .success(let buffer):
            return try Python.bytes(buffer)
        case .failure(.disconnected):
            request.disconnected = true
            throw PythonError.raise(host.environConstants.disconnectedClass, "the client closed the connection before sending the whole body")
        case .failure(.tooLarge(let limit)):
            throw PythonError.raise(host.environConstants.tooLargeClass, "the request body is larger than \(limit) bytes")
        case .failure(.malformed(let reason)):
            throw PythonError.raise(host.environConstants.badRequestClass, "the request body is malformed: \(reason)")
        case .failure(.timedOut(let seconds)):
            throw PythonError.raise(appserver_exc_timeout_error(), "no request body bytes arrived for \(seconds) seconds")
        }
    }
}
