import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// The natives behind `start_response`, `write` and `wsgi.input`, for the request of this thread.
extension WSGIThread {
    /// `start_response(status, response_headers, exc_info=None)` with PEP 3333's rules: a second call
    /// needs exc_info; with exc_info after the head went out, the app's exception is raised again.
    func startResponse(args: UnsafePointer<PyObjectPointer?>?, count: Int) -> PyObjectPointer? {
        guard let request else { return NativeFunctions.noRequest() }
        guard let args, count == 2 || count == 3, let status = args[0], let headers = args[1] else {
            return NativeFunctions.typeError("start_response() takes status, headers and an optional exc_info")
        }
        let excInfo = count == 3 && args[2] != appserver_none() ? args[2] : nil
        if let excInfo {
            if request.writer.headSent {
                guard appserver_is_tuple(excInfo) != 0, PyTuple_Size(excInfo) == 3 else {
                    return NativeFunctions.typeError("exc_info must be a (type, value, traceback) tuple")
                }
                let type = PyTuple_GetItem(excInfo, 0), value = PyTuple_GetItem(excInfo, 1), traceback = PyTuple_GetItem(excInfo, 2)
                Py_IncRef(type); Py_IncRef(value); Py_IncRef(traceback)
                PyErr_Restore(type, value, traceback == appserver_none() ? nil : traceback)
                return nil
            }
        } else if request.startResponseCalled {
            PyErr_SetString(appserver_exc_assertion_error(), "start_response() was already called for this request (pass exc_info to call it again)")
            return nil
        }
        var statusLength = 0
        guard let statusBytes = appserver_latin1_view(status, &statusLength) else {
            return NativeFunctions.typeError("the status must be a str of latin-1 characters, like '200 OK'")
        }
        guard appserver_is_list(headers) != 0 || appserver_is_tuple(headers) != 0 else {
            return NativeFunctions.typeError("the response headers must be a list of (name, value) tuples")
        }
        var writer = request.writer
        do {
            try writer.begin(status: UnsafeRawBufferPointer(start: statusBytes, count: statusLength))
        } catch {
            PyErr_SetString(appserver_exc_value_error(), "invalid status \(String(cString: PyUnicode_AsUTF8(status)).debugDescription): expected a three-digit code, a space and a reason")
            return nil
        }
        let keepHeaders = host.accessLog?.formatter.needsResponseHeaders ?? false
        var logHeaders: [(name: String, value: String)] = []
        let headerCount = appserver_sequence_fast_size(headers)
        for i in 0..<headerCount {
            let item = appserver_sequence_fast_item(headers, i)!
            guard appserver_is_tuple(item) != 0, PyTuple_Size(item) == 2 else {
                return NativeFunctions.typeError("each response header must be a (name, value) tuple, not \(typeName(item))")
            }
            let name = PyTuple_GetItem(item, 0)!, value = PyTuple_GetItem(item, 1)!
            var nameLength = 0, valueLength = 0
            guard let nameBytes = appserver_latin1_view(name, &nameLength), let valueBytes = appserver_latin1_view(value, &valueLength) else {
                return NativeFunctions.typeError("header names and values must be str of latin-1 characters")
            }
            let nameBuffer = UnsafeRawBufferPointer(start: nameBytes, count: nameLength)
            let valueBuffer = UnsafeRawBufferPointer(start: valueBytes, count: valueLength)
            do {
                try writer.addHeader(name: nameBuffer, value: valueBuffer)
            } catch {
                PyErr_SetString(appserver_exc_value_error(), "invalid response header \(String(decoding: nameBuffer, as: UTF8.self).debugDescription) (a bad name, a line break in the value, or a wrong Content-Length)")
                return nil
            }
            if keepHeaders {
                logHeaders.append((String(decoding: nameBuffer, as: UTF8.self), String(decoding: valueBuffer, as: UTF8.self)))
            }
        }
        request.writer = writer
        request.logHeaders = logHeaders
        request.startResponseCalled = true
        Py_IncRef(NativeFunctions.write)
        return NativeFunctions.write
    }

    /// The `write(data)` callable start_response returns (for old apps; PEP 3333 discourages it).
    func writeCallable(args: UnsafePointer<PyObjectPointer?>?, count: Int) -> PyObjectPointer? {
        guard let request else { return NativeFunctions.noRequest() }
        var length = 0
        guard let args, count == 1, let data = args[0], let bytes = appserver_bytes_view(data, &length) else {
            return NativeFunctions.typeError("write() takes one bytes object")
        }
        guard request.startResponseCalled else {
            PyErr_SetString(appserver_exc_assertion_error(), "write() called before start_response()")
            return nil
        }
        if length > 0 || !request.writer.headSent {
            var buffer = request.writer.headSent
                ? request.exchange.allocator.buffer(capacity: length + 16)
                : request.writer.finishHead(knownLength: nil)
            request.writer.appendBody(UnsafeRawBufferPointer(start: bytes, count: length), to: &buffer)
            if !sendFromCallable(request, buffer) {
                PyErr_SetString(host.environConstants.disconnectedClass, "the client closed the connection")
                return nil
            }
        }
        Py_IncRef(appserver_none())
        return appserver_none()
    }

    /// `_read(serial, size)` and `_readline(serial, size)` behind `wsgi.input`; the GIL is released
    /// while waiting for the client.
    func readBody(args: UnsafePointer<PyObjectPointer?>?, count: Int, line: Bool) -> PyObjectPointer? {
        guard let args, count == 2 else { return NativeFunctions.typeError("_read(serial, size)") }
        let serial = PyLong_AsLong(args[0])
        let size = PyLong_AsLong(args[1])
        if PyErr_Occurred() != nil { return nil }
        guard let request, request.serial == serial, size != 0 else {
            return PyBytes_FromStringAndSize(nil, 0)   // a stream kept past its request reads nothing
        }
        let body = request.exchange.body
        let allocator = request.exchange.allocator
        let timeout = host.bodyTimeout
        let max: Int? = size < 0 ? nil : size
        // Waiting for the client happens without the GIL; a body that is all here needs no wait.
        let mayWait = !body.isComplete
        var state: UnsafeMutablePointer<PyThreadState>?
        if mayWait {
            busyWaiting(true)
            state = PyEval_SaveThread()
        }
        let result: Result<ByteBuffer, RequestBodyError>
        do {
            let buffer = line ? try body.readLine(max: max, timeout: timeout, allocator: allocator)
                              : try body.read(max: max, timeout: timeout, allocator: allocator)
            result = .success(buffer)
        } catch {
            result = .failure(error)
        }
        if mayWait {
            PyEval_RestoreThread(state)
            busyWaiting(false)
        }
        switch result {
        case .success(let buffer):
            return buffer.withUnsafeReadableBytes { bytes in
                PyBytes_FromStringAndSize(bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        case .failure(.disconnected):
            request.disconnected = true
            PyErr_SetString(host.environConstants.disconnectedClass, "the client closed the connection before sending the whole body")
        case .failure(.tooLarge(let limit)):
            PyErr_SetString(host.environConstants.tooLargeClass, "the request body is larger than \(limit) bytes")
        case .failure(.malformed(let reason)):
            PyErr_SetString(host.environConstants.badRequestClass, "the request body is malformed: \(reason)")
        case .failure(.timedOut(let seconds)):
            PyErr_SetString(appserver_exc_timeout_error(), "no request body bytes arrived for \(seconds) seconds")
        }
        return nil
    }
}
