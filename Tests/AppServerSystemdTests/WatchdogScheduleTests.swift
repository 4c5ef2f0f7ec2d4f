import Testing
import AppServerSystemd

@Suite struct WatchdogScheduleTests {
    /// The rounds of an arbiter's loop (every 0.25 s for `seconds`) at which the schedule pings.
    private func pings(_ schedule: inout WatchdogSchedule, from start: Double, seconds: Double,
                       healthy: (Double) -> Bool = { _ in true }) -> [Double] {
        stride(from: start, to: start + seconds, by: 0.25).filter { schedule.due(now: $0, healthy: healthy($0)) }
    }

    @Test func pingsOnceAnIntervalWhileHealthy() {
        var schedule = WatchdogSchedule(interval: 1)
        #expect(pings(&schedule, from: 100, seconds: 3.1) == [100, 101, 102, 103])
    }

    @Test func anUnhealthyServerIsNotVouchedFor() {
        var schedule = WatchdogSchedule(interval: 1)
        let sent = pings(&schedule, from: 100, seconds: 4, healthy: { $0 < 101 || $0 >= 102.5 })
        #expect(sent == [100, 102.5, 103.5])
    }

    /// After USR2 the new arbiter cannot tell when systemd starts listening to it: it pings every round
    /// for one interval, then on its cadence again.
    @Test func aTakeOverPingsEveryRoundForOneInterval() {
        var schedule = WatchdogSchedule(interval: 1)
        #expect(pings(&schedule, from: 100, seconds: 1) == [100])
        schedule.tookOver()
        #expect(pings(&schedule, from: 101, seconds: 3.1) == [101, 101.25, 101.5, 101.75, 102.75, 103.75])
    }

    @Test func aTakeOverVouchesOnlyForAHealthyServer() {
        var schedule = WatchdogSchedule(interval: 1)
        schedule.tookOver()
        #expect(pings(&schedule, from: 100, seconds: 2, healthy: { $0 >= 100.5 }) == [100.5, 100.75, 101.75])
    }
}
