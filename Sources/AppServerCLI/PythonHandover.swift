import AppServerArbiter
import AppServerConfig
import AppServerPython
import Foundation

/// A virtualenv made by another CPython than the one built in is served by the build for that Python
/// when one is installed as `appserver-python3.X` beside this binary or on PATH (`make build
/// PYTHON=...`): this process becomes it. execv keeps the pid, the arguments, the environment and the
/// inherited sockets, so systemd (LISTEN_PID, MAINPID) and a USR2 handover see one server, and a unit
/// that runs `/usr/bin/appserver` serves an app on 3.12 as well as one on 3.11. Without such a build,
/// the settings' validation refuses the virtualenv with one line, as before.
enum PythonHandover {
    /// Set on the way through (to the binary that handed over), so that a build that does not embed
    /// the Python its name says cannot hand over again, and again.
    static let variable = "APPSERVER_PYTHON_HANDOVER"

    static func execBuildForVirtualenv(of settings: ServerConfig) throws(ConfigError) {
        let handedOverBy = ProcessInfo.processInfo.environment[variable]
        unsetenv(variable)
        let embedded = PythonInterpreter.embeddedVersion
        guard let venv = settings.virtualenv, let made = ServerConfig.pythonVersion(ofVirtualenv: venv), made != embedded else { return }
        if let handedOverBy {
            throw ConfigError.invalidValue(key: "virtualenv", value: venv, reason: """
                \(handedOverBy) handed it over to \(Arbiter.executablePath) for Python \(made), but that binary embeds \
                Python \(embedded): build it again with make build PYTHON=python\(made)
                """)
        }
        guard let build = build(for: made) else { return }
        setenv(variable, Arbiter.executablePath, 1)
        let arguments = [build] + CommandLine.arguments.dropFirst()
        let cArguments = arguments.map { strdup($0) } + [nil]
        execv(build, cArguments)
        let reason = String(cString: strerror(errno))
        unsetenv(variable)
        throw ConfigError.invalidValue(key: "virtualenv", value: venv, reason: "it was made by Python \(made), and \(build) (the build for it) cannot be run: \(reason)")
    }

    /// `appserver-python3.X` beside the running binary, else the first on PATH; never the running binary.
    static func build(for version: String) -> String? {
        let name = "appserver-python\(version)"
        let own = Arbiter.executablePath
        let directories = [(own as NSString).deletingLastPathComponent]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        var running = stat()
        guard stat("/proc/self/exe", &running) == 0 else { return nil }
        for directory in directories where !directory.isEmpty {
            let path = directory + "/" + name
            var candidate = stat()
            guard access(path, X_OK) == 0, stat(path, &candidate) == 0, candidate.st_mode & S_IFMT == S_IFREG else { continue }
            if candidate.st_dev == running.st_dev && candidate.st_ino == running.st_ino { continue }
            return path
        }
        return nil
    }
}
