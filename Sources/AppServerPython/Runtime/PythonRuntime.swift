import AppServerConfig
import CPython
import CPythonShim
import Logging

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
    let glue: Glue
    /// The app's callable (with the request hooks around it, for WSGI).
    private(set) var app: PyRef
    /// Where text written to `wsgi.errors` goes (level 3: error).
    let wsgiErrors = LogSink { _, _ in }

    /// Starts (or takes over) the interpreter for `config` and imports the app, unless the arbiter
    /// preloaded it. Returns holding the GIL on this thread.
    public init(config: ServerConfig, logger: Logger) throws(AppLoadError) {
        glue = try PythonInterpreter.start(virtualenv: config.virtualenv)
        PythonInterpreter.setEnvironment(config.env)
        PythonInterpreter.addSearchPaths(config.pythonpath)
        try PythonInterpreter.configureLogging(config)
        if let preloaded = PythonInterpreter.preloadedApp {
            app = PyRef(retaining: preloaded)
        } else {
            app = try PythonInterpreter.loadApp(config)
        }
    }

    /// WSGI: the app with the config file's pre_request and post_request hooks around it.
    func wrapWithRequestHooks() {
        guard ServerHooks.has("pre_request") || ServerHooks.has("post_request") else { return }
        if let wrapped = try? Python.call(glue.function(glue.hooks, "with_request_hooks"), app.pointer) { app = wrapped } else { PyErr_Clear() }
    }

    /// Where text written to `wsgi.errors` goes.
    public func sendWSGIErrors(to sink: @escaping @Sendable (String) -> Void) {
        wsgiErrors.write = { _, text in sink(text) }
    }

    /// Lets other threads take the GIL (after start-up, the main thread only waits for signals).
    public func releaseMainThread() {
        PythonInterpreter.arbiterThread.leave()   // its thread state stays with this thread, which runs no more Python
    }

    /// Runs the app's atexit functions before the worker exits.
    public func runExitFunctions() {
        GIL.with {
            if (try? Python.call(glue.function(glue.runtime, "run_exit_functions"))) == nil { PyErr_Clear() }
        }
    }
}
