import CPython
import CPythonShim
import NIOCore

public typealias PyObjectPointer = UnsafeMutablePointer<PyObject>

// Ownership of Python objects, in the types:
// - `PyRef` owns one reference (a "new reference" of the C API) and releases it when it goes away.
//   It cannot be copied: a second owner takes its own reference (`copy()`), and a C function that
//   steals a reference gets it with `take()`, which ends the `PyRef` without releasing.
// - A bare `PyObjectPointer` is always borrowed: valid while its owner lives, never released. No
//   function of the server returns a new reference as a bare pointer.
// Only this file calls Py_IncRef and Py_DecRef (tests/glue/test_bridge_rules.py keeps it so).

/// One owned (strong) reference to a Python object. Needs the GIL to be made, copied and dropped.
public struct PyRef: ~Copyable {
    /// The object, borrowed for as long as this reference lives.
    public let pointer: PyObjectPointer

    /// Takes over a new reference (the result of a C API call that returns one).
    @inline(__always)
    init(stealing pointer: PyObjectPointer) {
        self.pointer = pointer
    }

    /// A new reference of a call that may fail: nil when it did (a Python exception is set).
    @inline(__always)
    init?(newReference pointer: PyObjectPointer?) {
        guard let pointer else { return nil }
        self.pointer = pointer
    }

    /// Takes one more reference to a borrowed object.
    @inline(__always)
    init(retaining pointer: PyObjectPointer) {
        Py_IncRef(pointer)
        self.pointer = pointer
    }

    /// A new reference of a call that may fail, or the error it set.
    @inline(__always)
    static func checked(_ pointer: PyObjectPointer?) throws(PythonError) -> PyRef {
        guard let pointer else { throw PythonError() }
        return PyRef(stealing: pointer)
    }

    /// Another owner of the same object.
    @inline(__always)
    func copy() -> PyRef { PyRef(retaining: pointer) }

    /// Hands the reference over (to a C function that steals it, or to a C caller as a result).
    @inline(__always)
    consuming func take() -> PyObjectPointer {
        let pointer = self.pointer
        discard self
        return pointer
    }

    @inline(__always)
    deinit { Py_DecRef(pointer) }

    /// `None`.
    static var noneObject: PyRef { PyRef(retaining: appserver_none()) }
    static func bool(_ value: Bool) -> PyRef { PyRef(retaining: value ? appserver_true() : appserver_false()) }
}

extension Optional where Wrapped == PyRef {
    /// The object, borrowed, if there is one.
    var pointer: PyObjectPointer? {
        switch self {
        case .some(let ref): return ref.pointer
        default: return nil
        }
    }
}

/// A Python exception is set (the C API's NULL or -1 result). Fetch it with `PythonError.fetch()`,
/// hand it to Python by returning NULL, or clear it.
public struct PythonError: Error {
    init() {}

    /// Sets `type(message)` as the current exception and returns the error that says so.
    static func raise(_ type: PyObjectPointer, _ message: String) -> PythonError {
        PyErr_SetString(type, message)
        return PythonError()
    }

    static func typeError(_ message: String) -> PythonError { raise(appserver_exc_type_error(), message) }
    static func valueError(_ message: String) -> PythonError { raise(appserver_exc_value_error(), message) }
    static func runtimeError(_ message: String) -> PythonError { raise(appserver_exc_runtime_error(), message) }

    /// Takes the current exception as one object with its traceback attached (Python 3.11 has no
    /// PyErr_GetRaisedException yet); nil when none is set.
    static func fetch() -> PyRef? {
        var type: PyObjectPointer?, value: PyObjectPointer?, traceback: PyObjectPointer?
        PyErr_Fetch(&type, &value, &traceback)
        guard type != nil else { return nil }
        PyErr_NormalizeException(&type, &value, &traceback)
        if let value, let traceback { PyException_SetTraceback(value, traceback) }
        Py_DecRef(type)
        Py_DecRef(traceback)
        return PyRef(newReference: value)
    }

    /// The current exception's formatted traceback, clearing it.
    static func fetchText() -> String? {
        guard let exception = fetch() else { return nil }
        return Python.format(exception: exception.pointer)
    }
}

/// Calls, conversions and small helpers over the C API; each needs the GIL.
enum Python {
    // MARK: calls (vectorcall, arguments on the stack)

    @inline(__always)
    static func call(_ callable: PyObjectPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_CallNoArgs(callable))
    }

    @inline(__always)
    static func call(_ callable: PyObjectPointer, _ a: PyObjectPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_CallOneArg(callable, a))
    }

    @inline(__always)
    static func call(_ callable: PyObjectPointer, _ a: PyObjectPointer, _ b: PyObjectPointer,
                     keywords: PyObjectPointer? = nil) throws(PythonError) -> PyRef {
        var args: (PyObjectPointer?, PyObjectPointer?) = (a, b)
        return try vectorcall(callable, &args, count: 2, keywords: keywords)
    }

    @inline(__always)
    static func call(_ callable: PyObjectPointer, _ a: PyObjectPointer, _ b: PyObjectPointer, _ c: PyObjectPointer,
                     keywords: PyObjectPointer? = nil) throws(PythonError) -> PyRef {
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) = (a, b, c)
        return try vectorcall(callable, &args, count: 3, keywords: keywords)
    }

    /// `callable(*arguments)` for a list made at run time.
    static func call(_ callable: PyObjectPointer, arguments: [PyObjectPointer?]) throws(PythonError) -> PyRef {
        let result = arguments.withUnsafeBufferPointer { PyObject_Vectorcall(callable, $0.baseAddress, arguments.count, nil) }
        return try PyRef.checked(result)
    }

    /// `callable(*args)` with the arguments in a tuple.
    static func call(_ callable: PyObjectPointer, tuple args: PyObjectPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_Call(callable, args, nil))
    }

    /// `object.name(*arguments)`; `keywords` is a tuple naming the last arguments.
    @inline(__always)
    static func callMethod(_ object: PyObjectPointer, _ name: PyObjectPointer, _ a: PyObjectPointer,
                           keywords: PyObjectPointer? = nil) throws(PythonError) -> PyRef {
        var args: (PyObjectPointer?, PyObjectPointer?) = (object, a)
        return try vectorcallMethod(name, &args, count: 2, keywords: keywords)
    }

    @inline(__always)
    static func callMethod(_ object: PyObjectPointer, _ name: PyObjectPointer, _ a: PyObjectPointer, _ b: PyObjectPointer,
                           keywords: PyObjectPointer? = nil) throws(PythonError) -> PyRef {
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) = (object, a, b)
        return try vectorcallMethod(name, &args, count: 3, keywords: keywords)
    }

    @inline(__always)
    static func callMethod(_ object: PyObjectPointer, _ name: PyObjectPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_CallMethodNoArgs(object, name))
    }

    /// `object.name()` with the name as text.
    static func callMethod(_ object: PyObjectPointer, _ name: String) throws(PythonError) -> PyRef {
        let method = try attribute(object, name)
        return try call(method.pointer)
    }

    /// The arguments are a tuple of `count` (plus keyword values) object pointers, laid out in a row.
    @inline(__always)
    private static func vectorcall<Arguments>(_ callable: PyObjectPointer, _ args: inout Arguments, count: Int,
                                              keywords: PyObjectPointer?) throws(PythonError) -> PyRef {
        let keywordCount = keywords.map { PyTuple_Size($0) } ?? 0
        let result = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: count) {
                PyObject_Vectorcall(callable, $0, count - keywordCount, keywords)
            }
        }
        return try PyRef.checked(result)
    }

    @inline(__always)
    private static func vectorcallMethod<Arguments>(_ name: PyObjectPointer, _ args: inout Arguments, count: Int,
                                                    keywords: PyObjectPointer?) throws(PythonError) -> PyRef {
        let keywordCount = keywords.map { PyTuple_Size($0) } ?? 0
        let result = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: count) {
                PyObject_VectorcallMethod(name, $0, count - keywordCount, keywords)
            }
        }
        return try PyRef.checked(result)
    }

    // MARK: attributes and items

    static func attribute(_ object: PyObjectPointer, _ name: String) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_GetAttrString(object, name))
    }

    static func attribute(_ object: PyObjectPointer, _ name: PyObjectPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyObject_GetAttr(object, name))
    }

    static func setAttribute(_ object: PyObjectPointer, _ name: PyObjectPointer, _ value: PyObjectPointer) throws(PythonError) {
        if PyObject_SetAttr(object, name, value) != 0 { throw PythonError() }
    }

    /// `dict[key] = value`, both borrowed.
    @inline(__always)
    static func setItem(_ dict: PyObjectPointer, _ key: PyObjectPointer, _ value: PyObjectPointer) throws(PythonError) {
        if PyDict_SetItem(dict, key, value) != 0 { throw PythonError() }
    }

    /// `dict[key] = value`, the value made for it (and released after, if the dict does not keep it).
    /// Never pass `.pointer` of a temporary `PyRef`: the temporary may be gone before the call.
    @inline(__always)
    static func setItem(_ dict: PyObjectPointer, _ key: PyObjectPointer, _ value: borrowing PyRef) throws(PythonError) {
        if PyDict_SetItem(dict, key, value.pointer) != 0 { throw PythonError() }
    }

    @inline(__always)
    static func setItem(_ dict: PyObjectPointer, _ key: borrowing PyRef, _ value: borrowing PyRef) throws(PythonError) {
        if PyDict_SetItem(dict, key.pointer, value.pointer) != 0 { throw PythonError() }
    }

    /// `dict.setdefault(key, value)`: inserts `value` unless `key` is there already, in one lookup;
    /// the value now under the key, borrowed (`value` itself when it went in).
    @inline(__always)
    static func setDefault(_ dict: PyObjectPointer, _ key: PyObjectPointer, _ value: borrowing PyRef) throws(PythonError) -> PyObjectPointer {
        guard let stored = PyDict_SetDefault(dict, key, value.pointer) else { throw PythonError() }
        return stored
    }

    /// `dict[key]` borrowed from the dict, or nil when missing (no exception is set then). Not
    /// PyDict_GetItem, which saves and restores the exception state on every call.
    @inline(__always)
    static func item(_ dict: PyObjectPointer, _ key: PyObjectPointer) -> PyObjectPointer? {
        if let value = PyDict_GetItemWithError(dict, key) { return value }
        if PyErr_Occurred() != nil { PyErr_Clear() }   // a key that cannot be hashed or compared: missing
        return nil
    }

    // MARK: conversions (errors are Python exceptions, never traps)

    /// A str's text; a str that cannot be UTF-8 (a lone surrogate) raises UnicodeEncodeError.
    static func string(_ object: PyObjectPointer) throws(PythonError) -> String {
        guard appserver_is_str(object) != 0 else { throw PythonError.typeError("expected a str, not \(typeName(object))") }
        var length = 0
        guard let utf8 = PyUnicode_AsUTF8AndSize(object, &length) else { throw PythonError() }
        return String(decoding: UnsafeRawBufferPointer(start: utf8, count: length), as: UTF8.self)
    }

    /// The text of a str for a message: never fails (what cannot be shown becomes its repr or "?").
    static func displayString(_ object: PyObjectPointer) -> String {
        if let text = try? string(object) { return text }
        PyErr_Clear()
        return repr(object)
    }

    static func int(_ object: PyObjectPointer) throws(PythonError) -> Int {
        let value = PyLong_AsLong(object)
        if value == -1 && PyErr_Occurred() != nil { throw PythonError() }
        return value
    }

    static func str(_ text: String) throws(PythonError) -> PyRef {
        var text = text
        return try PyRef.checked(text.withUTF8 {
            PyUnicode_DecodeUTF8(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count, nil)
        })
    }

    static func interned(_ text: String) -> PyRef {
        guard let object = PyUnicode_InternFromString(text) else { fatalError("cannot intern \(text): out of memory") }
        return PyRef(stealing: object)
    }

    static func int(_ value: Int) throws(PythonError) -> PyRef { try PyRef.checked(PyLong_FromLong(value)) }

    /// A bytes object of raw bytes.
    @inline(__always)
    static func bytes(_ data: UnsafeRawBufferPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyBytes_FromStringAndSize(data.baseAddress?.assumingMemoryBound(to: CChar.self), data.count))
    }

    static func bytes(_ data: [UInt8]) throws(PythonError) -> PyRef {
        try PyRef.checked(data.withUnsafeBytes { PyBytes_FromStringAndSize($0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) })
    }

    /// A bytes object of a buffer's readable bytes.
    static func bytes(_ buffer: ByteBuffer) throws(PythonError) -> PyRef {
        try PyRef.checked(buffer.withUnsafeReadableBytes { PyBytes_FromStringAndSize($0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) })
    }

    /// A str of raw bytes read as latin-1 (WSGI's "bytes as str" rule).
    @inline(__always)
    static func latin1(_ data: UnsafeRawBufferPointer) throws(PythonError) -> PyRef {
        try PyRef.checked(PyUnicode_DecodeLatin1(data.baseAddress?.assumingMemoryBound(to: CChar.self), data.count, nil))
    }

    static func latin1(_ text: Substring) throws(PythonError) -> PyRef {
        var text = text
        return try PyRef.checked(text.withUTF8 {
            PyUnicode_DecodeLatin1(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count, nil)
        })
    }

    static func latin1(_ data: [UInt8]) throws(PythonError) -> PyRef {
        try PyRef.checked(data.withUnsafeBytes { PyUnicode_DecodeLatin1($0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count, nil) })
    }

    /// `(a, b)`, taking both references.
    @inline(__always)
    static func tuple(_ a: consuming PyRef, _ b: consuming PyRef) throws(PythonError) -> PyRef {
        try PyRef.checked(appserver_tuple2(a.take(), b.take()))   // releases both if it fails
    }

    /// A tuple of `count` items, each made by `item` and handed to the tuple.
    static func tuple(count: Int, _ item: (Int) throws(PythonError) -> PyRef) throws(PythonError) -> PyRef {
        let tuple = try PyRef.checked(PyTuple_New(count))
        for index in 0..<count {
            PyTuple_SetItem(tuple.pointer, index, try item(index).take())
        }
        return tuple
    }

    // MARK: text for messages

    /// `repr(object)`; "?" when even that fails.
    static func repr(_ object: PyObjectPointer) -> String {
        guard let text = PyRef(newReference: PyObject_Repr(object)), let value = try? string(text.pointer) else {
            PyErr_Clear()
            return "?"
        }
        return value
    }

    /// The name of the object's type.
    static func typeName(_ object: PyObjectPointer) -> String {
        guard let type = PyRef(newReference: PyObject_Type(object)),
              let name = try? attribute(type.pointer, "__name__"), let text = try? string(name.pointer) else {
            PyErr_Clear()
            return "?"
        }
        return text
    }

    /// The glue's `format_exception` (set when the glue is loaded).
    nonisolated(unsafe) static var formatter: PyObjectPointer?

    /// An exception with its traceback, as Python prints it.
    static func format(exception: PyObjectPointer) -> String {
        if let formatter, let text = try? call(formatter, exception), let value = try? string(text.pointer) { return value }
        PyErr_Clear()
        let text = repr(exception)
        return text == "?" ? "(an exception that cannot be shown)" : text
    }
}

/// The references a cache of Python objects holds: one to each object it hands out borrowed, in a Python
/// list, until `removeAll`. Made and used with the GIL.
struct CachedObjects: ~Copyable {
    private let list: PyRef

    init() {
        guard let list = PyRef(newReference: PyList_New(0)) else { fatalError("cannot make a list: out of memory") }
        self.list = list
    }

    /// Keeps `object`; returns it borrowed.
    func keep(_ object: consuming PyRef) throws(PythonError) -> PyObjectPointer {
        let pointer = object.pointer
        if PyList_Append(list.pointer, pointer) != 0 { throw PythonError() }
        return pointer   // the list holds it now; `object` goes
    }

    func removeAll() {
        if PyList_SetSlice(list.pointer, 0, PyList_Size(list.pointer), nil) != 0 { PyErr_Clear() }
    }
}

/// Objects a worker keeps by a Swift key (interned environ keys, methods, address tuples): the cache owns
/// one reference to each and hands out borrowed pointers, valid until `removeAll`. Looking one up costs
/// no reference counting. Bounded: past `limit` entries it is emptied and starts again. Made and used
/// with the GIL.
struct PyObjectCache<Key: Hashable>: ~Copyable {
    private var pointers: [Key: PyObjectPointer] = [:]
    private let owner = CachedObjects()
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    subscript(key: Key) -> PyObjectPointer? {
        @inline(__always) get { pointers[key] }
    }

    /// Keeps `object` under `key`; returns it borrowed.
    mutating func insert(_ object: consuming PyRef, for key: Key) throws(PythonError) -> PyObjectPointer {
        if pointers.count >= limit { removeAll() }
        let pointer = try owner.keep(object)
        pointers[key] = pointer
        return pointer
    }

    mutating func removeAll() {
        pointers.removeAll(keepingCapacity: true)
        owner.removeAll()
    }
}
