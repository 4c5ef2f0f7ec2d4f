import AppServerArbiter
import AppServerConfig
import AppServerPython
import ArgumentParser
import Foundation
import Logging

/// The server command: settings from the settings table's flags (Gunicorn's), the config file and the
/// environment (ConfigBuilder), then the arbiter. Control commands (`reload`, `upgrade`, `status`) are
/// ArgumentParser commands of their own (ControlCommands.swift).
enum ServerCommand {
    static func run(_ arguments: [String]) throws(ConfigError) -> Int32 {
        // Documents made from the settings table: the README's list, the man page's options, and the
        // bash completion the .deb installs (unit tests keep the first two in step).
        switch arguments {
        case ["--settings-markdown"]: print(SettingsTable.markdown(), terminator: ""); return 0
        case ["--settings-roff"]: print(SettingsTable.roff(), terminator: ""); return 0
        case ["--generate-completion-script", "bash"]: print(SettingsTable.bashCompletion(), terminator: ""); return 0
        default: break
        }
        let builder = ConfigBuilder(arguments: arguments, environment: ProcessInfo.processInfo.environment,
                                    readPythonFile: PythonConfigFile.read, describeWorkerClass: PythonConfigFile.describeWorkerClass)
        let commandLine: CommandLineReader.Result
        do {
            commandLine = try builder.commandLine()
        } catch {
            throw ConfigError.app(error.description)
        }
        if commandLine.help {
            print(SettingsTable.helpText(version: appServerVersion), terminator: "")
            return 0
        }
        if commandLine.version {
            print(appServerVersion)
            return 0
        }
        let settings = try builder.build()
        if settings.printConfig {
            print(ConfigBuilder.render(settings), terminator: "")
            return 0
        }
        try PythonHandover.execBuildForVirtualenv(of: settings)   // returns when this binary is the one to serve it
        try check(settings)
        if settings.checkConfig {
            // What the arbiter would log at start (capped values, settings without effect, unknown names).
            for note in settings.notes {
                FileHandle.standardError.write(Data("appserver: \(note.level == .warning ? "warning" : "note"): \(note.text)\n".utf8))
            }
            print("configuration OK: app \(settings.app ?? ""), \(settings.workers) workers x \(settings.threads) threads, bind \(settings.bind.map(\.description).joined(separator: ", "))")
            return 0
        }

        Arbiter.rememberStartDirectory()
        if let dir = settings.chdir, !FileManager.default.changeCurrentDirectoryPath(dir) {
            throw ConfigError.invalidValue(key: "chdir", value: dir, reason: "cannot change to this directory")
        }
        ConfiguredEnvironment.apply(settings.env)
        let errorLog = try LogFile(path: settings.errorLogfile)
        let accessLog = try settings.accessLogfile.map { path throws(ConfigError) in try LogFile(path: path, stdout: true) }
        if settings.daemon { Daemon.detach() }
        if settings.captureOutput { errorLog.captureStandardStreams() }
        let level = settings.logLevel
        LoggingSystem.bootstrap { _ in ErrorLogHandler(file: errorLog, level: level) }
        let logger = Logger(label: "appserver")
        let arbiter = Arbiter(config: settings, version: appServerVersion, logger: logger, errorLog: errorLog, accessLog: accessLog) {
            let fresh = try builder.build()
            try check(fresh)
            return fresh
        }
        return arbiter.run()
    }

    /// The settings as a whole, and whether the app's module is where they say.
    static func check(_ settings: ServerConfig) throws(ConfigError) {
        try settings.validate(embeddedPython: PythonInterpreter.embeddedVersion)
        try AppLocator(config: settings).check(app: try AppReference(parsing: settings.app ?? ""))
    }
}

/// `appserver reload|upgrade|status ...` talk to a running server; anything else starts one. (The
/// server's positional APP argument rules out ArgumentParser's own subcommand dispatch.) Both ways of
/// running the server call this: the launcher's (the code in a library python3.X hosts, AppServerHosted)
/// and the binary with the interpreter linked in (AppServerEmbedded).
public enum AppServerMain {
    static let controlCommands: [String: ParsableCommand.Type] = [
        "reload": ReloadCommand.self, "upgrade": UpgradeCommand.self, "status": StatusCommand.self,
    ]

    public static func main() -> Never {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let control = arguments.first.flatMap({ controlCommands[$0] }) else {
            do {
                exit(try ServerCommand.run(arguments))
            } catch {
                fail(error.description)
            }
        }
        do {
            var command = try control.parseAsRoot(Array(arguments.dropFirst()))
            try command.run()
            exit(0)
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            let code = control.exitCode(for: error)
            if code == .success {
                control.exit(withError: error)   // --help
            }
            let message = control.message(for: error)
            FileHandle.standardError.write(Data("appserver: error: \(message)\n".utf8))
            if message.contains("Usage") == false && error is ValidationError == false {
                FileHandle.standardError.write(Data("See '\(control.configuration.commandName ?? "appserver") --help'.\n".utf8))
            }
            Foundation.exit(2)
        }
    }

    /// Usage errors exit with status 2 and one line, as Gunicorn's do (ArgumentParser would use 64).
    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("appserver: error: \(message)\n".utf8))
        exit(2)
    }
}
