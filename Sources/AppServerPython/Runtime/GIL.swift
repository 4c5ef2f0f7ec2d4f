import AppServerHTTP
import CPython

/// The GIL, taken and given back around a body: never by hand at the call sites.
enum GIL {
    /// Runs `body` holding the GIL, from any thread (a thread Python has not seen gets a thread state).
    @inline(__always)
    static func with<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let state = PyGILState_Ensure()
        defer { PyGILState_Release(state) }
        return try body()
    }

    /// Runs `body` without the GIL (waiting, or I/O), from a thread that holds it; takes it back after.
    @inline(__always)
    static func released<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let state = PyEval_SaveThread()
        defer { PyEval_RestoreThread(state) }
        return try body()
    }

    /// As `released`, with how long taking the GIL back took (nanoseconds): as long as other threads
    /// kept it busy.
    static func released<T>(timingReturn body: () -> T) -> (T, waited: Int64) {
        let state = PyEval_SaveThread()
        let result = body()
        let asked = Monotonic.now()
        PyEval_RestoreThread(state)
        return (result, Monotonic.now().nanoseconds - asked.nanoseconds)
    }
}

/// A thread that runs Python now and then and keeps its Python thread state in between (the I/O
/// thread that runs sync requests inline, the arbiter): `enter` takes the GIL, `leave` gives it back.
struct PythonThreadState: ~Copyable {
    private var saved: UnsafeMutablePointer<PyThreadState>?
    private var entered = false

    init() {}

    mutating func enter() {
        guard !entered else { return }
        if let saved {
            PyEval_RestoreThread(saved)
            self.saved = nil
        } else {
            _ = PyGILState_Ensure()   // the first time: this thread's state, kept for good
        }
        entered = true
    }

    mutating func leave() {
        guard entered else { return }
        saved = PyEval_SaveThread()
        entered = false
    }

    /// The thread holds the GIL already (it started the interpreter, or came out of fork with it).
    mutating func adoptHeld() {
        saved = nil
        entered = true
    }
}
