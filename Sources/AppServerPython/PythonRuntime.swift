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

/// The embedded interpreter of one worker: started after fork, from the app's virtualenv.
public final class PythonRuntime: @unchecked Sendable {
    /// The bootstrap module's namespace (Bootstrap.swift).
    let namespace: PyObjectPointer
    public let app: PyObjectPointer

    /// Initializes CPython for `config` and imports the app. Returns holding the GIL on this thread.
    public init(config: ServerConfig, logger: Logger) throws(AppLoadError) {
        let programName = config.virtualenv.map { $0 + "/bin/python3" } ?? "/usr/bin/python3.\(PY_MINOR_VERSION)"
        let cwd = FileManager.default.currentDirectoryPath
        let paths = [cwd] + config.pythonpath.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 }
        var error: UnsafeMutablePointer<CChar>?
        if appserver_init_python(programName, &error) != 0 {
            let text = error.map { String(cString: $0) } ?? "unknown error"
            free(error)
            throw .interpreter("cannot start Python: \(text)")
        }
        // The app's directory and --pythonpath come first on sys.path, as with Gunicorn.
        if let sysPath = PySys_GetObject("path") {
            for (index, path) in paths.enumerated() {
                let item = PyUnicode_FromString(path)
                PyList_Insert(sysPath, index, item)
                Py_DecRef(item)
            }
        }
        // The bootstrap code runs in a module of its own, so the app can import nothing of it by accident.
        guard let module = PyModule_New("_appserver"), let namespace = PyModule_GetDict(module) else {
            throw .interpreter("cannot create the _appserver module: \(PythonRuntime.takeErrorText() ?? "?")")
        }
        Py_IncRef(namespace)
        self.namespace = namespace
        PyDict_SetItemString(namespace, "__builtins__", PyEval_GetBuiltins())
        NativeFunctions.install(into: namespace)
        for source in [bootstrapSource, asgiBootstrapSource] {
            guard let result = PyRun_StringFlags(source, Py_file_input, namespace, namespace, nil) else {
                throw .interpreter("the server's Python glue failed: \(PythonRuntime.takeErrorText() ?? "?")")
            }
            Py_DecRef(result)
        }
        PythonRuntime.formatter = PyDict_GetItemString(namespace, "format_exception")
        if let modules = PySys_GetObject("modules") { PyDict_SetItemString(modules, "_appserver", module) }

        let reference: AppReference
        do { reference = try AppReference(parsing: config.app ?? "") } catch { throw .interpreter(error.description) }
        let load = PyDict_GetItemString(namespace, "load_app")!
        let args = [PyUnicode_FromString(reference.module), PyUnicode_FromString(reference.callable)]
        defer { args.forEach { Py_DecRef($0) } }
        guard let app = args.withUnsafeBufferPointer({ PyObject_Vectorcall(load, $0.baseAddress, 2, nil) }) else {
            let isLookup = PyErr_ExceptionMatches(appserver_exc_lookup_error()) != 0
            let text = PythonRuntime.takeErrorText() ?? "unknown error"
            if isLookup, let last = text.split(separator: "\n").last {
                let message = last.hasPrefix("LookupError: ") ? String(last.dropFirst(13)) : String(last)
                throw .notFound(message)
            }
            throw .importFailed("Exception in worker process while importing '\(reference.module)':\n\(text)")
        }
        self.app = app
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

