import CPython
import CPythonShim
#if canImport(Glibc)
import Glibc
#endif

/// Python functions written in Swift. Every one reaches its Swift owner the same way: the function
/// object is bound to a capsule that retains the owner (an app thread, a request, a task, the host), so
/// the owner lives as long as Python can call it, and no thread-local or global is consulted.
///
/// A function is declared once (`NativeFunction(name, doc) { owner, arguments in ... }`, a static of its
/// owner's type) and bound per owner with `bind(to:)`. Its body returns a new reference or throws
/// `PythonError` (the exception is set), which becomes NULL for Python.
struct NativeFunction<Owner: AnyObject>: @unchecked Sendable {
    typealias FastCall = @convention(c) (PyObjectPointer?, UnsafePointer<PyObjectPointer?>?, Py_ssize_t) -> PyObjectPointer?

    private let definition: UnsafeMutablePointer<PyMethodDef>

    /// `body` must be a closure literal that captures nothing (it becomes a C function); it gets the
    /// bound capsule and the arguments, and hands them to `NativeFunctions.run`.
    init(_ name: String, _ doc: String, _ body: FastCall) {
        definition = UnsafeMutablePointer<PyMethodDef>.allocate(capacity: 1)   // lives as long as the process
        definition.initialize(to: PyMethodDef(ml_name: UnsafePointer(strdup(name)), ml_meth: unsafeBitCast(body, to: PyCFunction.self),
                                              ml_flags: METH_FASTCALL, ml_doc: UnsafePointer(strdup(doc))))
    }

    /// A function object bound to `owner` (retained by it until Python lets the function go).
    func bind(to owner: Owner) -> PyRef {
        bind(capsule: OwnerCapsule(retaining: owner))
    }

    /// Bound to a capsule made once for several functions of one owner.
    func bind(capsule: borrowing OwnerCapsule<Owner>) -> PyRef {
        guard let function = PyRef(newReference: PyCFunction_NewEx(definition, capsule.object.pointer, nil)) else {
            fatalError("cannot make the native function \(String(cString: definition.pointee.ml_name)): out of memory")
        }
        return function
    }
}

/// The arguments of a native function call (borrowed from the caller).
struct NativeArguments {
    let base: UnsafePointer<PyObjectPointer?>?
    let count: Int

    /// The arguments when there are `range` of them, or a TypeError showing `usage`.
    @inline(__always)
    func expect(_ range: ClosedRange<Int>, _ usage: @autoclosure () -> String) throws(PythonError) {
        if count < range.lowerBound || count > range.upperBound || (count > 0 && base == nil) {
            throw PythonError.typeError("\(usage()): wrong number of arguments (\(count))")
        }
    }

    subscript(index: Int) -> PyObjectPointer {
        // The caller's array holds no NULLs (vectorcall's contract).
        base![index]!
    }
}

/// A capsule that keeps an owner alive, for binding native functions to it. Its type says whose it is:
/// functions of `NativeFunction<Owner>` bind only to an `OwnerCapsule<Owner>`, so the owner is found
/// again without a dynamic cast.
struct OwnerCapsule<Owner: AnyObject>: ~Copyable {
    let object: PyRef

    init(retaining owner: Owner) {
        let capsule = PyCapsule_New(Unmanaged.passRetained(owner).toOpaque(), nil) { capsule in
            guard let pointer = PyCapsule_GetPointer(capsule, nil) else { return }
            Unmanaged<AnyObject>.fromOpaque(pointer).release()
        }
        guard let capsule = PyRef(newReference: capsule) else { fatalError("cannot make a capsule: out of memory") }
        object = capsule
    }
}

enum NativeFunctions {
    /// Runs a native function's body for the owner its capsule holds.
    @inline(__always)
    static func run<Owner: AnyObject>(_ capsule: PyObjectPointer?, _ args: UnsafePointer<PyObjectPointer?>?, _ count: Py_ssize_t,
                                      as type: Owner.Type,
                                      _ body: (Owner, NativeArguments) throws(PythonError) -> PyRef) -> PyObjectPointer? {
        // The object the bound function's capsule holds (an `OwnerCapsule<Owner>`, by construction).
        guard let capsule, let pointer = PyCapsule_GetPointer(capsule, nil) else {
            PyErr_SetString(appserver_exc_runtime_error(), "a native function of the server lost its owner")
            return nil
        }
        // Borrowed, not retained: the capsule keeps it alive, and the function being called (which
        // holds the capsule) is held by its caller until the call returns. A retain and a release
        // are two locked instructions, ~10 ns; `send` alone is called twice a request.
        return Unmanaged<Owner>.fromOpaque(pointer)._withUnsafeGuaranteedRef { owner in
            do {
                return try body(owner, NativeArguments(base: args, count: count)).take()
            } catch {
                return nil
            }
        }
    }
}

/// Where native functions that report to the server's logs write: `wsgi.errors`, the ASGI glue's
/// messages, `server.log` of hooks. One object a destination, bound to the functions that use it.
final class LogSink: @unchecked Sendable {
    /// Text by level: 0 debug, 1 info, 2 warning, 3 error, 4 critical.
    var write: @Sendable (Int, String) -> Void

    init(_ write: @escaping @Sendable (Int, String) -> Void) {
        self.write = write
    }

    /// `log(level, text)`.
    static let leveled = NativeFunction<LogSink>("log", "log(level, text): to the server's error log (0 debug ... 4 critical)") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: LogSink.self) { sink, arguments throws(PythonError) in
            try arguments.expect(2...2, "log(level, text)")
            let level = try Python.int(arguments[0])
            sink.write(level, try Python.string(arguments[1]))
            return .noneObject
        }
    }

    /// `write(text)`, at the error level (wsgi.errors).
    static let text = NativeFunction<LogSink>("write", "write(text): to the server's error log") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: LogSink.self) { sink, arguments throws(PythonError) in
            try arguments.expect(1...1, "wsgi.errors.write() takes one str")
            guard appserver_is_str(arguments[0]) != 0 else {
                throw PythonError.typeError("wsgi.errors.write() takes one str, not \(Python.typeName(arguments[0]))")
            }
            sink.write(3, try Python.string(arguments[0]))
            return .noneObject
        }
    }
}
