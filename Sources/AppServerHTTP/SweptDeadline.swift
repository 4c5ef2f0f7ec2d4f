import NIOCore

/// A connection's timeout, kept without reading the clock. Arming only records how long; the server's
/// once-a-second sweep dates it the first time it sees it (its own time plus that long) and reports
/// it passed at the first sweep at or after that date. A timeout armed for every request (the header
/// timeout on a head's first bytes, the keep-alive one after each response) thus costs no clock read,
/// two of which were some 130 instructions a request. It fires as early and as late as a deadline
/// dated when armed: at the sweep `seconds` after the first sweep that follows the arming, i.e.
/// between `seconds` and `seconds` + 1 s after it.
struct SweptDeadline {
    private enum State {
        case off
        /// Armed, not yet seen by a sweep.
        case armed(seconds: Int64)
        case dated(NIODeadline)
    }

    private var state = State.off

    /// Runs `seconds` from now (0 or less: no timeout), in place of any timeout before.
    mutating func arm(seconds: Int64) {
        state = seconds > 0 ? .armed(seconds: seconds) : .off
    }

    mutating func clear() {
        state = .off
    }

    /// The sweep at `now`: dates a timeout armed since the last sweep; returns true, and clears it,
    /// when a dated one has passed.
    mutating func sweep(now: NIODeadline) -> Bool {
        switch state {
        case .off:
            return false
        case .armed(let seconds):
            state = .dated(now + .seconds(seconds))
            return false
        case .dated(let deadline):
            guard deadline <= now else { return false }
            state = .off
            return true
        }
    }
}
