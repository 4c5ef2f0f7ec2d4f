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
        guard let glue = PythonInterpreter.glue else { return false }
        return PyDict_GetItemString(glue.function(glue.hooks, "HOOKS"), name) != nil
    }

    /// Gives `server.cfg` / `worker.cfg` the settings of `config` (Gunicorn's names and Python values).
    /// Needs the GIL.
    public static func setConfig(_ config: ServerConfig) {
        guard let glue = PythonInterpreter.glue else { return }
        var values: [String: ConfigValue] = [:]
        for row in SettingsTable.rows { values[row.name] = row.render(config) ?? .null }
        values["worker_class"] = .string(config.workerClass ?? (config.interface == .asgi ? "uvicorn.workers.UvicornWorker" : config.threads > 1 ? "gthread" : "sync"))
        do {
            let text = try Python.str(taggedJSON(tableOf: .table(values)))
            _ = try Python.call(glue.function(glue.hooks, "set_config"), text.pointer)
        } catch {
            PyErr_Clear()
        }
    }

    /// Makes this worker process's `worker` object (pre_request and post_request get it too).
    public static func introduceWorker(age: Int) {
        if (try? makeObject(.thisWorker(age: age, booted: false))) == nil { PyErr_Clear() }
    }

    /// Runs `body` holding the GIL, from any thread of a worker.
    public static func withGIL<T>(_ body: () -> T) -> T {
        GIL.with(body)
    }

    /// Runs a hook if the config file defines it; returns the traceback when it raised (logged too,
    /// unless `logged` is false).
    @discardableResult
    public static func call(_ name: String, _ arguments: [Argument], logged: Bool = true) -> String? {
        guard has(name), let glue = PythonInterpreter.glue else { return nil }
        do {
            let args = try Python.tuple(count: arguments.count + 1) { (index) throws(PythonError) -> PyRef in
                index == 0 ? try Python.str(name) : try makeObject(arguments[index - 1])
            }
            _ = try Python.call(glue.function(glue.hooks, "call_hook"), tuple: args.pointer)
            return nil
        } catch {
            let text = PythonError.fetchText() ?? "unknown error"
            if logged { logger.error("Exception in \(name) hook:\n\(text)") }
            return text
        }
    }

    private static func makeObject(_ argument: Argument) throws(PythonError) -> PyRef {
        guard let glue = PythonInterpreter.glue else { throw PythonError.runtimeError("Python is not running") }
        func int(_ value: Int) throws(PythonError) -> PyRef { try Python.int(value) }
        switch argument {
        case .server(let pid, let workers):
            let pid = try int(Int(pid)), workers = try int(workers)
            return try Python.call(glue.function(glue.hooks, "Server"), pid.pointer, workers.pointer)
        case .worker(let pid, let age, let alive, let booted):
            let pid = try pid.map { (pid) throws(PythonError) -> PyRef in try int(Int(pid)) } ?? PyRef.noneObject
            let parent = try int(Int(getpid())), age = try int(age)
            let alive = PyRef.bool(alive), booted = PyRef.bool(booted)
            return try Python.call(glue.function(glue.hooks, "Worker"),
                                   arguments: [pid.pointer, parent.pointer, age.pointer, alive.pointer, booted.pointer])
        case .thisWorker(let age, let booted):
            let age = try int(age), booted = PyRef.bool(booted)
            return try Python.call(glue.function(glue.hooks, "this_worker"), age.pointer, booted.pointer)
        case .integer(let value):
            return try int(value)
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
        do {
            try ArbiterPython.startHolding(virtualenv: virtualenv)
        } catch {
            throw ConfigError.configFile(path: path, reason: error.description)
        }
        defer { ArbiterPython.release() }
        let text: String
        do {
            text = try runConfigFile(path)
        } catch {
            throw ConfigError.configFile(path: path, reason: "failed to run:\n\(PythonError.fetchText() ?? "unknown error")")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let settings = object["settings"] as? [[Any]], let unknown = object["unknown"] as? [String] else {
            throw ConfigError.configFile(path: path, reason: "its settings could not be read")
        }
        var entries: [(key: String, value: ConfigValue)] = []
        for pair in settings {
            guard pair.count == 2, let key = pair[0] as? String, let value = untag(pair[1]) else { continue }
            entries.append((key, value))
        }
        return ConfigBuilder.PythonFileSettings(settings: entries, unknownNames: unknown)
    }

    /// A worker class appserver does not know by name, imported in the arbiter's interpreter (from the
    /// app's virtualenv): the classes it derives from and its CONFIG_KWARGS.
    public static func describeWorkerClass(_ path: String, config: ServerConfig) throws(ConfigError) -> ConfigBuilder.WorkerClassDescription {
        func refused(_ reason: String) -> ConfigError { .invalidValue(key: "worker_class", value: path, reason: reason) }
        do {
            try ArbiterPython.startHolding(virtualenv: config.virtualenv)
        } catch {
            throw refused(error.description)
        }
        defer { ArbiterPython.release() }
        // Found where the app will be: --chdir's directory and --pythonpath (the chdir itself comes later).
        PythonInterpreter.addSearchPaths(config.pythonpath, from: config.chdir)
        let text: String
        do {
            guard let glue = PythonInterpreter.glue else { throw PythonError.runtimeError("Python is not running") }
            let name = try Python.str(path)
            let described = try Python.call(glue.function(glue.hooks, "describe_worker_class"), name.pointer)
            text = try Python.string(described.pointer)
        } catch {
            let last = PythonError.fetchText()?.split(separator: "\n").last.map(String.init) ?? "unknown error"
            throw refused("appserver imports a worker class it does not know by name, for the class it derives from and its CONFIG_KWARGS, and that failed: \(last)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let bases = object["bases"] as? [String], let kwargs = object["config_kwargs"] as? [String: Any] else {
            throw refused("its description could not be read")
        }
        return ConfigBuilder.WorkerClassDescription(bases: bases, configKwargs: kwargs.compactMapValues(untag))
    }

    /// `read_config(path, setting keys, hook names, marker)` of the hooks glue: the settings as tagged JSON.
    private static func runConfigFile(_ path: String) throws(PythonError) -> String {
        guard let glue = PythonInterpreter.glue else { throw PythonError.runtimeError("Python is not running") }
        func set(_ names: [String]) throws(PythonError) -> PyRef {
            let set = try PyRef.checked(PySet_New(nil))
            for name in names {
                let item = try Python.str(name)
                if PySet_Add(set.pointer, item.pointer) != 0 { throw PythonError() }
            }
            return set
        }
        let location = try Python.str(path), marker = try Python.str(ServerConfig.hookMarker)
        let keys = try set(SettingsTable.rows.flatMap(\.keys)), hooks = try set(Array(SettingsTable.hookNames))
        let result = try Python.call(glue.function(glue.hooks, "read_config"), arguments: [location.pointer, keys.pointer, hooks.pointer, marker.pointer])
        return try Python.string(result.pointer)
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
