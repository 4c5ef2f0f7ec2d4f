import AppServerConfig
import CPython
import CPythonShim
import Foundation

/// The server's Python glue (Glue/*.py, embedded in the binary), one module each, loaded once per
/// process; the namespaces are borrowed from the modules, which live as long as the process.
final class Glue: @unchecked Sendable {
    let runtime: PyObjectPointer
    let wsgi: PyObjectPointer
    let asgi: PyObjectPointer
    let hooks: PyObjectPointer

    fileprivate init() throws(AppLoadError) {
        // In order: the later modules import from _appserver_runtime.
        runtime = try Self.load("_appserver_runtime", PackageResources._appserver_runtime_py)
        wsgi = try Self.load("_appserver_wsgi", PackageResources._appserver_wsgi_py)
        asgi = try Self.load("_appserver_asgi", PackageResources._appserver_asgi_py)
        hooks = try Self.load("_appserver_hooks", PackageResources._appserver_hooks_py)
    }

    /// A function or class of a glue module (the name is the glue's own: a missing one is a bug).
    func function(_ namespace: PyObjectPointer, _ name: String) -> PyObjectPointer {
        guard let object = PyDict_GetItemString(namespace, name) else { fatalError("the server's Python glue has no \(name)") }
        return object
    }

    /// Runs `source` as the module `name`, registered in sys.modules (so the app can import nothing of
    /// it by accident, and glue modules can import each other).
    private static func load(_ name: String, _ source: [UInt8]) throws(AppLoadError) -> PyObjectPointer {
        do {
            let module = try PyRef.checked(PyModule_New(name))
            guard let namespace = PyModule_GetDict(module.pointer), let modules = PySys_GetObject("modules") else { throw PythonError() }
            let file = try Python.str("<appserver>/\(name).py")
            if PyDict_SetItemString(namespace, "__builtins__", PyEval_GetBuiltins()) != 0
                || PyDict_SetItemString(namespace, "__file__", file.pointer) != 0
                || PyDict_SetItemString(modules, name, module.pointer) != 0 { throw PythonError() }
            let code = try PyRef.checked(Py_CompileString(String(decoding: source, as: UTF8.self), "<appserver>/\(name).py", Py_file_input))
            _ = try PyRef.checked(PyEval_EvalCode(code.pointer, namespace, namespace))
            return namespace   // the module stays in sys.modules for the life of the process
        } catch {
            throw .interpreter("the server's Python glue (\(name)) failed: \(PythonError.fetchText() ?? "?")")
        }
    }
}

/// The process's one CPython interpreter and the server's Python glue in it. The arbiter starts it
/// (to read a Python config file, or at the latest before its first fork) and its workers take it over
/// through fork (PyOS_BeforeFork / AfterFork_Child), sharing what it imported.
public enum PythonInterpreter {
    /// The major.minor of the CPython built into this binary (its C API and ABI).
    public static let embeddedVersion = "\(PY_MAJOR_VERSION).\(PY_MINOR_VERSION)"

    nonisolated(unsafe) static var glue: Glue?
    /// The app, when the arbiter imported it (`--preload`); the process's for good.
    nonisolated(unsafe) static var preloadedApp: PyObjectPointer?
    /// The arbiter's Python thread state: it holds the GIL only while it runs Python.
    nonisolated(unsafe) static var arbiterThread = PythonThreadState()
    /// Where `server.log` and `worker.log` of hooks write (bound to `LOG_FUNCTION` of the hooks glue).
    static let hookLog = LogSink { level, text in
        let logger = ServerHooks.logger
        switch level {
        case 0: logger.debug("\(text)")
        case 1: logger.info("\(text)")
        case 2: logger.warning("\(text)")
        case 3: logger.error("\(text)")
        default: logger.critical("\(text)")
        }
    }

    /// Whether this process has started (or inherited) the interpreter.
    public static var isRunning: Bool { glue != nil }

    /// Starts CPython if this process has none yet (from the app's virtualenv, so `sys.prefix` and
    /// site-packages are the venv's) with the glue modules. Returns holding the GIL.
    @discardableResult
    static func start(virtualenv: String?) throws(AppLoadError) -> Glue {
        if let glue { return glue }
        let programName = virtualenv.map { $0 + "/bin/python3" }   // nil: the python3.X it was built against
        var error: UnsafeMutablePointer<CChar>?
        if appserver_init_python(programName, &error) != 0 {
            let text = error.map { String(cString: $0) } ?? "unknown error"
            free(error)
            throw .interpreter("cannot start Python: \(text)")
        }
        let glue = try Glue()
        Python.formatter = glue.function(glue.runtime, "format_exception")
        let log = LogSink.leveled.bind(to: hookLog)
        PyDict_SetItemString(glue.hooks, "LOG_FUNCTION", log.pointer)
        self.glue = glue
        addSearchPaths([])
        return glue
    }

    /// The working directory and `--pythonpath` first on sys.path, as with Gunicorn (again after a
    /// chdir: the arbiter read its config file before changing directory).
    static func addSearchPaths(_ pythonpath: [String], from directory: String? = nil) {
        let cwd = directory ?? FileManager.default.currentDirectoryPath
        let paths = [cwd] + pythonpath.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 }
        guard let sysPath = PySys_GetObject("path") else { return }
        for (index, path) in paths.enumerated() {
            guard let item = try? Python.str(path) else { continue }
            if PySequence_Contains(sysPath, item.pointer) != 1 { PyList_Insert(sysPath, index, item.pointer) }
        }
        PyErr_Clear()
    }

    /// `raw_env` (`-e`): into os.environ, which the interpreter read when it started (in the arbiter,
    /// maybe before the settings were known, and a reload may bring new values).
    static func setEnvironment(_ environment: [String: String]) {
        // Also what an earlier configuration set and this one does not: back to what it was.
        let values = ConfiguredEnvironment.values(for: environment)
        guard !values.isEmpty else { return }
        do {
            let os = try PyRef.checked(PyImport_ImportModule("os"))
            let environ = try Python.attribute(os.pointer, "environ")
            for (key, value) in values {
                let k = try Python.str(key)
                if let value {
                    let v = try Python.str(value)
                    if PyObject_SetItem(environ.pointer, k.pointer, v.pointer) != 0 { throw PythonError() }
                } else if PyMapping_HasKey(environ.pointer, k.pointer) != 0, PyObject_DelItem(environ.pointer, k.pointer) != 0 {
                    throw PythonError()
                }
            }
        } catch {
            PyErr_Clear()
        }
    }

    /// Imports the app and finds its callable (calling a factory, `create_app()`).
    static func loadApp(_ config: ServerConfig) throws(AppLoadError) -> PyRef {
        let reference: AppReference
        do { reference = try AppReference(parsing: config.app ?? "") } catch { throw .interpreter(error.description) }
        let glue = try start(virtualenv: config.virtualenv)
        do {
            let module = try Python.str(reference.module), callable = try Python.str(reference.callable)
            return try Python.call(glue.function(glue.runtime, "load_app"), module.pointer, callable.pointer)
        } catch {
            let notFound = PyErr_ExceptionMatches(glue.function(glue.runtime, "AppNotFound")) != 0
            let text = PythonError.fetchText() ?? "unknown error"
            if notFound, let last = text.split(separator: "\n").last {
                // `_appserver_runtime.AppNotFound: Failed to find attribute 'app' in 'hello'.`
                throw .notFound(String(last.split(separator: ": ", maxSplits: 1).last ?? last))
            }
            throw .importFailed("Exception in worker process while importing '\(reference.module)':\n\(text)")
        }
    }

    /// The app's Python logging: Gunicorn's gunicorn.error logger (to the server's error log, at
    /// loglevel), then logconfig_dict, else logconfig_json, else logconfig.
    static func configureLogging(_ config: ServerConfig) throws(AppLoadError) {
        guard let glue else { return }
        do {
            func text(_ value: String?) throws(PythonError) -> PyRef { if let value { try Python.str(value) } else { .noneObject } }
            let dictText = try text(config.logconfigDict.map { ServerHooks.taggedJSON(tableOf: $0) })
            let level = try Python.str(config.logLevel.rawValue)
            let file = try text(config.logconfig), json = try text(config.logconfigJSON)
            _ = try Python.call(glue.function(glue.hooks, "apply_logconfig"), arguments: [level.pointer, dictText.pointer, file.pointer, json.pointer])
        } catch {
            throw .importFailed("the logging configuration (logconfig_dict, logconfig, logconfig_json) failed:\n\(PythonError.fetchText() ?? "?")")
        }
    }
}

/// The arbiter's side of the interpreter: it holds the GIL only while it runs Python (a hook, the
/// config file, the preload) and around fork, so Python threads a hook or the app started keep running.
public enum ArbiterPython {
    public static var isRunning: Bool { PythonInterpreter.isRunning }

    /// Takes the GIL (the arbiter's thread state was saved by `release`).
    public static func hold() {
        guard PythonInterpreter.isRunning else { return }
        PythonInterpreter.arbiterThread.enter()
    }

    public static func release() {
        guard PythonInterpreter.isRunning else { return }
        PythonInterpreter.arbiterThread.leave()
    }

    /// Standard-library modules that web apps (Django, Flask, FastAPI and what they use) import. The
    /// arbiter imports them once, so its workers share those pages instead of each building its own copy,
    /// as Gunicorn's workers share what its master imported. Never the app, never a third-party package:
    /// a reload still imports all of the app's own code afresh.
    static let sharedStandardModules = """
        abc array ast asyncio atexit base64 binascii bisect bz2 calendar codecs collections collections.abc
        concurrent.futures contextlib contextvars copy copyreg dataclasses datetime decimal difflib dis
        email.base64mime email.charset email.encoders email.errors email.feedparser email.header
        email.headerregistry email.iterators email.message email.mime.multipart email.mime.text email.parser
        email.policy email.quoprimime email.utils enum errno fnmatch fractions functools gettext glob hashlib
        heapq hmac html html.entities http http.client http.cookies importlib.machinery importlib.metadata
        importlib.util inspect ipaddress json keyword linecache locale logging logging.config logging.handlers
        lzma math mimetypes numbers opcode operator pathlib pickle pkgutil platform pprint queue quopri random re
        reprlib secrets select selectors shlex shutil signal socket socketserver ssl stat string struct
        subprocess tempfile textwrap threading token tokenize traceback types typing unicodedata urllib
        urllib.parse urllib.request uuid warnings weakref wsgiref.headers zipfile zlib zoneinfo
        """

    /// Starts the interpreter in the arbiter, before any worker is forked, with the standard library
    /// web apps use: the workers inherit it (copy-on-write) rather than each starting its own.
    public static func start(_ config: ServerConfig) throws(AppLoadError) {
        try startHolding(config)
        defer { release() }
        let glue = try PythonInterpreter.start(virtualenv: config.virtualenv)
        if let names = try? Python.str(sharedStandardModules),
           (try? Python.call(glue.function(glue.hooks, "import_standard_modules"), names.pointer)) != nil { return }
        PyErr_Clear()
    }

    /// `--preload`: imports the app in the arbiter before any worker is forked.
    public static func preload(_ config: ServerConfig) throws(AppLoadError) {
        try startHolding(config)
        defer { release() }
        PythonInterpreter.setEnvironment(config.env)
        PythonInterpreter.addSearchPaths(config.pythonpath)
        try PythonInterpreter.configureLogging(config)
        // Owned by the process from here on (workers inherit it through fork).
        PythonInterpreter.preloadedApp = try PythonInterpreter.loadApp(config).take()
        // The app's objects move to the collector's permanent generation: collections in the workers
        // then never touch (and so never copy) the pages the preloaded app lives in.
        if let gc = PyRef(newReference: PyImport_ImportModule("gc")), (try? Python.callMethod(gc.pointer, "freeze")) != nil { return }
        PyErr_Clear()
    }

    /// Holds the GIL with the interpreter started (the first start takes it on this thread).
    static func startHolding(_ config: ServerConfig) throws(AppLoadError) {
        try startHolding(virtualenv: config.virtualenv)
    }

    static func startHolding(virtualenv: String?) throws(AppLoadError) {
        if PythonInterpreter.isRunning {
            hold()
        } else {
            try PythonInterpreter.start(virtualenv: virtualenv)
            PythonInterpreter.arbiterThread.adoptHeld()
        }
    }

    /// Around fork: the interpreter's locks are taken so the child gets them in a known state.
    public static func beforeFork() {
        guard isRunning else { return }
        hold()
        PyOS_BeforeFork()
    }

    public static func afterForkInParent() {
        guard isRunning else { return }
        PyOS_AfterFork_Parent()
        release()
    }

    /// In the new worker: the interpreter is this process's now, held by its main thread.
    public static func afterForkInChild() {
        guard isRunning else { return }
        PyOS_AfterFork_Child()
        PythonInterpreter.arbiterThread.adoptHeld()   // the worker's main thread holds it now
    }
}
