import AppServerConfig
import CPython
import CPythonShim
import Foundation
import Logging

/// Gunicorn's server hooks, defined in a Python config file and run with Gunicorn's arguments at
/// Gunicorn's moments: in the arbiter (on_starting, on_reload, when_ready, pre_fork, pre_exec,
/// child_exit, nworkers_changed, on_exit) and in the worker (post_fork, post_worker_init, worker_int,
/// worker_abort, pre_request, post_request, worker_exit). The caller holds the GIL.
public enum ServerHooks {
    /// A hook's argument, made into Gunicorn's objects on the Python side.
    public enum Argument {
        /// The arbiter (`server`): its pid and worker count.
        case server(pid: pid_t, workers: Int)
        /// A worker seen from the arbiter (pre_fork: no pid yet).
        case worker(pid: pid_t?, age: Int, alive: Bool, booted: Bool)
        /// This worker process's own `worker`.
        case thisWorker(age: Int, booted: Bool)
        case integer(Int)
    }

    /// Where `server.log` and `worker.log` write.
    nonisolated(unsafe) public static var logger = Logger(label: "appserver.hooks")

    /// Whether the config file defines the hook.
    public static func has(_ name: String) -> Bool {
        guard let hooks = PythonInterpreter.hooksFunction("HOOKS") else { return false }
        return PyDict_GetItemString(hooks, name) != nil
    }

    /// Gives `server.cfg` / `worker.cfg` the settings of `config` (Gunicorn's names and Python values).
    /// Needs the GIL.
    public static func setConfig(_ config: ServerConfig) {
        guard let set = PythonInterpreter.hooksFunction("set_config") else { return }
        var values: [String: ConfigValue] = [:]
        for row in SettingsTable.rows { values[row.name] = row.render(config) ?? .null }
        values["worker_class"] = .string(config.workerClass ?? (config.interface == .asgi ? "uvicorn.workers.UvicornWorker" : config.threads > 1 ? "gthread" : "sync"))
        let text = PyUnicode_FromString(taggedJSON(tableOf: .table(values)))
        if let result = PyObject_CallOneArg(set, text) { Py_DecRef(result) } else { PyErr_Clear() }
        Py_DecRef(text)
    }

    /// Makes this worker process's `worker` object (pre_request and post_request get it too).
    public static func introduceWorker(age: Int) {
        if let object = makeObject(.thisWorker(age: age, booted: false)) { Py_DecRef(object) } else { PyErr_Clear() }
    }

    /// Runs `body` holding the GIL, from any thread of a worker.
    public static func withGIL<T>(_ body: () -> T) -> T {
        let state = PyGILState_Ensure()
        defer { PyGILState_Release(state) }
        return body()
    }

    /// Runs a hook if the config file defines it; returns the traceback when it raised (logged too).
    @discardableResult
    public static func call(_ name: String, _ arguments: [Argument]) -> String? {
        guard has(name), let call = PythonInterpreter.hooksFunction("call_hook") else { return nil }
        var args: [PyObjectPointer?] = [PyUnicode_FromString(name)]
        for argument in arguments { args.append(makeObject(argument)) }
        defer { args.forEach { Py_DecRef($0) } }
        if args.contains(where: { $0 == nil }) {
            let text = PythonRuntime.takeErrorText() ?? "cannot make the hook's arguments"
            logger.error("Exception in \(name) hook:\n\(text)")
            return text
        }
        guard let result = args.withUnsafeBufferPointer({ PyObject_Vectorcall(call, $0.baseAddress, args.count, nil) }) else {
            let text = PythonRuntime.takeErrorText() ?? "unknown error"
            logger.error("Exception in \(name) hook:\n\(text)")
            return text
        }
        Py_DecRef(result)
        return nil
    }

    private static func makeObject(_ argument: Argument) -> PyObjectPointer? {
        func construct(_ name: String, _ values: [PyObjectPointer?]) -> PyObjectPointer? {
            defer { values.forEach { Py_DecRef($0) } }
            guard let type = PythonInterpreter.hooksFunction(name) else { return nil }
            return values.withUnsafeBufferPointer { PyObject_Vectorcall(type, $0.baseAddress, values.count, nil) }
        }
        switch argument {
        case .server(let pid, let workers):
            return construct("Server", [PyLong_FromLong(Int(pid)), PyLong_FromLong(workers)])
        case .worker(let pid, let age, let alive, let booted):
            return construct("Worker", [pid.map { PyLong_FromLong(Int($0)) } ?? retained(appserver_none()), PyLong_FromLong(Int(getpid())),
                                        PyLong_FromLong(age), PyBool_FromLong(alive ? 1 : 0), PyBool_FromLong(booted ? 1 : 0)])
        case .thisWorker(let age, let booted):
            return construct("this_worker", [PyLong_FromLong(age), PyBool_FromLong(booted ? 1 : 0)])
        case .integer(let value):
            return PyLong_FromLong(value)
        }
    }

    /// A value as the tagged JSON the Python side reads (`{"i": 4}`, `{"t": {...}}`).
    static func taggedJSON(tableOf value: ConfigValue) -> String {
        func tagged(_ value: ConfigValue) -> Any {
            switch value {
            case .string(let s): return ["s": s]
            case .integer(let i): return ["i": i]
            case .float(let d): return ["f": d]
            case .boolean(let b): return ["b": b]
            case .array(let items): return ["a": items.map(tagged)]
            case .table(let entries): return ["t": entries.mapValues(tagged)]
            case .null: return ["n": 0]
            }
        }
        guard case .table(let entries) = value,
              let data = try? JSONSerialization.data(withJSONObject: entries.mapValues(tagged)) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A Python config file (gunicorn.conf.py, `python:module`), run by the interpreter in the arbiter
/// with Gunicorn's semantics: lower-case module-level names that are settings are read, functions
/// named after hooks become hooks, other plain values are reported (Gunicorn ignores them silently).
public enum PythonConfigFile {
    public static func read(_ path: String, virtualenv: String?) throws(ConfigError) -> ConfigBuilder.PythonFileSettings {
        if !path.hasPrefix("python:") && !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError.configFile(path: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot be read (permission denied)" : "cannot be read (no such file)")
        }
        ArbiterPython.hold()
        defer { ArbiterPython.release() }
        do {
            _ = try PythonInterpreter.start(virtualenv: virtualenv)
        } catch {
            throw ConfigError.configFile(path: path, reason: error.description)
        }
        guard let read = PythonInterpreter.hooksFunction("read_config") else {
            throw ConfigError.configFile(path: path, reason: "the server's Python glue is missing")
        }
        let keys = PySet_New(nil)!
        for row in SettingsTable.rows { for key in row.keys { let item = PyUnicode_FromString(key); PySet_Add(keys, item); Py_DecRef(item) } }
        let hooks = PySet_New(nil)!
        for name in SettingsTable.hookNames { let item = PyUnicode_FromString(name); PySet_Add(hooks, item); Py_DecRef(item) }
        let args = [PyUnicode_FromString(path), keys, hooks, PyUnicode_FromString(ServerConfig.hookMarker)]
        defer { args.forEach { Py_DecRef($0) } }
        guard let result = args.withUnsafeBufferPointer({ PyObject_Vectorcall(read, $0.baseAddress, args.count, nil) }) else {
            throw ConfigError.configFile(path: path, reason: "failed to run:\n\(PythonRuntime.takeErrorText() ?? "unknown error")")
        }
        defer { Py_DecRef(result) }
        guard let utf8 = PyUnicode_AsUTF8(result),
              let object = try? JSONSerialization.jsonObject(with: Data(String(cString: utf8).utf8)) as? [String: Any],
              let settings = object["settings"] as? [[Any]], let unknown = object["unknown"] as? [String] else {
            PyErr_Clear()
            throw ConfigError.configFile(path: path, reason: "its settings could not be read")
        }
        var entries: [(key: String, value: ConfigValue)] = []
        for pair in settings {
            guard pair.count == 2, let key = pair[0] as? String, let value = untag(pair[1]) else { continue }
            entries.append((key, value))
        }
        return ConfigBuilder.PythonFileSettings(settings: entries, unknownNames: unknown)
    }

    static func untag(_ node: Any) -> ConfigValue? {
        guard let tagged = node as? [String: Any], let (kind, value) = tagged.first else { return nil }
        switch kind {
        case "s": return (value as? String).map(ConfigValue.string)
        case "i": return (value as? NSNumber).map { .integer($0.intValue) }
        case "f": return (value as? NSNumber).map { .float($0.doubleValue) }
        case "b": return (value as? NSNumber).map { .boolean($0.boolValue) }
        case "n": return .null
        case "a": return (value as? [Any]).map { .array($0.compactMap(untag)) }
        case "t": return (value as? [String: Any]).map { .table($0.compactMapValues(untag)) }
        default: return nil
        }
    }
}
