import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// The systemd side of the server: sockets passed by socket activation and sd_notify messages.
public enum Systemd {
    /// The first descriptor systemd passes (SD_LISTEN_FDS_START).
    public static let firstListenDescriptor: CInt = 3

    /// Listening sockets passed to this process (`LISTEN_FDS`/`LISTEN_PID` naming it), with their
    /// `FileDescriptorName=` names. The LISTEN_* variables are removed, so the app's own children do
    /// not take them for theirs.
    public static func listenDescriptors() -> [(descriptor: CInt, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        var result: [(CInt, String)] = []
        for i in 0..<Int(count) {
            let name = names?[i].map { String(cString: $0) } ?? "unknown"
            result.append((firstListenDescriptor + CInt(i), name))
            free(names?[i])
        }
        free(names)
        return result
    }

    /// Sends a notification (`READY=1`, `STATUS=...`) when NOTIFY_SOCKET is set; a no-op otherwise.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// Whether a service manager listens for notifications.
    public static var isNotifying: Bool { getenv("NOTIFY_SOCKET") != nil }
}
