import CPython
import CPythonShim

/// The future of a `receive()` or `send()` the app awaits until the server has what it waits for (body
/// bytes, a message, the socket drained). Owned here until resolved; dropping it leaves the app's
/// await to the loop's cancellation. On the loop thread, with the GIL. The messages are made by the
/// caller before a method here is called (making one may resolve this very future).
struct PendingFuture: ~Copyable {
    private var future: PyRef?

    init() {}

    var isWaiting: Bool { future != nil }

    /// A new future of the loop, kept here and returned to the app to await.
    mutating func arm(on host: ASGIHost) throws(PythonError) -> PyRef {
        let made = try host.newFuture()
        future = made.copy()
        return made
    }

    /// `receive()` when no other waits: a future done with `message` if there is one, else a pending one.
    mutating func receive(on host: ASGIHost, message: consuming PyRef?) throws(PythonError) -> PyRef {
        if let message = message.take() { return try host.doneFuture(with: message) }
        return try arm(on: host)
    }

    /// The awaited future gets `message`, if there is one now.
    mutating func deliver(on host: ASGIHost, message: consuming PyRef?) {
        guard let message = message.take() else { return }
        resolve(on: host, with: message.pointer)
    }

    mutating func resolve(on host: ASGIHost, with value: PyObjectPointer) {
        guard let future = future.take() else { return }
        host.resolve(future.pointer, with: value)
    }

    /// The awaited future raises the current exception.
    mutating func fail(on host: ASGIHost) {
        guard let future = future.take() else { return }
        host.fail(future.pointer)
    }

    /// Lets the future go unresolved (the coroutine ended).
    mutating func drop() {
        future = nil
    }

    static func secondReceive() -> PythonError {
        PythonError.runtimeError("receive() called again before the previous call returned")
    }
}
