#if canImport(Glibc)
import Glibc
#endif

/// The process environment that `raw_env` (`env`) changes. Applying a configuration sets its variables
/// and puts back the ones an earlier configuration set that this one no longer does (their value from
/// before, or unset): after a reload the app sees the file as it is now. Gunicorn only ever sets, so a
/// variable dropped from its config stays until a restart.
///
/// The arbiter applies each configuration before it forks that generation's workers; the workers inherit
/// the record and `values(for:)` tells them what to set in Python's `os.environ`, a copy taken when the
/// interpreter started.
public enum ConfiguredEnvironment {
    /// For each variable some configuration set: its value before any did (nil: it was not set).
    /// Only the arbiter's thread changes it, before forking.
    nonisolated(unsafe) private static var originals: [String: String?] = [:]

    /// Makes the process environment match `env`.
    public static func apply(_ env: [String: String]) {
        for key in env.keys where originals.index(forKey: key) == nil {
            // updateValue: a subscript assignment of nil would remove the entry, not record "unset".
            originals.updateValue(getenv(key).map { String(cString: $0) }, forKey: key)
        }
        for (key, value) in values(for: env) {
            if let value { setenv(key, value, 1) } else { unsetenv(key) }
        }
    }

    /// What every variable some configuration set is to be under `env`: its value there, or for one
    /// `env` no longer sets the value from before (nil: unset).
    public static func values(for env: [String: String]) -> [String: String?] {
        originals.filter { env[$0.key] == nil }.merging(env.mapValues { $0 }) { _, configured in configured }
    }
}
