import Foundation
import Testing
@testable import AppServerHTTP

@Suite struct WorkerMetricsTests {
    func fresh() -> (WorkerMetrics, UnsafeMutableRawPointer) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: WorkerMetrics.wordCount * 8, alignment: 8)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: WorkerMetrics.wordCount * 8)
        return (WorkerMetrics(memory: memory), memory)
    }

    @Test func countsByMethodAndStatusClassWithTheDurationInItsBucket() {
        let (metrics, memory) = fresh()
        defer { memory.deallocate() }
        metrics.requestFinished(method: "GET", status: 200, nanoseconds: 800_000, requestBodyBytes: 0, responseBytes: 100)
        metrics.requestFinished(method: "POST", status: 503, nanoseconds: 70_000_000_000, requestBodyBytes: 10, responseBytes: 50)
        metrics.requestFinished(method: "BREW", status: 418, nanoseconds: 3_000_000, requestBodyBytes: 0, responseBytes: 1)
        let counters = metrics.counters()
        #expect(counters.requests(method: 0, statusClass: 1) == 1)
        #expect(counters.requests(method: 2, statusClass: 4) == 1)
        #expect(counters.requests(method: 7, statusClass: 3) == 1)
        #expect(counters.requestsTotal == 3)
        let buckets = Array(counters.durationBuckets)
        #expect(buckets.count == WorkerMetrics.durationBounds.count + 1)
        #expect(buckets[0] == 1)                              // 0.8 ms <= 1 ms
        #expect(buckets[2] == 1)                              // 3 ms <= 5 ms
        #expect(buckets.last == 1)                            // 70 s > 60 s
        #expect(abs(counters.durationSumSeconds - 70.0038) < 1e-9)
        #expect(counters.requestBodyBytes == 10 && counters.responseBytes == 151)
    }

    @Test func gaugesGoBothWaysAndCountersSum() {
        let (metrics, memory) = fresh()
        defer { memory.deallocate() }
        metrics.connectionOpened(); metrics.connectionOpened(); metrics.connectionClosed()
        metrics.requestStarted(); metrics.webSocketOpened()
        metrics.refused(status: 431); metrics.refused(status: 418); metrics.appException(); metrics.requestTimedOut()
        #expect(metrics.gauges.connections == 1 && metrics.gauges.inFlight == 1 && metrics.gauges.webSockets == 1)
        let counters = metrics.counters()
        #expect(counters.connectionsAccepted == 2 && counters.webSocketsAccepted == 1 && counters.appExceptions == 1 && counters.timedOut == 1)
        #expect(counters.refused(WorkerMetrics.refusals.firstIndex { $0.status == 431 }!) == 1)
        #expect(counters.refused(WorkerMetrics.refusals.count - 1) == 1)   // 418: other
        let doubled = counters + counters
        #expect(doubled.connectionsAccepted == 4 && doubled.appExceptions == 2)
        #expect(!metrics.retiredAfterMaxRequests)
        metrics.retiringAfterMaxRequests()
        #expect(metrics.retiredAfterMaxRequests)
    }
}

@Suite struct PrometheusTextTests {
    @Test func familiesLabelsAndHistogramsInTheTextFormat() {
        var out = PrometheusText()
        out.family("x_total", .counter, "Things, with a \\ backslash.")
        out.sample("x_total", ["path": "a\"b\\c\nd"], Int64(3))
        out.histogram("t_seconds", "Time.", bounds: [0.5, 1], counts: [1, 2, 3], sum: 4.25)
        out.single("g", .gauge, "A gauge.", -1)
        #expect(out.text == """
            # HELP x_total Things, with a \\\\ backslash.
            # TYPE x_total counter
            x_total{path="a\\"b\\\\c\\nd"} 3
            # HELP t_seconds Time.
            # TYPE t_seconds histogram
            t_seconds_bucket{le="0.5"} 1
            t_seconds_bucket{le="1"} 3
            t_seconds_bucket{le="+Inf"} 6
            t_seconds_sum 4.25
            t_seconds_count 6
            # HELP g A gauge.
            # TYPE g gauge
            g -1

            """)
        #expect(PrometheusText.format(.infinity) == "+Inf" && PrometheusText.format(0.0025) == "0.0025" && PrometheusText.format(2) == "2")
    }
}
