import NIOCore
import Testing
@testable import AppServerHTTP

@Suite struct SweptDeadlineTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    func at(_ seconds: Int64) -> NIODeadline { t0 + .seconds(seconds) }

    /// Sweeps at each time in turn: which of them found the timeout passed.
    func sweeps(_ deadline: inout SweptDeadline, at times: NIODeadline...) -> [Bool] {
        times.map { deadline.sweep(now: $0) }
    }

    @Test func aTimeoutIsDatedByTheFirstSweepAndPassesThatLongAfter() {
        var deadline = SweptDeadline()
        deadline.arm(seconds: 5)
        let got = sweeps(&deadline, at: at(0), at(1), at(4) + .milliseconds(999), at(5), at(6), at(7))
        // Dated at(5) by the first sweep; passed once, then off until armed again.
        #expect(got == [false, false, false, true, false, false])
    }

    @Test func armingAgainStartsOver() {
        var deadline = SweptDeadline()
        deadline.arm(seconds: 2)
        let first = sweeps(&deadline, at: at(0), at(1))
        deadline.arm(seconds: 2)   // e.g. keep-alive after the next response
        let second = sweeps(&deadline, at: at(2), at(3), at(4))   // dated again: at(4)
        #expect(first == [false, false] && second == [false, false, true])
    }

    @Test func clearedOrZeroNeverPasses() {
        var deadline = SweptDeadline()
        let unarmed = sweeps(&deadline, at: at(0), at(100))
        deadline.arm(seconds: 1)
        let dated = sweeps(&deadline, at: at(0))
        deadline.clear()
        let cleared = sweeps(&deadline, at: at(1), at(100))
        deadline.arm(seconds: 0)   // `--keep-alive 0`, `--header-timeout 0`: no timeout
        let zero = sweeps(&deadline, at: at(0), at(100))
        #expect(unarmed == [false, false] && dated == [false] && cleared == [false, false] && zero == [false, false])
    }

    @Test func aSweepThatComesLateStillFiresOnce() {
        var deadline = SweptDeadline()
        deadline.arm(seconds: 1)
        let got = sweeps(&deadline, at: at(0), at(30), at(31))   // the event loop was held up
        #expect(got == [false, true, false])
    }
}
