import Atomics
import Foundation

/// A few words of memory shared between the arbiter and one worker (an anonymous shared mapping made
/// before fork): the worker's heartbeat, whether it booted and accepts, and how many requests it served. The
/// arbiter reads them without any message passing, so a worker stuck anywhere still shows as stuck.
final class WorkerSlot: @unchecked Sendable {
    private let memory: UnsafeMutableRawPointer
    private static let size = 4096

    /// CLOCK_MONOTONIC nanoseconds of the last sign of life (the oldest in-flight request's progress
    /// when one is stuck).
    let heartbeat: UnsafeAtomic<Int64>
    /// 1 once the app imported and the worker accepts connections.
    let booted: UnsafeAtomic<Int64>
    let requests: UnsafeAtomic<Int64>
    /// 1 while the worker accepts connections; back to 0 once its listeners are closed (draining).
    let accepting: UnsafeAtomic<Int64>

    init() {
        guard let memory = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
            fatalError("mmap of a worker slot failed: \(String(cString: strerror(errno)))")
        }
        self.memory = memory
        let words = memory.bindMemory(to: UnsafeAtomic<Int64>.Storage.self, capacity: 4)
        heartbeat = UnsafeAtomic(at: words)
        booted = UnsafeAtomic(at: words + 1)
        requests = UnsafeAtomic(at: words + 2)
        accepting = UnsafeAtomic(at: words + 3)
        heartbeat.store(MonotonicClock.nanoseconds(), ordering: .relaxed)
    }

    deinit {
        munmap(memory, Self.size)
    }
}

enum MonotonicClock {
    static func nanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func seconds() -> Double { Double(nanoseconds()) / 1e9 }
}
