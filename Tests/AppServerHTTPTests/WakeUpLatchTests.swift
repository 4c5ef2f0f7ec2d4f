import Testing
@testable import AppServerHTTP

@Suite struct WakeUpLatchTests {
    /// The I/O thread's first item of a tick schedules the wake-up for the tick's end; the rest of the
    /// tick, and what comes before the consumer takes the queue, ride on it; after the consumer took the
    /// queue, the next item needs a wake-up again.
    @Test func oneWakeUpUntilTheConsumerTakesTheQueue() {
        var latch = WakeUpLatch()
        #expect(latch.queued(onIOThread: true) == .writeAfterTick)
        #expect(latch.queued(onIOThread: true) == .none)
        #expect(latch.queued(onIOThread: false) == .none)
        latch.tickEnded()
        #expect(latch.queued(onIOThread: true) == .none)   // the byte is in the pipe, not yet read
        #expect(latch.queued(onIOThread: false) == .none)
        latch.taking()
        #expect(latch.queued(onIOThread: false) == .writeNow)
        #expect(latch.queued(onIOThread: true) == .none)
        latch.taking()
        #expect(latch.queued(onIOThread: true) == .writeAfterTick)
    }

    /// Random interleavings of the producers, the I/O thread's tick ends and the consumer (which drains
    /// the pipe, then takes the queue in a later step, as it does outside and inside the lock): an item
    /// is never queued with no wake-up on its way, and the pipe never holds more than one byte.
    @Test func noItemIsLeftWithoutAWakeUpAndThePipeHoldsOneByte() {
        var random = SplitMix64(seed: 0x5eed_2026_1206)
        for _ in 0..<2_000 {
            var latch = WakeUpLatch()
            var queued = 0, pipeBytes = 0
            var writeAtTickEnd = false, drained = false
            for _ in 0..<60 {
                switch random.next() % 5 {
                case 0, 1:
                    queued += 1
                    switch latch.queued(onIOThread: random.next() % 4 != 0) {
                    case .none: break
                    case .writeNow: pipeBytes += 1
                    case .writeAfterTick:
                        #expect(!writeAtTickEnd)
                        writeAtTickEnd = true
                    }
                case 2:
                    if writeAtTickEnd {
                        latch.tickEnded()
                        pipeBytes += 1
                        writeAtTickEnd = false
                    }
                case 3:
                    if pipeBytes > 0 {
                        pipeBytes = 0
                        drained = true
                    }
                default:
                    if drained {
                        latch.taking()
                        queued = 0
                        drained = false
                    }
                }
                #expect(pipeBytes <= 1)
                #expect(queued == 0 || pipeBytes > 0 || writeAtTickEnd || drained,
                        "an item is queued and nothing will wake the consumer")
            }
        }
    }
}
