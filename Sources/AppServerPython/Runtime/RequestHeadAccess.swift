import AppServerHTTP

// The request head's byte accessors rethrow untyped errors; these let a body raise a Python exception
// (PythonError) through them without making those hot, cross-module accessors generic.

extension RequestHead {
    func withTarget<T>(raising body: (UnsafeRawBufferPointer) throws(PythonError) -> T) throws(PythonError) -> T {
        var failed = false
        let result: T? = withTarget({ target in
            do { return try body(target) } catch { failed = true; return nil }
        })
        guard !failed, let result else { throw PythonError() }
        return result
    }
}

extension RequestHeaders {
    func forEach(raising body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(PythonError) -> Void) throws(PythonError) {
        var failed = false
        forEach({ name, value in
            guard !failed else { return }
            do { try body(name, value) } catch { failed = true }
        })
        if failed { throw PythonError() }
    }
}
