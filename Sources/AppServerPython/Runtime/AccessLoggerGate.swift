import AppServerHTTP
import CPython
import CPythonShim
import Logging

/// The app's say over appserver's access log, as it has over a Gunicorn worker's: the access logger a
/// Gunicorn worker logs to (gunicorn.access for WSGI, uvicorn.access for ASGI, as Gunicorn's
/// UvicornWorker has Uvicorn log) being disabled, set above INFO, or given a filter drops a request's
/// line. A filter on it is how FastAPI and Flask apps keep health checks out of the access log.
///
/// The log line itself stays native; Python is asked only when the logger is not as the worker set it
/// up (INFO, enabled, no filters), which three attribute reads a request tell. Used with the GIL,
/// where the line is written.
final class AccessLoggerGate: @unchecked Sendable {
    private let name: String
    private let logger: PyRef
    /// The server's error log, for a filter that raises.
    private let errorLog: Logger
    private let allowed: PyObjectPointer
    private let keyFilters = Python.interned("filters"), keyDisabled = Python.interned("disabled"), keyLevel = Python.interned("level")
    /// Gunicorn's atom names (`AccessLogFormatter.jsonAtoms`) as a tuple of str, for the record's args.
    private let atomKeys: PyRef
    private let keyClient = Python.interned("client")

    /// With the GIL; nil when the logger cannot be had (then every line goes out).
    init?(loggerName: String, glue: Glue, errorLog: Logger) {
        guard let logging = try? PyRef.checked(PyImport_ImportModule("logging")),
              let getLogger = try? Python.attribute(logging.pointer, "getLogger"),
              let name = try? Python.str(loggerName),
              let logger = try? Python.call(getLogger.pointer, name.pointer) else {
            PyErr_Clear()
            return nil
        }
        self.name = loggerName
        self.logger = logger
        self.errorLog = errorLog
        allowed = glue.function(glue.hooks, "access_allowed")
        guard let keys = try? Python.tuple(count: AccessLogFormatter.jsonAtoms.count, { index throws(PythonError) in
            try Python.str(AccessLogFormatter.jsonAtoms[index])
        }) else {
            PyErr_Clear()
            return nil
        }
        atomKeys = keys
    }

    /// Whether `line`, the formatted line of `record`, goes to the access log, when the logger is not as
    /// set up (`isAsSetUp`): its level, `disabled` and filters decide, as for one of its own records.
    func allows(_ record: AccessLogRecord, line: [UInt8], formatter: AccessLogFormatter) -> Bool {
        do {
            let atoms = try PyRef.checked(PyDict_New())
            for (index, name) in AccessLogFormatter.jsonAtoms.enumerated() {
                try Python.setItem(atoms.pointer, PyTuple_GetItem(atomKeys.pointer, index)!, try Python.str(formatter.atom(name, record)))
            }
            try Python.setItem(atoms.pointer, keyClient, try Python.str(Self.uvicornClient(record.request)))
            let headers = try PyRef.checked(PyList_New(0))
            try record.request.headers.forEach { (name, value) throws(PythonError) in
                let pair = try Python.tuple(try Python.latin1(name), try Python.latin1(value))
                if PyList_Append(headers.pointer, pair.pointer) != 0 { throw PythonError() }
            }
            let text = try Python.str(String(decoding: line, as: UTF8.self))
            let answer = try Python.call(allowed, arguments: [logger.pointer, text.pointer, atoms.pointer, headers.pointer])
            return PyObject_IsTrue(answer.pointer) == 1
        } catch {
            // A filter that raises is the app's bug: the line goes out, and the error log says why (as
            // Gunicorn logs an access line's exception).
            errorLog.error("the app's filter on \(name) failed, so the access line is written:\n\(PythonError.fetchText() ?? "?")")
            return true
        }
    }

    /// The logger as the worker set it up: enabled, at INFO, without filters.
    func isAsSetUp() -> Bool {
        guard let filters = try? Python.attribute(logger.pointer, keyFilters.pointer),
              let disabled = try? Python.attribute(logger.pointer, keyDisabled.pointer),
              let level = try? Python.attribute(logger.pointer, keyLevel.pointer) else {
            PyErr_Clear()
            return false
        }
        return appserver_is_list(filters.pointer) != 0 && PyList_Size(filters.pointer) == 0
            && disabled.pointer == appserver_false() && PyLong_AsLong(level.pointer) == 20
    }

    /// Uvicorn's `client` of its access line: `host:port` of the scope's client (port 0 for one a
    /// trusted proxy named), empty when there is none.
    static func uvicornClient(_ request: RequestInfo) -> String {
        if let client = request.origin?.client { return "\(client.host):\(client.port)" }
        guard let address = request.remoteAddress, let host = address.ipAddress, let port = address.port else { return "" }
        return "\(host):\(port)"
    }
}

extension AccessLogWriter {
    /// Adds the access log line of `record` to the batch, unless the app's access logger drops it. With
    /// the GIL: the gate may ask the app's logger, which runs Python, and so never under the batch's lock
    /// (a thread waiting for that lock with the GIL held would keep the gate's thread from finishing).
    func write(_ record: AccessLogRecord, gate: AccessLoggerGate?) {
        if let gate, !gate.isAsSetUp() {
            let line = formatter.line(record)
            if gate.allows(record, line: line, formatter: formatter) { add(line: line) }
        } else {
            add(record)   // straight into the batch: no array of its own
        }
    }
}
