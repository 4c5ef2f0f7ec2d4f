import CPython
import CPythonShim

/// Runs the coroutine of one request (or websocket) on the event loop the way asyncio.Task does
/// (Task.__step and __wakeup of CPython 3.11), without making a Task: the first step runs as soon as
/// the request arrives, and a coroutine that never waits (most small endpoints) costs no task, no
/// call_soon and no trip around the loop. While it runs, `asyncio.current_task()` is its
/// `RequestTask` (ASGIBootstrap.swift), on which anyio, asyncio.timeout and TaskGroup can cancel it.
///
/// Everything here happens on the loop thread with the GIL. The bound native functions that wake it
/// (a future's done callback, a `call_soon` after a bare `yield`) retain it until it finishes.
final class ASGITask: @unchecked Sendable {
    private let runtime: ASGITaskRuntime
    private let finished: (PyObjectPointer?) -> Void
    private var coroutine: PyObjectPointer?
    private var identity: PyObjectPointer?
    private var context: PyObjectPointer?
    /// `_fut_waiter` of the identity is set (the coroutine waits on a future).
    private var waiting = false
    /// The bound native functions, made the first time the coroutine has to wait.
    private var wakeUpFunction: PyObjectPointer?
    private var stepFunction: PyObjectPointer?

    /// Takes `coroutine` (stolen); `finished` gets None or the exception the coroutine ended with.
    init?(runtime: ASGITaskRuntime, coroutine: PyObjectPointer, finished: @escaping (PyObjectPointer?) -> Void) {
        self.runtime = runtime
        self.finished = finished
        self.coroutine = coroutine
        // As asyncio.Task: each task runs in a copy of the context it was made in.
        guard let context = PyContext_CopyCurrent() else { Py_DecRef(coroutine); return nil }
        self.context = context
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) = (coroutine, runtime.loop, context)
        identity = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 3) { PyObject_Vectorcall(runtime.identityType, $0, 3, nil) }
        }
        if identity == nil {
            Py_DecRef(coroutine)
            Py_DecRef(context)
            return nil
        }
    }

    /// Cancels the coroutine as asyncio's Task.cancel does (the identity's `cancel`): what it awaits is
    /// cancelled, or its next step throws CancelledError.
    func cancel(message: String) {
        guard let identity, let text = PyUnicode_FromString(message) else { return }
        if let result = PyObject_CallMethodOneArg(identity, runtime.names.cancel, text) { Py_DecRef(result) } else { PyErr_Clear() }
        Py_DecRef(text)
    }

    /// The first step, at once.
    func start() {
        step(throwing: nil, enteringContext: true)
    }

    /// One step of the coroutine: sends None into it, or throws `incoming` (stolen) into it. The
    /// later steps run from callbacks scheduled with `context=`, so the loop has entered it already.
    func step(throwing incoming: PyObjectPointer?, enteringContext: Bool = false) {
        guard let coroutine, let identity, let context else {
            if let incoming { Py_DecRef(incoming) }
            return
        }
        var thrown = incoming
        if waiting {
            waiting = false
            PyObject_SetAttr(identity, runtime.names.futWaiter, appserver_none())
        }
        // Nobody can have cancelled the task before its first step: nothing else has it yet.
        if !enteringContext && runtime.flag(identity, runtime.names.mustCancel) {
            if thrown == nil || PyErr_GivenExceptionMatches(thrown, runtime.cancelledError) == 0 {
                if let thrown { Py_DecRef(thrown) }
                thrown = runtime.makeCancelledError(message: PyObject_GetAttr(identity, runtime.names.cancelMessage))
                if thrown == nil {
                    finish(with: PythonRuntime.fetchException(), cancelled: false)
                    return
                }
            }
            PyObject_SetAttr(identity, runtime.names.mustCancel, appserver_false())
        }

        if enteringContext && PyContext_Enter(context) != 0 {
            if let thrown { Py_DecRef(thrown) }
            finish(with: PythonRuntime.fetchException(), cancelled: false)
            return
        }
        guard runtime.enter(identity) else {
            let error = PythonRuntime.fetchException()
            if enteringContext { PyContext_Exit(context) }
            if let thrown { Py_DecRef(thrown) }
            finish(with: error, cancelled: false)
            return
        }
        var yielded: PyObjectPointer?
        let status: PySendResult
        if let thrown {
            yielded = PyObject_CallMethodOneArg(coroutine, runtime.names.throw, thrown)
            Py_DecRef(thrown)
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
        // The exception leaves Python's error indicator before any other call into Python.
        let raised = status == PYGEN_ERROR ? PythonRuntime.fetchException() : nil
        runtime.leave(identity)
        if enteringContext { PyContext_Exit(context) }

        switch status {
        case PYGEN_RETURN:
            if let yielded { Py_DecRef(yielded) }
            // Cancelled just before it returned: asyncio marks the task cancelled all the same.
            finish(with: nil, cancelled: runtime.flag(identity, runtime.names.mustCancel))
        case PYGEN_NEXT:
            if let yielded { suspend(on: yielded) }
        default:
            let cancelled = raised.map { PyErr_GivenExceptionMatches($0, runtime.cancelledError) != 0 } ?? false
            finish(with: raised, cancelled: cancelled)
        }
    }

    /// The coroutine yielded `yielded` (stolen): a future to wait for, None (`asyncio.sleep(0)`: step
    /// again on the loop's next turn), or anything else, which is an error thrown back into it.
    private func suspend(on yielded: PyObjectPointer) {
        defer { Py_DecRef(yielded) }
        guard let identity, let context else { return }
        guard let blocking = PyObject_GetAttr(yielded, runtime.names.futureBlocking) else {
            PyErr_Clear()
            if yielded == appserver_none() {
                scheduleStep(throwing: nil)
            } else {
                scheduleStep(throwing: runtime.runtimeError("Task got bad yield: \(PythonRuntime.repr(yielded))"))
            }
            return
        }
        let isBlocking = PyObject_IsTrue(blocking) == 1
        Py_DecRef(blocking)
        guard isBlocking else {
            scheduleStep(throwing: runtime.runtimeError("yield was used instead of yield from in task \(PythonRuntime.repr(identity)) with \(PythonRuntime.repr(yielded))"))
            return
        }
        if !runtime.isOnLoop(yielded) {
            scheduleStep(throwing: runtime.runtimeError("Task \(PythonRuntime.repr(identity)) got Future \(PythonRuntime.repr(yielded)) attached to a different loop"))
            return
        }
        if yielded == identity {
            scheduleStep(throwing: runtime.runtimeError("Task cannot await on itself: \(PythonRuntime.repr(identity))"))
            return
        }
        PyObject_SetAttr(yielded, runtime.names.futureBlocking, appserver_false())
        let wakeUp = boundFunctions().wakeUp
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) = (yielded, wakeUp, context)
        let added = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 3) {
                PyObject_VectorcallMethod(runtime.names.addDoneCallback, $0, 2, runtime.names.contextKeyword)
            }
        }
        guard let added else {
            scheduleStep(throwing: PythonRuntime.fetchException())
            return
        }
        Py_DecRef(added)
        PyObject_SetAttr(identity, runtime.names.futWaiter, yielded)
        waiting = true
        // Cancelled during the step that has just ended: cancel what it now waits for.
        if runtime.flag(identity, runtime.names.mustCancel) {
            let message = PyObject_GetAttr(identity, runtime.names.cancelMessage) ?? retained(appserver_none())
            var cancelArgs: (PyObjectPointer?, PyObjectPointer?) = (yielded, message)
            let cancelled = withUnsafePointer(to: &cancelArgs) {
                $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 2) {
                    PyObject_VectorcallMethod(runtime.names.cancel, $0, 1, runtime.names.messageKeyword)
                }
            }
            Py_DecRef(message)
            if let cancelled {
                if cancelled == appserver_true() { PyObject_SetAttr(identity, runtime.names.mustCancel, appserver_false()) }
                Py_DecRef(cancelled)
            } else {
                PyErr_Clear()
            }
        }
    }

    /// The future the coroutine waited for is done: step with its result or exception.
    func wakeUp(_ future: PyObjectPointer) {
        if let result = PyObject_CallMethodNoArgs(future, runtime.names.result) {
            Py_DecRef(result)
            step(throwing: nil)
        } else {
            step(throwing: PythonRuntime.fetchException())
        }
    }

    /// `loop.call_soon(step[, exception], context=...)`; `exception` stolen.
    private func scheduleStep(throwing exception: PyObjectPointer?) {
        guard let context else { return }
        let step = boundFunctions().step
        var args: (PyObjectPointer?, PyObjectPointer?, PyObjectPointer?) =
            exception.map { (step, $0, context) } ?? (step, context, nil)
        let count = exception == nil ? 1 : 2
        let scheduled = withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 3) {
                PyObject_Vectorcall(runtime.callSoon, $0, count, runtime.names.contextKeyword)
            }
        }
        if let exception { Py_DecRef(exception) }
        if let scheduled { Py_DecRef(scheduled) } else {
            // The loop refused (it is closing): the request ends with that error.
            finish(with: PythonRuntime.fetchException(), cancelled: false)
        }
    }

    private func boundFunctions() -> (wakeUp: PyObjectPointer, step: PyObjectPointer) {
        if wakeUpFunction == nil || stepFunction == nil {
            let capsule = ASGICallables.capsule(retaining: self)
            defer { Py_DecRef(capsule) }
            wakeUpFunction = PyCFunction_NewEx(ASGITaskFunctions.wakeUp, capsule, nil)
            stepFunction = PyCFunction_NewEx(ASGITaskFunctions.step, capsule, nil)
        }
        return (wakeUpFunction!, stepFunction!)
    }

    /// The coroutine ended: the identity says so, its done callbacks are scheduled, and the request
    /// learns how it ended. Drops every reference, which also ends the cycle through the bound
    /// functions' capsule.
    private func finish(with exception: PyObjectPointer?, cancelled: Bool) {
        guard let identity else {
            if let exception { Py_DecRef(exception) }
            return
        }
        PyObject_SetAttr(identity, runtime.names.state, cancelled ? runtime.names.cancelledState : runtime.names.finishedState)
        if waiting { PyObject_SetAttr(identity, runtime.names.futWaiter, appserver_none()) }
        if let callbacks = PyObject_GetAttr(identity, runtime.names.callbacks) {
            if callbacks != appserver_none(), let scheduled = PyObject_CallMethodNoArgs(identity, runtime.names.scheduleCallbacks) {
                Py_DecRef(scheduled)
            }
            Py_DecRef(callbacks)
        }
        PyErr_Clear()
        for object in [coroutine, context, wakeUpFunction, stepFunction] { if let object { Py_DecRef(object) } }
        coroutine = nil
        context = nil
        wakeUpFunction = nil
        stepFunction = nil
        self.identity = nil
        finished(exception)
        if let exception { Py_DecRef(exception) }
        Py_DecRef(identity)
    }
}

/// What the tasks of one loop share: asyncio's hooks and the names they use, found once.
final class ASGITaskRuntime: @unchecked Sendable {
    let loop: PyObjectPointer
    let callSoon: PyObjectPointer
    let identityType: PyObjectPointer
    let cancelledError: PyObjectPointer
    private let enterTask: PyObjectPointer
    private let leaveTask: PyObjectPointer
    let names = Names()

    struct Names {
        let futureBlocking = PyUnicode_InternFromString("_asyncio_future_blocking")!
        let addDoneCallback = PyUnicode_InternFromString("add_done_callback")!
        let getLoop = PyUnicode_InternFromString("get_loop")!
        let result = PyUnicode_InternFromString("result")!
        let `throw` = PyUnicode_InternFromString("throw")!
        let cancel = PyUnicode_InternFromString("cancel")!
        let mustCancel = PyUnicode_InternFromString("_must_cancel")!
        let cancelMessage = PyUnicode_InternFromString("_cancel_message")!
        let futWaiter = PyUnicode_InternFromString("_fut_waiter")!
        let state = PyUnicode_InternFromString("_state")!
        let callbacks = PyUnicode_InternFromString("_callbacks")!
        let scheduleCallbacks = PyUnicode_InternFromString("_schedule_callbacks")!
        let finishedState = PyUnicode_InternFromString("FINISHED")!
        let cancelledState = PyUnicode_InternFromString("CANCELLED")!
        let contextKeyword = appserver_tuple1(PyUnicode_InternFromString("context")!)!
        let messageKeyword = appserver_tuple1(PyUnicode_InternFromString("msg")!)!
    }

    /// With the GIL, after `asyncio` was imported; nil with a Python exception set.
    init?(loop: PyObjectPointer, identityType: PyObjectPointer) {
        guard let tasks = PyImport_ImportModule("asyncio.tasks") else { return nil }
        defer { Py_DecRef(tasks) }
        guard let enter = PyObject_GetAttrString(tasks, "_enter_task"),
              let leave = PyObject_GetAttrString(tasks, "_leave_task"),
              let exceptions = PyImport_ImportModule("asyncio.exceptions") else { return nil }
        defer { Py_DecRef(exceptions) }
        guard let cancelledError = PyObject_GetAttrString(exceptions, "CancelledError"),
              let callSoon = PyObject_GetAttrString(loop, "call_soon") else { return nil }
        self.loop = retained(loop)
        self.identityType = retained(identityType)
        self.enterTask = enter
        self.leaveTask = leave
        self.cancelledError = cancelledError
        self.callSoon = callSoon
    }

    /// `asyncio._enter_task(loop, identity)`: false with the exception set.
    func enter(_ identity: PyObjectPointer) -> Bool {
        guard let result = call(enterTask, identity) else { return false }
        Py_DecRef(result)
        return true
    }

    func leave(_ identity: PyObjectPointer) {
        if let result = call(leaveTask, identity) { Py_DecRef(result) } else { PyErr_Clear() }
    }

    private func call(_ function: PyObjectPointer, _ identity: PyObjectPointer) -> PyObjectPointer? {
        var args: (PyObjectPointer?, PyObjectPointer?) = (loop, identity)
        return withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: PyObjectPointer?.self, capacity: 2) { PyObject_Vectorcall(function, $0, 2, nil) }
        }
    }

    /// The attribute `name` of `object` is true.
    func flag(_ object: PyObjectPointer, _ name: PyObjectPointer) -> Bool {
        guard let value = PyObject_GetAttr(object, name) else { PyErr_Clear(); return false }
        defer { Py_DecRef(value) }
        return PyObject_IsTrue(value) == 1
    }

    /// The future belongs to this loop (`asyncio.futures._get_loop(future) is loop`).
    func isOnLoop(_ future: PyObjectPointer) -> Bool {
        guard let futureLoop = PyObject_CallMethodNoArgs(future, names.getLoop) else {
            PyErr_Clear()
            return true   // no get_loop(): asyncio then takes the future's `_loop`; do not refuse it
        }
        defer { Py_DecRef(futureLoop) }
        return futureLoop == loop
    }

    /// `CancelledError(message)` (message stolen; None or nil for none).
    func makeCancelledError(message: PyObjectPointer?) -> PyObjectPointer? {
        defer { if let message { Py_DecRef(message) } }
        if let message, message != appserver_none() { return PyObject_CallOneArg(cancelledError, message) }
        return PyObject_CallNoArgs(cancelledError)
    }

    func runtimeError(_ text: String) -> PyObjectPointer? {
        guard let message = PyUnicode_FromString(text) else { return nil }
        defer { Py_DecRef(message) }
        return PyObject_CallOneArg(appserver_exc_runtime_error(), message)
    }
}

/// The native functions bound to a waiting task.
enum ASGITaskFunctions {
    nonisolated(unsafe) static let wakeUp = ASGICallables.definition("wakeup", "wakeup(future): the future a request's task waits for is done") { capsule, args, count in
        guard let task = ASGICallables.owner(capsule, as: ASGITask.self) else { return nil }
        guard count == 1, let args, let future = args[0] else { return NativeFunctions.typeError("wakeup() takes the future") }
        task.wakeUp(future)
        return retained(appserver_none())
    }
    nonisolated(unsafe) static let step = ASGICallables.definition("step", "step([exception]): the next step of a request's task") { capsule, args, count in
        guard let task = ASGICallables.owner(capsule, as: ASGITask.self) else { return nil }
        let exception = count == 1 ? args?[0].map(retained) : nil
        task.step(throwing: exception)
        return retained(appserver_none())
    }
}
