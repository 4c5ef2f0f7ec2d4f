import CMalloc
import Foundation

/// How a worker's malloc keeps memory it frees.
///
/// glibc gives the top of a heap back to the kernel once 128 KiB of it is free (M_TRIM_THRESHOLD);
/// in the arenas of other threads it does so with madvise(MADV_DONTNEED), and the next allocation
/// there faults every page in again, zeroed. With `--threads N` a streamed response's chunks are
/// made by an app thread (in its arena) and freed by the I/O thread once written: up to the response's
/// high water (1 MiB) is freed at once, the arena's top is trimmed, and the next response faults its
/// buffers back in, about a hundred page faults a 1 MiB response, and twice the system time. glibc's
/// own dynamic thresholds only ever move for blocks that were mmapped, which these are not.
///
/// So the worker sets both thresholds (setting one turns the dynamic rule off): blocks under 4 MiB
/// come from the heap, and a heap keeps up to 8 MiB free at its top (glibc's own two-to-one ratio).
/// A user who set either threshold in the environment (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_
/// or their GLIBC_TUNABLES names) keeps that instead.
enum HeapTuning {
    static let mmapThreshold: Int32 = 4 << 20
    static let trimThreshold: Int32 = 8 << 20

    /// Whether the environment already sets malloc's trim or mmap threshold.
    static func userSetsThresholds(_ environment: [String: String]) -> Bool {
        if environment["MALLOC_TRIM_THRESHOLD_"] != nil || environment["MALLOC_MMAP_THRESHOLD_"] != nil { return true }
        guard let tunables = environment["GLIBC_TUNABLES"] else { return false }
        return tunables.contains("glibc.malloc.trim_threshold") || tunables.contains("glibc.malloc.mmap_threshold")
    }

    /// Applies the thresholds unless the user set them.
    static func keepFreedMemoryForReuse() {
        guard !userSetsThresholds(ProcessInfo.processInfo.environment) else { return }
        // mallopt returns 1 on success; a refused value leaves glibc's defaults, which still work.
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        _ = mallopt(M_TRIM_THRESHOLD, trimThreshold)
    }
}
