import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// The functions the Python side calls into: `start_response`, `write`, and the body readers behind
/// `wsgi.input`. They find their request through the calling thread (each app thread serves one
/// request at a time), so no per-request function objects are made.
enum NativeFunctions {
    typealias FastCall = @convention(c) (PyObjectPointer?, UnsafePointer<PyObjectPointer?>?, Py_ssize_t) -> PyObjectPointer?

    nonisolated(unsafe) static var startResponse: PyObjectPointer!
    nonisolated(unsafe) static var write: PyObjectPointer!
    /// Where `wsgi.errors` writes go (the error log).
    nonisolated(unsafe) static var errorSink: (@Sendable (String) -> Void) = { _ in }

    static func install(into namespace: PyObjectPointer) {
        startResponse = define("start_response", "start_response(status, headers, exc_info=None)", in: namespace) { _, args, count in
            guard let thread = WSGIThread.current else { return NativeFunctions.noRequest() }
            return thread.startResponse(args: args, count: count)
        }
        write = define("_write", "write(data): the WSGI write() callable", in: namespace) { _, args, count in
            guard let thread = WSGIThread.current else { return NativeFunctions.noRequest() }
            return thread.writeCallable(args: args, count: count)
        }
        _ = define("_read", "_read(serial, size)", in: namespace) { _, args, count in
            guard let thread = WSGIThread.current else { return NativeFunctions.noRequest() }
            return thread.readBody(args: args, count: count, line: false)
        }
        _ = define("_readline", "_readline(serial, size)", in: namespace) { _, args, count in
            guard let thread = WSGIThread.current else { return NativeFunctions.noRequest() }
            return thread.readBody(args: args, count: count, line: true)
        }
        _ = define("_asgi_wakeup", "_asgi_wakeup(): the loop's reader on the ASGI wake-up pipe", in: namespace) { _, _, _ in
            ASGIHost.current?.wakeUp()
            return retained(appserver_none())
        }
        _ = define("_asgi_flush", "_asgi_flush(): this turn's responses to the I/O thread", in: namespace) { _, _, _ in
            ASGIHost.current?.flushOutbox()
            return retained(appserver_none())
        }
        _ = define("_asgi_tick", "_asgi_tick(): the event loop is alive", in: namespace) { _, _, _ in
            ASGIHost.current?.tick()
            return retained(appserver_none())
        }
        _ = define("_server_log", "_server_log(level, text): 0 info, 1 warning, 2 error", in: namespace) { _, args, count in
            guard count == 2, let args, let levelObject = args[0], let text = args[1], let utf8 = PyUnicode_AsUTF8(text) else {
                return NativeFunctions.typeError("_server_log(level, text)")
            }
            let message = String(cString: utf8)
            if let logger = ASGIHost.current?.logger {
                switch PyLong_AsLong(levelObject) {
                case 0: logger.info("\(message)")
                case 1: logger.warning("\(message)")
                default: logger.error("\(message)")
                }
            }
            return retained(appserver_none())
        }
        _ = define("_log", "_log(text): write to the error log", in: namespace) { _, args, count in
            guard count == 1, let args, let text = args[0], let utf8 = PyUnicode_AsUTF8(text) else {
                return NativeFunctions.typeError("wsgi.errors.write() takes one str")
            }
            let message = String(cString: utf8)
            NativeFunctions.errorSink(message)
            Py_IncRef(appserver_none())
            return appserver_none()
        }
    }

    /// `_hook_log(level, text)`: `server.log` and `worker.log` of server hooks (0 debug ... 4 critical).
    static func installHookLog(into namespace: PyObjectPointer) {
        _ = define("_hook_log", "_hook_log(level, text)", in: namespace) { _, args, count in
            guard count == 2, let args, let levelObject = args[0], let text = args[1], let utf8 = PyUnicode_AsUTF8(text) else {
                return NativeFunctions.typeError("_hook_log(level, text)")
            }
            let message = String(cString: utf8)
            let logger = ServerHooks.logger
            switch PyLong_AsLong(levelObject) {
            case 0: logger.debug("\(message)")
            case 1: logger.info("\(message)")
            case 2: logger.warning("\(message)")
            case 3: logger.error("\(message)")
            default: logger.critical("\(message)")
            }
            return retained(appserver_none())
        }
    }

    /// A builtin function object over `body`, stored in `namespace` under `name`.
    private static func define(_ name: String, _ doc: String, in namespace: PyObjectPointer, _ body: FastCall) -> PyObjectPointer {
        let definition = UnsafeMutablePointer<PyMethodDef>.allocate(capacity: 1)   // lives as long as the process
        definition.initialize(to: PyMethodDef(
            ml_name: UnsafePointer(strdup(name)),
            ml_meth: unsafeBitCast(body, to: PyCFunction.self),
            ml_flags: METH_FASTCALL,
            ml_doc: UnsafePointer(strdup(doc))))
        let function = PyCFunction_NewEx(definition, nil, nil)!
        PyDict_SetItemString(namespace, name, function)
        return function
    }

    static func noRequest() -> PyObjectPointer? {
        PyErr_SetString(appserver_exc_runtime_error(), "called outside of a request thread of the server")
        return nil
    }

    static func typeError(_ message: String) -> PyObjectPointer? {
        PyErr_SetString(appserver_exc_type_error(), message)
        return nil
    }
}
