#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The `Date` header value (RFC 9110 IMF-fixdate), formatted once a second and shared by all threads.
public enum HTTPDate {
    private static let cache = Mutex<(second: Int, bytes: [UInt8])>((-1, []))

    public static func current() -> [UInt8] {
        let now = time(nil)
        return cache.withLock { cached in
            if cached.second != now {
                cached = (now, format(now))
            }
            return cached.bytes
        }
    }

    static func format(_ seconds: Int) -> [UInt8] {
        var t = seconds
        var tm = tm()
        gmtime_r(&t, &tm)
        var buffer = [CChar](repeating: 0, count: 40)
        let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &tm)
        return buffer[0..<n].map { UInt8(bitPattern: $0) }
    }
}
