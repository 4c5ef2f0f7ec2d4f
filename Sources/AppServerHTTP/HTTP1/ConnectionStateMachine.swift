/// The life of one HTTP/1.1 connection as a pure state machine: which request is in progress, when a
/// response may keep the connection, when it must close, what to do with a body the app left unread,
/// which timeout runs. It does no I/O: each event returns what the connection handler must do, and
/// the tests drive every transition alone (ConnectionStateMachineTests).
struct ConnectionStateMachine: Equatable {
    enum Phase: Equatable {
        /// Between requests. `headStarted`: the first bytes of the next head have arrived.
        case idle(headStarted: Bool)
        /// A request is being answered. `requestDone`: its body was read to the end (its `.end`);
        /// `responseDone`: the app's response went out whole.
        case active(requestDone: Bool, responseDone: Bool)
        /// The response went out, the app left body unread: read it and throw it away.
        case discarding(bytes: Int)
        case closed
    }

    /// The timeout a phase runs under; the handler turns it into a deadline.
    enum Timer: Equatable {
        /// A client has this long to send a whole head (and, discarding, the rest of a body).
        case header
        /// An idle keep-alive connection is closed after this.
        case keepAlive
        /// Draining: the shorter of the two, for a request that may already be on its way.
        case drainGrace
        /// Closing in stages (`lingers`): how long what the client still sends is read and thrown away.
        case linger
    }

    /// What a part of the next request does while one is being answered.
    enum Arrival: Equatable { case handle, queue, drop }

    enum AfterRequestEnd: Equatable {
        case none
        /// The app is called now (a small body it gets whole).
        case dispatch
        case finish(Finish)
    }

    enum AfterResponseEnd: Equatable {
        case finish(Finish)
        /// A bodyless request answered before its `.end` part arrived: that part finishes it.
        case awaitRequestEnd
        /// Read and throw away the body the app did not read, under the header timeout.
        case discardBody(Timer)
        case close
    }

    enum Finish: Equatable {
        case close
        /// Idle again: answer the requests that were pipelined meanwhile, then wait under `Timer`.
        case idle(Timer)
    }

    enum AfterTimeout: Equatable { case none, close, answer408 }

    enum AfterRefusal: Equatable {
        /// Nothing answered yet: a 4xx with `Connection: close`.
        case answerAndClose
        /// The refused bytes were the body of a request the app holds: its reads fail (it answers
        /// 400), and the connection closes after the response.
        case failBody
        case failBodyAndClose
        case close
    }

    private(set) var phase = Phase.idle(headStarted: false)
    /// Requests from now on are answered with `Connection: close` (draining, max-requests).
    private(set) var closeAfterResponse = false
    /// The current response closes the connection when it is done.
    private(set) var closeWhenDone = false
    /// Keep-alive is on (`keep_alive` > 0) and the connection may carry more than one request (not uwsgi).
    let keepAliveEnabled: Bool
    /// Unread body bytes read and thrown away to keep the connection; past this it closes instead.
    let maxBodyDiscard: Int
    /// The connection closed while the client may still be sending (a body not read to its end, a head
    /// begun). A socket closed with bytes unread, or sent to after it closed, answers with a reset, and
    /// a reset can take the last response out of the client's buffers before it reads it (RFC 9112 9.6):
    /// the handler then closes in stages, its output first, and reads and throws away what still comes
    /// (`Timer.linger`) before it closes the socket.
    private(set) var lingers = false

    init(keepAliveEnabled: Bool, maxBodyDiscard: Int) {
        self.keepAliveEnabled = keepAliveEnabled
        self.maxBodyDiscard = maxBodyDiscard
    }

    // MARK: events

    /// A new connection has the header timeout to send its first request.
    func opened() -> Timer { .header }

    /// Bytes arrived: the first of a head starts the header timeout.
    mutating func bytesArrived() -> Timer? {
        guard case .idle(false) = phase else { return nil }
        phase = .idle(headStarted: true)
        return .header
    }

    func arrival() -> Arrival {
        switch phase {
        case .active(requestDone: true, _): return .queue   // pipelined: after the current response
        case .closed: return .drop
        default: return .handle
        }
    }

    /// A request head was accepted. Returns whether its response may keep the connection open.
    mutating func requestStarted(keepAliveRequested: Bool, lastAllowed: Bool) -> Bool {
        if lastAllowed { closeAfterResponse = true }
        closeWhenDone = false
        phase = .active(requestDone: false, responseDone: false)
        return keepAliveRequested && keepAliveEnabled && !closeAfterResponse
    }

    /// The request's `.end`: its body (if any) was read whole.
    mutating func requestEnded(dispatchWaiting: Bool) -> AfterRequestEnd {
        switch phase {
        case .active(false, let responseDone):
            phase = .active(requestDone: true, responseDone: responseDone)
            if dispatchWaiting { return .dispatch }
            return responseDone ? .finish(finish()) : .none
        case .discarding:
            return .finish(finish())
        default:
            return .none
        }
    }

    /// The response went out whole. `close`: it said `Connection: close` (or the request did not allow
    /// more); `bodyPending`: the request has a body not read to its end; `mustNotDiscard`: that body
    /// cannot be skipped (it is too large, or the client waits for 100-continue before sending it).
    mutating func responseEnded(close: Bool, bodyPending: Bool, mustNotDiscard: Bool) -> AfterResponseEnd {
        guard case .active(let requestDone, false) = phase else { return .awaitRequestEnd }
        if close { closeWhenDone = true }
        if requestDone {
            phase = .active(requestDone: true, responseDone: true)
            return .finish(finish())
        }
        if !bodyPending {
            phase = .active(requestDone: false, responseDone: true)
            return .awaitRequestEnd
        }
        if closeWhenDone || mustNotDiscard {
            closePhase()
            return .close
        }
        phase = .discarding(bytes: 0)
        return .discardBody(.header)
    }

    /// Body bytes of a request whose response is done. Returns false when the connection must close.
    mutating func discarded(_ count: Int) -> Bool {
        guard case .discarding(let bytes) = phase else { return true }
        if bytes + count > maxBodyDiscard {
            closePhase()
            return false
        }
        phase = .discarding(bytes: bytes + count)
        return true
    }

    /// The request was read to its end and answered.
    private mutating func finish() -> Finish {
        if closeWhenDone {
            phase = .closed   // its body's end arrived, even when the response was done first (discarding)
            return .close
        }
        phase = .idle(headStarted: false)
        return .idle(closeAfterResponse ? .drainGrace : .keepAlive)
    }

    /// The server drains: the response in progress (or the next one) closes the connection. An idle
    /// connection is not closed at once (a request may be on its way): it gets the shorter timeout.
    mutating func drain() -> Timer? {
        closeAfterResponse = true
        if case .idle(false) = phase { return .drainGrace }
        return nil
    }

    mutating func deadlinePassed() -> AfterTimeout {
        switch phase {
        case .discarding:
            closePhase()
            return .close
        case .idle(let headStarted):
            closePhase()
            return headStarted ? .answer408 : .close   // a head that did not arrive in time, or an idle keep-alive
        default:
            return .none
        }
    }

    /// The decoder refused the connection's bytes.
    mutating func refused() -> AfterRefusal {
        switch phase {
        case .idle:
            closePhase()
            return .answerAndClose
        case .active(false, let responseDone):
            closeWhenDone = true
            if responseDone {
                closePhase()
                return .failBodyAndClose
            }
            return .failBody
        case .closed:
            return .close
        default:
            closePhase()
            return .close
        }
    }

    /// The server answers with an error of its own and closes (a refused head, a 408).
    mutating func answeredWithError() {
        closePhase()
    }

    /// The connection is closing or closed, or was handed to another protocol (a websocket).
    mutating func closed() {
        closePhase()
    }

    /// Every way to `.closed`: whether the client may still be sending is read from the phase it leaves.
    private mutating func closePhase() {
        switch phase {
        case .idle(let headStarted): lingers = headStarted
        case .active(let requestDone, _): lingers = !requestDone
        case .discarding: lingers = true
        case .closed: break
        }
        phase = .closed
    }
}
