import AppServerConfig
import CPython
import CPythonShim
import Foundation
import Logging

public typealias PyObjectPointer = UnsafeMutablePointer<PyObject>

/// Why the app could not be started in a worker; the exit status tells the arbiter which (Gunicorn's
/// numbers: 3 the app failed to import, 4 the named callable is not there).
public enum AppLoadError: Error, CustomStringConvertible {
    case interpreter(String)
    case importFailed(String)
    case notFound(String)
    /// The app's own start-up (ASGI lifespan) failed: maybe a passing cause (a database down), so
    /// the arbiter retries with a growing delay rather than stopping.
    case startupFailed(String)

    public var description: String {
        switch self {
        case .interpreter(let text), .importFailed(let text), .notFound(let text), .startupFailed(let text): return text
        }
    }

    public static let startupFailedStatus: Int32 = 5

    public var exitStatus: Int32 {
        switch self {
        case .notFound: return 4
        case .startupFailed: return Self.startupFailedStatus
        default: return 3
        }
    }
}

/// The app inside one worker's interpreter. The interpreter itself is the process's (PythonInterpreter),
/// inherited from the arbiter.
public final class PythonRuntime: @unchecked Sendable {
    /// The bootstrap module's namespace (Bootstrap.swift).
    let namespace: PyObjectPointer
    public private(set) var app: PyObjectPointer

    /// Starts (or takes over) the interpreter for `config` and imports the app, unless the arbiter
    /// preloaded it. Returns holding the GIL on this thread.
    public init(config: ServerConfig, logger: Logger) throws(AppLoadError) {
        namespace = try PythonInterpreter.start(virtualenv: config.virtualenv)
        PythonInterpreter.setEnvironment(config.env)
        PythonInterpreter.addSearchPaths(config.pythonpath)
        try PythonInterpreter.applyLogConfig(config)
        if let preloaded = PythonInterpreter.preloadedApp {
            app = preloaded
        } else {
            app = try PythonInterpreter.loadApp(config)
        }
    }

    /// WSGI: the app with the config file's pre_request and post_request hooks around it.
    func wrapWithRequestHooks() {
        guard ServerHooks.has("pre_request") || ServerHooks.has("post_request"),
              let wrap = PythonInterpreter.hooksFunction("with_request_hooks") else { return }
        if let wrapped = PyObject_CallOneArg(wrap, app) { app = wrapped } else { PyErr_Clear() }
    }

    /// Where text written to `wsgi.errors` goes.
    public func sendWSGIErrors(to sink: @escaping @Sendable (String) -> Void) {
        NativeFunctions.errorSink = sink
    }

    /// Lets other threads take the GIL (after start-up, the main thread only waits for signals).
    public func releaseMainThread() {
        _ = PyEval_SaveThread()   // its thread state stays with this thread, which runs no more Python
    }

    /// Runs the app's atexit functions before the worker exits.
    public func runExitFunctions() {
        let gil = PyGILState_Ensure()
        if let function = PyDict_GetItemString(namespace, "run_exit_functions"), let result = PyObject_CallNoArgs(function) {
            Py_DecRef(result)
        } else {
            PyErr_Clear()
        }
        PyGILState_Release(gil)
    }

    /// The current Python exception as its formatted traceback, clearing it. Needs the GIL.
    static func takeErrorText() -> String? {
        guard let exception = fetchException() else { return nil }
        defer { Py_DecRef(exception) }
        return formatException(exception)
    }

    /// Takes the current exception as one object with its traceback attached (Python 3.11 has no
    /// PyErr_GetRaisedException yet).
    static func fetchException() -> PyObjectPointer? {
        var type: PyObjectPointer?, value: PyObjectPointer?, traceback: PyObjectPointer?
        PyErr_Fetch(&type, &value, &traceback)
        guard type != nil else { return nil }
        PyErr_NormalizeException(&type, &value, &traceback)
        if let value, let traceback { PyException_SetTraceback(value, traceback) }
        Py_DecRef(type)
        Py_DecRef(traceback)
        return value
    }

    /// `repr(object)`, for messages.
    static func repr(_ object: PyObjectPointer) -> String {
        guard let text = PyObject_Repr(object) else { PyErr_Clear(); return "?" }
        defer { Py_DecRef(text) }
        guard let utf8 = PyUnicode_AsUTF8(text) else { PyErr_Clear(); return "?" }
        return String(cString: utf8)
    }

    nonisolated(unsafe) static var formatter: PyObjectPointer?

    static func formatException(_ exception: PyObjectPointer) -> String {
        if let formatter, let text = PyObject_CallOneArg(formatter, exception) {
            defer { Py_DecRef(text) }
            if let utf8 = PyUnicode_AsUTF8(text) { return String(cString: utf8) }
        }
        PyErr_Clear()
        if let repr = PyObject_Repr(exception) {
            defer { Py_DecRef(repr) }
            if let utf8 = PyUnicode_AsUTF8(repr) { return String(cString: utf8) }
        }
        PyErr_Clear()
        return "(an exception that cannot be shown)"
    }
}

