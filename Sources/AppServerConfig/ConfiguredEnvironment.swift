#if canImport(Glibc)
import Glibc
#endif

/// The process environment that `raw_env` (`env`) changes. Applying a configuration sets its variables
/// and puts back the ones an earlier configuration set that this one no longer does (their value from
/// before, or unset): after a reload the app sees the file as it is now. Gunicorn only ever sets, so a
/// variable dropped from its config stays until a restart.
///
/// The arbiter applies each configuration before it forks that generation's workers; the workers inherit
/// the record and `restorations(for:)` tells them what to put back in Python's `os.environ`, a copy taken
/// when the interpreter started.
public enum ConfiguredEnvironment {
    /// For each variable some configuration set: its value before any did (nil: it was not set).
    /// Only the arbiter's thread changes it, before forking.
    nonisolated(unsafe) private static var originals: [String: String?] = [:]

    /// Makes the process environment match `env`.
    public static func apply(_ env: [String: String]) {
        for (key, value) in env {
            if originals.index(forKey: key) == nil {
                // updateValue: a subscript assignment of nil would remove the entry, not record "unset".
                originals.updateValue(getenv(key).map { String(cString: $0) }, forKey: key)
            }
            setenv(key, value, 1)
        }
        for (key, original) in restorations(for: env) {
            if let original { setenv(key, original, 1) } else { unsetenv(key) }
        }
    }

    /// The variables an earlier configuration set that `env` does not: each with the value to put back,
    /// or nil to remove it.
    public static func restorations(for env: [String: String]) -> [String: String?] {
        originals.filter { env[$0.key] == nil }
    }
}
