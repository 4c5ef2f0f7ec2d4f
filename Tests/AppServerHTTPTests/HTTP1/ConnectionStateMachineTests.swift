import Testing
@testable import AppServerHTTP

/// Every transition of the connection's state machine. (`#expect` cannot call a mutating method
/// itself, hence `do { let got = ... }`.)
@Suite struct ConnectionStateMachineTests {
    func machine(keepAlive: Bool = true, maxDiscard: Int = 100) -> ConnectionStateMachine {
        ConnectionStateMachine(keepAliveEnabled: keepAlive, maxBodyDiscard: maxDiscard)
    }

    @Test func openingAndTheFirstBytes() {
        var m = machine()
        #expect(m.opened() == .header)
        do { let got = m.bytesArrived(); #expect(got == .header) }
        #expect(m.phase == .idle(headStarted: true))
        do { let got = m.bytesArrived(); #expect(got == nil) }   // the header timeout is not restarted by every read
    }

    @Test func keepAliveRequestOneAfterAnother() {
        var m = machine()
        do { let got = m.requestStarted(keepAliveRequested: true, lastAllowed: false); #expect(got) }
        #expect(m.phase == .active(requestDone: false, responseDone: false))
        #expect(m.arrival() == .handle)   // the request's own body parts
        do { let got = m.requestEnded(dispatchWaiting: false); #expect(got == .none) }
        #expect(m.arrival() == .queue)     // from now on: a pipelined request
        do { let got = m.responseEnded(close: false, bodyPending: false, mustNotDiscard: false); #expect(got == .finish(.idle(.keepAlive))) }
        #expect(m.phase == .idle(headStarted: false))
        #expect(m.arrival() == .handle)
    }

    @Test func keepAliveIsRefusedWhenOffOrNotAskedOrLast() {
        var off = machine(keepAlive: false)
        do { let got = off.requestStarted(keepAliveRequested: true, lastAllowed: false); #expect(!got) }
        var notAsked = machine()
        do { let got = notAsked.requestStarted(keepAliveRequested: false, lastAllowed: false); #expect(!got) }
        var last = machine()
        do { let got = last.requestStarted(keepAliveRequested: true, lastAllowed: true); #expect(!got) }
        #expect(last.closeAfterResponse)
    }

    @Test func aClosingResponseClosesWhenTheRequestIsDone() {
        var m = machine()
        _ = m.requestStarted(keepAliveRequested: false, lastAllowed: false)
        _ = m.requestEnded(dispatchWaiting: false)
        do { let got = m.responseEnded(close: true, bodyPending: false, mustNotDiscard: false); #expect(got == .finish(.close)) }
        #expect(m.phase == .closed)
        #expect(m.arrival() == .drop)
    }

    @Test func aResponseBeforeTheRequestsEndWaitsForIt() {
        var m = machine()
        _ = m.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = m.responseEnded(close: false, bodyPending: false, mustNotDiscard: false); #expect(got == .awaitRequestEnd) }
        #expect(m.phase == .active(requestDone: false, responseDone: true))
        do { let got = m.requestEnded(dispatchWaiting: false); #expect(got == .finish(.idle(.keepAlive))) }
        // The same with a closing response: the `.end` closes.
        var c = machine()
        _ = c.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = c.responseEnded(close: true, bodyPending: false, mustNotDiscard: false)
        do { let got = c.requestEnded(dispatchWaiting: false); #expect(got == .finish(.close)) }
    }

    @Test func aSmallBodyIsDispatchedAtItsEnd() {
        var m = machine()
        _ = m.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = m.requestEnded(dispatchWaiting: true); #expect(got == .dispatch) }
        #expect(m.phase == .active(requestDone: true, responseDone: false))
    }

    @Test func anUnreadBodyIsDiscardedWithinItsLimit() {
        var m = machine(maxDiscard: 100)
        _ = m.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = m.responseEnded(close: false, bodyPending: true, mustNotDiscard: false); #expect(got == .discardBody(.header)) }
        do { let got = m.discarded(60); #expect(got) }
        #expect(m.phase == .discarding(bytes: 60))
        do { let got = m.requestEnded(dispatchWaiting: false); #expect(got == .finish(.idle(.keepAlive))) }
        // Past the limit: close.
        var over = machine(maxDiscard: 100)
        _ = over.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = over.responseEnded(close: false, bodyPending: true, mustNotDiscard: false)
        do { let got = over.discarded(60); #expect(got) }
        do { let got = over.discarded(60); #expect(!got) }
        #expect(over.phase == .closed)
    }

    @Test func anUnreadBodyThatMayNotBeDiscardedCloses() {
        // Too large, or a client waiting for 100-continue; or a response that closes anyway.
        var m = machine()
        _ = m.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = m.responseEnded(close: false, bodyPending: true, mustNotDiscard: true); #expect(got == .close) }
        var closing = machine()
        _ = closing.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = closing.responseEnded(close: true, bodyPending: true, mustNotDiscard: false); #expect(got == .close) }
    }

    @Test func drainingClosesAfterTheCurrentResponse() {
        var idle = machine()
        do { let got = idle.drain(); #expect(got == .drainGrace) }   // idle, nothing on its way yet: the shorter timeout
        var started = machine()
        _ = started.bytesArrived()
        do { let got = started.drain(); #expect(got == nil) }         // a head is arriving: it will be answered, then closed
        var m = machine()
        do { let got = m.requestStarted(keepAliveRequested: true, lastAllowed: false); #expect(got) }
        do { let got = m.drain(); #expect(got == nil) }
        // The response already promised keep-alive: the connection stays for the next request ...
        _ = m.requestEnded(dispatchWaiting: false)
        do { let got = m.responseEnded(close: false, bodyPending: false, mustNotDiscard: false); #expect(got == .finish(.idle(.drainGrace))) }
        // ... which is answered with Connection: close.
        do { let got = m.requestStarted(keepAliveRequested: true, lastAllowed: false); #expect(!got) }
    }

    @Test func timeouts() {
        var idle = machine()
        do { let got = idle.deadlinePassed(); #expect(got == .close) }
        var slowHead = machine()
        _ = slowHead.bytesArrived()
        do { let got = slowHead.deadlinePassed(); #expect(got == .answer408) }
        var active = machine()
        _ = active.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = active.deadlinePassed(); #expect(got == .none) }   // a running request is the worker timeout's business
        var discarding = machine()
        _ = discarding.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = discarding.responseEnded(close: false, bodyPending: true, mustNotDiscard: false)
        do { let got = discarding.deadlinePassed(); #expect(got == .close) }
    }

    @Test func refusals() {
        var idle = machine()
        do { let got = idle.refused(); #expect(got == .answerAndClose) }
        #expect(idle.phase == .closed)
        var body = machine()
        _ = body.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = body.refused(); #expect(got == .failBody) }
        #expect(body.closeWhenDone)
        do { let got = body.responseEnded(close: false, bodyPending: true, mustNotDiscard: false); #expect(got == .close) }
        var answered = machine()
        _ = answered.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = answered.responseEnded(close: false, bodyPending: false, mustNotDiscard: false)
        do { let got = answered.refused(); #expect(got == .failBodyAndClose) }
        var discarding = machine()
        _ = discarding.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = discarding.responseEnded(close: false, bodyPending: true, mustNotDiscard: false)
        do { let got = discarding.refused(); #expect(got == .close) }
        var closed = machine()
        closed.closed()
        do { let got = closed.refused(); #expect(got == .close) }
    }

    @Test func aResponseForARequestNoLongerActiveChangesNothing() {
        var m = machine()
        m.closed()
        do { let got = m.responseEnded(close: false, bodyPending: false, mustNotDiscard: false); #expect(got == .awaitRequestEnd) }
        #expect(m.phase == .closed)
        do { let got = m.requestEnded(dispatchWaiting: false); #expect(got == .none) }
    }

    /// A connection that closes while the client may still be sending closes in stages (RFC 9112 9.6);
    /// one whose request was read to its end, or that sat idle, closes at once.
    @Test func closingWhileTheClientMayStillSendLingers() {
        // A closing answer before the body was read (a 413, or the app's own 400 after a refused chunk).
        var answeredEarly = machine()
        _ = answeredEarly.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = answeredEarly.responseEnded(close: true, bodyPending: true, mustNotDiscard: false); #expect(got == .close) }
        #expect(answeredEarly.lingers)
        // A body too large to discard.
        var tooLarge = machine()
        _ = tooLarge.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = tooLarge.responseEnded(close: false, bodyPending: true, mustNotDiscard: false)
        do { let got = tooLarge.discarded(101); #expect(!got) }
        #expect(tooLarge.lingers)
        // A refused head, and a head cut short by its timeout (408).
        var refusedHead = machine()
        _ = refusedHead.bytesArrived()
        do { let got = refusedHead.refused(); #expect(got == .answerAndClose) }
        #expect(refusedHead.lingers)
        var slowHead = machine()
        _ = slowHead.bytesArrived()
        do { let got = slowHead.deadlinePassed(); #expect(got == .answer408) }
        #expect(slowHead.lingers)
        // A refused body while the app holds the request.
        var refusedBody = machine()
        _ = refusedBody.requestStarted(keepAliveRequested: true, lastAllowed: false)
        do { let got = refusedBody.refused(); #expect(got == .failBody) }
        do { let got = refusedBody.responseEnded(close: true, bodyPending: true, mustNotDiscard: false); #expect(got == .close) }
        #expect(refusedBody.lingers)

        // Read to its end: a closing response; a body thrown away to its end.
        var done = machine()
        _ = done.requestStarted(keepAliveRequested: false, lastAllowed: false)
        _ = done.requestEnded(dispatchWaiting: false)
        _ = done.responseEnded(close: true, bodyPending: false, mustNotDiscard: false)
        #expect(done.phase == .closed && !done.lingers)
        var discardedWhole = machine()
        _ = discardedWhole.requestStarted(keepAliveRequested: true, lastAllowed: true)
        _ = discardedWhole.responseEnded(close: true, bodyPending: true, mustNotDiscard: false)
        #expect(discardedWhole.lingers)   // closed before the body's end: the client is still sending it
        var discarding = machine()
        _ = discarding.requestStarted(keepAliveRequested: true, lastAllowed: false)
        _ = discarding.responseEnded(close: false, bodyPending: true, mustNotDiscard: false)
        _ = discarding.drain()
        do { let got = discarding.requestEnded(dispatchWaiting: false); #expect(got == .finish(.idle(.drainGrace))) }
        #expect(!discarding.lingers)
        // An idle keep-alive connection timing out, and one closed by the handler between requests.
        var idle = machine()
        do { let got = idle.deadlinePassed(); #expect(got == .close) }
        #expect(!idle.lingers)
        var closedIdle = machine()
        closedIdle.closed()
        #expect(!closedIdle.lingers)
    }
}
