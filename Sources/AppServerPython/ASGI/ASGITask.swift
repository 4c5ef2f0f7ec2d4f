import CPython
import CPythonShim

/// Runs the coroutine of one request (or websocket) on the event loop the way asyncio.Task does
/// (Task.__step and __wakeup of CPython 3.11), without making a Task: the first step runs as soon as
/// the request arrives, and a coroutine that never waits (most small endpoints) costs no task, no
/// call_soon and no trip around the loop. While it runs, `asyncio.current_task()` is its
/// `RequestTask` (Glue/_appserver_asgi.py), on which anyio, asyncio.timeout and TaskGroup can cancel it.
///
/// Everything here happens on the loop thread with the GIL. The bound native functions that wake it
/// (a future's done callback, a `call_soon` after a bare `yield`) retain it until it finishes.
final class ASGITask: @unchecked Sendable {
    private let runtime: ASGITaskRuntime
    private let finished: (PyObjectPointer?) -> Void
    /// The coroutine, its identity and its context, until it finishes.
    private var coroutine: PyRef?
    private var identity: PyRef?
    private var context: PyRef?
    /// `_fut_waiter` of the identity is set (the coroutine waits on a future).
    private var waiting = false
    /// The bound native functions, made the first time the coroutine has to wait.
    private var wakeUpFunction: PyRef?
    private var stepFunction: PyRef?

    /// Takes `coroutine`; `finished` gets None or the exception the coroutine ended with.
    init(runtime: ASGITaskRuntime, coroutine: consuming PyRef, finished: @escaping (PyObjectPointer?) -> Void) throws(PythonError) {
        self.runtime = runtime
        self.finished = finished
        // As asyncio.Task: each task runs in a copy of the context it was made in.
        let context = try PyRef.checked(PyContext_CopyCurrent())
        // A RequestTask made by object.__new__ (it has no __init__: see _appserver_asgi.py), its slots set here.
        let identity = try PyRef.checked(appserver_bare_instance(runtime.identityType.pointer))
        let slots = runtime.slots
        appserver_slot_set(identity.pointer, slots.coro, coroutine.pointer)
        appserver_slot_set(identity.pointer, slots.loop, runtime.loop.pointer)
        appserver_slot_set(identity.pointer, slots.context, context.pointer)
        appserver_slot_set(identity.pointer, slots.state, runtime.names.pendingState.pointer)
        appserver_slot_set(identity.pointer, slots.mustCancel, appserver_false())
        appserver_slot_set(identity.pointer, slots.callbacks, appserver_none())
        self.identity = .some(consume identity)
        self.context = .some(consume context)
        self.coroutine = .some(consume coroutine)
    }

    /// Cancels the coroutine as asyncio's Task.cancel does (the identity's `cancel`): what it awaits is
    /// cancelled, or its next step throws CancelledError.
    func cancel(message: String) {
        guard let identity = identity.pointer else { return }
        do {
            let text = try Python.str(message)
            _ = try Python.callMethod(identity, runtime.names.cancel.pointer, text.pointer)
        } catch {
            PyErr_Clear()
        }
    }

    /// The first step, at once.
    func start() {
        step(throwing: nil, enteringContext: true)
    }

    /// One step of the coroutine: sends None into it, or throws `incoming` into it. The later steps
    /// run from callbacks scheduled with `context=`, so the loop has entered it already.
    func step(throwing incoming: consuming PyRef?, enteringContext: Bool = false) {
        guard let coroutine = coroutine.pointer, let identity = identity.pointer, let context = context.pointer else { return }
        var thrown = incoming
        if waiting {
            waiting = false
            setAttribute(identity, runtime.names.futWaiter, appserver_none())
        }
        // Nobody can have cancelled the task before its first step: nothing else has it yet.
        if !enteringContext && runtime.mustCancel(identity) {
            if thrown.pointer.map({ PyErr_GivenExceptionMatches($0, runtime.cancelledError.pointer) == 0 }) ?? true {
                let message = try? Python.attribute(identity, runtime.names.cancelMessage.pointer)
                guard let cancelled = try? runtime.makeCancelledError(message: message.pointer) else {
                    finish(with: PythonError.fetch(), cancelled: false)
                    return
                }
                thrown = .some(consume cancelled)
            }
            appserver_slot_set(identity, runtime.slots.mustCancel, appserver_false())
        }

        if enteringContext && PyContext_Enter(context) != 0 {
            finish(with: PythonError.fetch(), cancelled: false)
            return
        }
        guard runtime.enter(identity) else {
            let error = PythonError.fetch()
            if enteringContext { PyContext_Exit(context) }
            finish(with: error, cancelled: false)
            return
        }
        var yielded: PyObjectPointer?
        let status: PySendResult
        if let thrown = thrown.take() {
            yielded = try? Python.callMethod(coroutine, runtime.names.throw.pointer, thrown.pointer).take()
            if yielded != nil {
                status = PYGEN_NEXT
            } else if PyErr_ExceptionMatches(appserver_exc_stop_iteration()) != 0 {
                PyErr_Clear()
                status = PYGEN_RETURN
            } else {
                status = PYGEN_ERROR
            }
        } else {
            status = PyIter_Send(coroutine, appserver_none(), &yielded)
        }
        // What the coroutine yielded or returned is owned here.
        let result = PyRef(newReference: yielded)
        // The exception leaves Python's error indicator before any other call into Python.
        let raised = status == PYGEN_ERROR ? PythonError.fetch() : nil
        runtime.leave(identity)
        if enteringContext { PyContext_Exit(context) }

        switch status {
        case PYGEN_RETURN:
            // Cancelled just before it returned: asyncio marks the task cancelled all the same.
            finish(with: nil, cancelled: runtime.mustCancel(identity))
        case PYGEN_NEXT:
            if let result { suspend(on: result.pointer) }
        default:
            let cancelled = raised.pointer.map { PyErr_GivenExceptionMatches($0, runtime.cancelledError.pointer) != 0 } ?? false
            finish(with: raised, cancelled: cancelled)
        }
    }

    private func setAttribute(_ object: PyObjectPointer, _ name: borrowing PyRef, _ value: PyObjectPointer) {
        if (try? Python.setAttribute(object, name.pointer, value)) == nil { PyErr_Clear() }
    }

    /// The coroutine yielded `yielded`: a future to wait for, None (`asyncio.sleep(0)`: step again on
    /// the loop's next turn), or anything else, which is an error thrown back into it.
    private func suspend(on yielded: PyObjectPointer) {
        guard let identity = identity.pointer, let context = context.pointer else { return }
        // None first: anyio's checkpoints yield it on every `await sleep(0)`, and asking None for the
        // attribute below would make (and drop) an AttributeError with a formatted message each time.
        if yielded == appserver_none() {
            scheduleStep(throwing: nil)
            return
        }
        guard let blocking = try? Python.attribute(yielded, runtime.names.futureBlocking.pointer) else {
            PyErr_Clear()
            scheduleStep(throwing: runtime.runtimeError("Task got bad yield: \(Python.repr(yielded))"))
            return
        }
        guard PyObject_IsTrue(blocking.pointer) == 1 else {
            scheduleStep(throwing: runtime.runtimeError("yield was used instead of yield from in task \(Python.repr(identity)) with \(Python.repr(yielded))"))
            return
        }
        if !runtime.isOnLoop(yielded) {
            scheduleStep(throwing: runtime.runtimeError("Task \(Python.repr(identity)) got Future \(Python.repr(yielded)) attached to a different loop"))
            return
        }
        if yielded == identity {
            scheduleStep(throwing: runtime.runtimeError("Task cannot await on itself: \(Python.repr(identity))"))
            return
        }
        setAttribute(yielded, runtime.names.futureBlocking, appserver_false())
        let wakeUp = boundFunctions().wakeUp
        do {
            _ = try Python.callMethod(yielded, runtime.names.addDoneCallback.pointer, wakeUp, context, keywords: runtime.names.contextKeyword.pointer)
        } catch {
            scheduleStep(throwing: PythonError.fetch())
            return
        }
        setAttribute(identity, runtime.names.futWaiter, yielded)
        waiting = true
        // Cancelled during the step that has just ended: cancel what it now waits for.
        if runtime.mustCancel(identity) {
            let message = (try? Python.attribute(identity, runtime.names.cancelMessage.pointer)) ?? PyRef.noneObject
            if let cancelled = try? Python.callMethod(yielded, runtime.names.cancel.pointer, message.pointer, keywords: runtime.names.messageKeyword.pointer) {
                if cancelled.pointer == appserver_true() { appserver_slot_set(identity, runtime.slots.mustCancel, appserver_false()) }
            } else {
                PyErr_Clear()
            }
        }
    }

    /// The future the coroutine waited for is done: step with its result or exception.
    func wakeUp(_ future: PyObjectPointer) {
        if (try? Python.callMethod(future, runtime.names.result.pointer)) != nil {
            step(throwing: nil)
        } else {
            step(throwing: PythonError.fetch())
        }
    }

    /// `loop.call_soon(step[, exception], context=...)`.
    private func scheduleStep(throwing exception: consuming PyRef?) {
        guard let context = context.pointer else { return }
        let step = boundFunctions().step
        let scheduled: Bool
        if let exception = exception.take() {
            scheduled = (try? Python.call(runtime.callSoon.pointer, step, exception.pointer, context, keywords: runtime.names.contextKeyword.pointer)) != nil
        } else {
            scheduled = (try? Python.call(runtime.callSoon.pointer, step, context, keywords: runtime.names.contextKeyword.pointer)) != nil
        }
        // The loop refused (it is closing): the request ends with that error.
        if !scheduled { finish(with: PythonError.fetch(), cancelled: false) }
    }

    private func boundFunctions() -> (wakeUp: PyObjectPointer, step: PyObjectPointer) {
        if wakeUpFunction == nil || stepFunction == nil {
            let capsule = OwnerCapsule(retaining: self)
            wakeUpFunction = Self.wakeUpNative.bind(capsule: capsule)
            stepFunction = Self.stepNative.bind(capsule: capsule)
        }
        return (wakeUpFunction.pointer!, stepFunction.pointer!)
    }

    /// The coroutine ended: the identity says so, its done callbacks are scheduled, and the request
    /// learns how it ended. Drops every reference, which also ends the cycle through the bound
    /// functions' capsule.
    private func finish(with exception: consuming PyRef?, cancelled: Bool) {
        guard let identity = identity.take() else { return }
        appserver_slot_set(identity.pointer, runtime.slots.state, cancelled ? runtime.names.cancelledState.pointer : runtime.names.finishedState.pointer)
        if waiting { setAttribute(identity.pointer, runtime.names.futWaiter, appserver_none()) }
        if let callbacks = appserver_slot_get(identity.pointer, runtime.slots.callbacks), callbacks != appserver_none() {
            if (try? Python.callMethod(identity.pointer, runtime.names.scheduleCallbacks.pointer)) == nil { PyErr_Clear() }
        }
        coroutine = nil
        context = nil
        wakeUpFunction = nil
        stepFunction = nil
        finished(exception.pointer)
    }

    /// The native functions bound to a waiting task.
    static let wakeUpNative = NativeFunction<ASGITask>("wakeup", "wakeup(future): the future a request's task waits for is done") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGITask.self) { task, arguments throws(PythonError) in
            try arguments.expect(1...1, "wakeup() takes the future")
            task.wakeUp(arguments[0])
            return .noneObject
        }
    }
    static let stepNative = NativeFunction<ASGITask>("step", "step([exception]): the next step of a request's task") { capsule, args, count in
        NativeFunctions.run(capsule, args, count, as: ASGITask.self) { task, arguments throws(PythonError) in
            try arguments.expect(0...1, "step([exception])")
            task.step(throwing: arguments.count == 1 ? PyRef(retaining: arguments[0]) : nil)
            return .noneObject
        }
    }
}

/// What the tasks of one loop share: asyncio's hooks and the names they use, found once.
final class ASGITaskRuntime: @unchecked Sendable {
    let loop: PyRef
    let callSoon: PyRef
    let identityType: PyRef
    let cancelledError: PyRef
    private let enterTask: PyRef
    private let leaveTask: PyRef
    let names: Names
    let slots: Slots

    /// Where a RequestTask keeps what is set or read on every request: its slots' offsets.
    struct Slots {
        let coro, loop, context, state, mustCancel, callbacks: Int

        init(of type: PyObjectPointer, names: Names) throws(PythonError) {
            func offset(_ name: borrowing PyRef) throws(PythonError) -> Int {
                let offset = appserver_slot_offset(type, name.pointer)
                guard offset > 0 else { throw .runtimeError("RequestTask has no slot \(Python.repr(name.pointer)) (_appserver_asgi.py)") }
                return offset
            }
            coro = try offset(names.coro)
            loop = try offset(names.loop)
            context = try offset(names.context)
            state = try offset(names.state)
            mustCancel = try offset(names.mustCancel)
            callbacks = try offset(names.callbacks)
        }
    }

    final class Names: @unchecked Sendable {
        let futureBlocking = Python.interned("_asyncio_future_blocking")
        let addDoneCallback = Python.interned("add_done_callback")
        let getLoop = Python.interned("get_loop")
        let result = Python.interned("result")
        let setResult = Python.interned("set_result")
        let setException = Python.interned("set_exception")
        let `throw` = Python.interned("throw")
        let cancel = Python.interned("cancel")
        let mustCancel = Python.interned("_must_cancel")
        let cancelMessage = Python.interned("_cancel_message")
        let futWaiter = Python.interned("_fut_waiter")
        let state = Python.interned("_state")
        let callbacks = Python.interned("_callbacks")
        let pendingState = Python.interned("PENDING")
        let scheduleCallbacks = Python.interned("_schedule_callbacks")
        let finishedState = Python.interned("FINISHED")
        let cancelledState = Python.interned("CANCELLED")
        let coro = Python.interned("_coro")
        let loop = Python.interned("_loop")
        let context = Python.interned("_context")
        let contextKeyword: PyRef
        let messageKeyword: PyRef

        init() throws(PythonError) {
            contextKeyword = try Python.tuple(count: 1) { _ throws(PythonError) in Python.interned("context") }
            messageKeyword = try Python.tuple(count: 1) { _ throws(PythonError) in Python.interned("msg") }
        }
    }

    /// With the GIL, after `asyncio` was imported.
    init(loop: PyObjectPointer, identityType: PyObjectPointer) throws(PythonError) {
        let tasks = try PyRef.checked(PyImport_ImportModule("asyncio.tasks"))
        let exceptions = try PyRef.checked(PyImport_ImportModule("asyncio.exceptions"))
        enterTask = try Python.attribute(tasks.pointer, "_enter_task")
        leaveTask = try Python.attribute(tasks.pointer, "_leave_task")
        cancelledError = try Python.attribute(exceptions.pointer, "CancelledError")
        callSoon = try Python.attribute(loop, "call_soon")
        names = try Names()
        slots = try Slots(of: identityType, names: names)
        self.loop = PyRef(retaining: loop)
        self.identityType = PyRef(retaining: identityType)
    }

    /// The identity's `_must_cancel` (cancel() set it); an unset slot, or a value whose truth
    /// raises, counts as false (the error is cleared).
    func mustCancel(_ identity: PyObjectPointer) -> Bool {
        guard let value = appserver_slot_get(identity, slots.mustCancel) else { return false }
        if value == appserver_true() { return true }
        if value == appserver_false() { return false }
        let truth = PyObject_IsTrue(value)
        if truth < 0 { PyErr_Clear() }
        return truth == 1
    }

    /// `asyncio._enter_task(loop, identity)`: false with the exception set.
    func enter(_ identity: PyObjectPointer) -> Bool {
        (try? Python.call(enterTask.pointer, loop.pointer, identity)) != nil
    }

    func leave(_ identity: PyObjectPointer) {
        if (try? Python.call(leaveTask.pointer, loop.pointer, identity)) == nil { PyErr_Clear() }
    }

    /// The future belongs to this loop (`asyncio.futures._get_loop(future) is loop`).
    func isOnLoop(_ future: PyObjectPointer) -> Bool {
        guard let futureLoop = try? Python.callMethod(future, names.getLoop.pointer) else {
            PyErr_Clear()
            return true   // no get_loop(): asyncio then takes the future's `_loop`; do not refuse it
        }
        return futureLoop.pointer == loop.pointer
    }

    /// `CancelledError(message)` (None or nil for none).
    func makeCancelledError(message: PyObjectPointer?) throws(PythonError) -> PyRef {
        if let message, message != appserver_none() { return try Python.call(cancelledError.pointer, message) }
        return try Python.call(cancelledError.pointer)
    }

    /// `RuntimeError(text)`, to throw into a coroutine (nil with the exception set if even that failed).
    func runtimeError(_ text: String) -> PyRef? {
        guard let message = try? Python.str(text) else { return nil }
        return try? Python.call(appserver_exc_runtime_error(), message.pointer)
    }
}
