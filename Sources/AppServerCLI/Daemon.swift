import Foundation

/// `--daemon` (Gunicorn's `-D`): detach from the terminal before the arbiter starts. Not for systemd
/// units, which supervise the process themselves (the .deb's units never use it).
enum Daemon {
    static func detach() {
        // Twice, so the server is no session leader and can never take a controlling terminal.
        if fork() != 0 { _exit(0) }
        setsid()
        if fork() != 0 { _exit(0) }
        // stdin, stdout and stderr to /dev/null, as Gunicorn does; log files keep their own descriptors.
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            for descriptor: CInt in 0...2 { dup2(null, descriptor) }
            if null > 2 { close(null) }
        }
    }
}
