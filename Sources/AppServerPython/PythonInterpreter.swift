import AppServerConfig
import CPython
import CPythonShim
import Foundation

/// The process's one CPython interpreter and the server's Python glue in it. The arbiter starts it
/// (to read a Python config file, or at the latest before its first fork) and its workers take it over
/// through fork (PyOS_BeforeFork / AfterFork_Child), sharing what it imported.
public enum PythonInterpreter {
    /// The major.minor of the CPython built into this binary (its C API and ABI).
    public static let embeddedVersion = "\(PY_MAJOR_VERSION).\(PY_MINOR_VERSION)"

    /// `_appserver`'s namespace: the WSGI/ASGI glue (Bootstrap.swift, ASGIBootstrap.swift).
    nonisolated(unsafe) static var namespace: PyObjectPointer?
    /// `_appserver_hooks`'s namespace: config files and hooks (ServerHooksSource.swift).
    nonisolated(unsafe) static var hooksNamespace: PyObjectPointer?
    /// The app, when the arbiter imported it (`--preload`).
    nonisolated(unsafe) static var preloadedApp: PyObjectPointer?
    /// The arbiter's thread state while it does not hold the GIL.
    nonisolated(unsafe) static var releasedState: UnsafeMutablePointer<PyThreadState>?

    /// Whether this process has started (or inherited) the interpreter.
    public static var isRunning: Bool { namespace != nil }

    /// Starts CPython if this process has none yet (from the app's virtualenv, so `sys.prefix` and
    /// site-packages are the venv's) with the glue modules. Returns holding the GIL.
    static func start(virtualenv: String?) throws(AppLoadError) -> PyObjectPointer {
        if let namespace { return namespace }
        let programName = virtualenv.map { $0 + "/bin/python3" } ?? "/usr/bin/python3.\(PY_MINOR_VERSION)"
        var error: UnsafeMutablePointer<CChar>?
        if appserver_init_python(programName, &error) != 0 {
            let text = error.map { String(cString: $0) } ?? "unknown error"
            free(error)
            throw .interpreter("cannot start Python: \(text)")
        }
        // The glue runs in modules of their own, so the app can import nothing of it by accident.
        let glue = try makeModule("_appserver", sources: [bootstrapSource, asgiBootstrapSource]) { NativeFunctions.install(into: $0) }
        PythonRuntime.formatter = PyDict_GetItemString(glue, "format_exception")
        hooksNamespace = try makeModule("_appserver_hooks", sources: [serverHooksSource]) { NativeFunctions.installHookLog(into: $0) }
        namespace = glue
        addSearchPaths([])
        return glue
    }

    private static func makeModule(_ name: String, sources: [String], native: (PyObjectPointer) -> Void) throws(AppLoadError) -> PyObjectPointer {
        guard let module = PyModule_New(name), let namespace = PyModule_GetDict(module) else {
            throw .interpreter("cannot create the \(name) module: \(PythonRuntime.takeErrorText() ?? "?")")
        }
        Py_IncRef(namespace)
        PyDict_SetItemString(namespace, "__builtins__", PyEval_GetBuiltins())
        native(namespace)
        for source in sources {
            guard let result = PyRun_StringFlags(source, Py_file_input, namespace, namespace, nil) else {
                throw .interpreter("the server's Python glue failed: \(PythonRuntime.takeErrorText() ?? "?")")
            }
            Py_DecRef(result)
        }
        if let modules = PySys_GetObject("modules") { PyDict_SetItemString(modules, name, module) }
        return namespace
    }

    /// The working directory and `--pythonpath` first on sys.path, as with Gunicorn (again after a
    /// chdir: the arbiter read its config file before changing directory).
    static func addSearchPaths(_ pythonpath: [String]) {
        let cwd = FileManager.default.currentDirectoryPath
        let paths = [cwd] + pythonpath.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 }
        guard let sysPath = PySys_GetObject("path") else { return }
        for (index, path) in paths.enumerated() {
            let item = PyUnicode_FromString(path)
            if PySequence_Contains(sysPath, item) != 1 { PyList_Insert(sysPath, index, item) }
            Py_DecRef(item)
        }
        PyErr_Clear()
    }

    /// `raw_env` (`-e`): into os.environ, which the interpreter read when it started (in the arbiter,
    /// maybe before the settings were known, and a reload may bring new values).
    static func setEnvironment(_ environment: [String: String]) {
        guard !environment.isEmpty, let os = PyImport_ImportModule("os") else { PyErr_Clear(); return }
        defer { Py_DecRef(os) }
        guard let environ = PyObject_GetAttrString(os, "environ") else { PyErr_Clear(); return }
        defer { Py_DecRef(environ) }
        for (key, value) in environment {
            let k = PyUnicode_FromString(key), v = PyUnicode_FromString(value)
            if let k, let v { PyObject_SetItem(environ, k, v) }
            Py_DecRef(k)
            Py_DecRef(v)
        }
        PyErr_Clear()
    }

    /// Imports the app and finds its callable (calling a factory, `create_app()`).
    static func loadApp(_ config: ServerConfig) throws(AppLoadError) -> PyObjectPointer {
        let reference: AppReference
        do { reference = try AppReference(parsing: config.app ?? "") } catch { throw .interpreter(error.description) }
        let load = PyDict_GetItemString(namespace!, "load_app")!
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
        return app
    }

    /// logconfig_dict, logconfig, logconfig_json: applied to the app's Python logging.
    static func applyLogConfig(_ config: ServerConfig) throws(AppLoadError) {
        guard config.logconfigDict != nil || config.logconfig != nil || config.logconfigJSON != nil,
              let apply = hooksFunction("apply_logconfig") else { return }
        let dictText = config.logconfigDict.map { ServerHooks.taggedJSON(tableOf: $0) }
        let args: [PyObjectPointer?] = [dictText, config.logconfig, config.logconfigJSON].map { $0.map { PyUnicode_FromString($0) } ?? retained(appserver_none()) }
        defer { args.forEach { Py_DecRef($0) } }
        guard let result = args.withUnsafeBufferPointer({ PyObject_Vectorcall(apply, $0.baseAddress, 3, nil) }) else {
            throw .importFailed("the logging configuration (logconfig_dict, logconfig, logconfig_json) failed:\n\(PythonRuntime.takeErrorText() ?? "?")")
        }
        Py_DecRef(result)
    }

    static func hooksFunction(_ name: String) -> PyObjectPointer? {
        hooksNamespace.flatMap { PyDict_GetItemString($0, name) }
    }

}

/// The arbiter's side of the interpreter: it holds the GIL only while it runs Python (a hook, the
/// config file, the preload) and around fork, so Python threads a hook or the app started keep running.
public enum ArbiterPython {
    public static var isRunning: Bool { PythonInterpreter.isRunning }

    /// Takes the GIL (the arbiter's thread state was saved by `release`).
    public static func hold() {
        if let state = PythonInterpreter.releasedState {
            PythonInterpreter.releasedState = nil
            PyEval_RestoreThread(state)
        }
    }

    public static func release() {
        guard PythonInterpreter.isRunning, PythonInterpreter.releasedState == nil else { return }
        PythonInterpreter.releasedState = PyEval_SaveThread()
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
        hold()
        defer { release() }
        _ = try PythonInterpreter.start(virtualenv: config.virtualenv)
        if let importAll = PythonInterpreter.hooksFunction("import_standard_modules") {
            let names = PyUnicode_FromString(sharedStandardModules)
            if let result = PyObject_CallOneArg(importAll, names) { Py_DecRef(result) } else { PyErr_Clear() }
            Py_DecRef(names)
        }
    }

    /// `--preload`: imports the app in the arbiter before any worker is forked.
    public static func preload(_ config: ServerConfig) throws(AppLoadError) {
        hold()
        defer { release() }
        _ = try PythonInterpreter.start(virtualenv: config.virtualenv)
        PythonInterpreter.setEnvironment(config.env)
        PythonInterpreter.addSearchPaths(config.pythonpath)
        try PythonInterpreter.applyLogConfig(config)
        PythonInterpreter.preloadedApp = try PythonInterpreter.loadApp(config)
        // The app's objects move to the collector's permanent generation: collections in the workers
        // then never touch (and so never copy) the pages the preloaded app lives in.
        if let gc = PyImport_ImportModule("gc") {
            if let freeze = PyObject_GetAttrString(gc, "freeze") {
                if let result = PyObject_CallNoArgs(freeze) { Py_DecRef(result) }
                Py_DecRef(freeze)
            }
            Py_DecRef(gc)
        }
        PyErr_Clear()
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
        PythonInterpreter.releasedState = nil
    }
}
