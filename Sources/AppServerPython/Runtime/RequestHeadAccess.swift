import AppServerHTTP

// The request head's target accessor rethrows untyped errors; this lets a body raise a Python exception
// (PythonError) through it. (RequestHeaders.forEach throws its body's error type itself.)

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
