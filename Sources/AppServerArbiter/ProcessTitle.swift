import Foundation

/// `proc_name` (`-n`): titles as Gunicorn's with setproctitle, `appserver: master [NAME]` and
/// `appserver: worker [NAME]`, in ps and top. The title is written over the argv strings (the memory
/// /proc/PID/cmdline shows), so it is cut to their length; the command line was read before.
enum ProcessTitle {
    static func set(_ role: String, name: String?) {
        guard let name else { return }
        _ = CommandLine.arguments   // read (and kept by Swift) before it is overwritten
        let title = "appserver: \(role) [\(name)]"
        let argc = Int(CommandLine.argc)
        guard argc > 0, let first = CommandLine.unsafeArgv[0] else { return }
        // The argv strings lie one after another; the area ends after the last one's NUL.
        var end = first
        for index in 0..<argc {
            guard let argument = CommandLine.unsafeArgv[index], argument == end else { break }
            end = argument + strlen(argument) + 1
        }
        let capacity = end - first
        guard capacity > 1 else { return }
        let bytes = Array(title.utf8.prefix(capacity - 1))
        first.withMemoryRebound(to: UInt8.self, capacity: capacity) { area in
            for index in 0..<capacity { area[index] = index < bytes.count ? bytes[index] : 0 }
        }
    }
}
