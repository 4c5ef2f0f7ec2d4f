import AppServerArbiter
import ArgumentParser
import Foundation

/// What `reload`, `upgrade` and `status` share: which arbiter, and how long to wait for its answer.
struct ControlTarget: ParsableArguments {
    @Option(name: [.customShort("p"), .long], help: ArgumentHelp("The arbiter: its pid, or its pid file (-p of the server).", valueName: "PID|FILE"))
    var pid: String

    @Option(help: "Seconds to wait for the outcome (systemd's reload timeout is 90).")
    var timeout: Double = 90

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be more than 0 seconds") }
    }

    /// The pid given, or read from the pid file given.
    func arbiterPID() throws -> pid_t {
        if let pid = pid_t(pid), pid > 0 { return pid }
        guard let text = try? String(contentsOfFile: pid, encoding: .utf8) else {
            throw ValidationError("--pid: '\(pid)' is neither a pid nor a readable pid file")
        }
        guard let value = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), value > 0 else {
            throw ValidationError("--pid: the pid file '\(pid)' does not hold a pid")
        }
        return value
    }

    /// Asks the arbiter; prints its answer and exits 0, or prints the reason and exits 1.
    func ask(_ request: ControlProtocol.Request) throws {
        let target = try arbiterPID()
        do {
            print(try ControlClient.send(request, to: target, timeout: timeout))
        } catch {
            FileHandle.standardError.write(Data("appserver \(request.rawValue): \(error.description)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appserver reload",
        abstract: "Reload a running server's app and config (HUP); exit 0 once the new workers serve.",
        discussion: """
            Reloads as HUP does: the config is read again, new workers import the app, old workers retire as \
            the new ones boot. If the binary on disk has changed since the server started (a package upgrade), \
            the server upgrades itself instead (as with USR2). Waits for the outcome: exit 0 when the new \
            generation serves, 1 with the reason when it failed (the old workers keep serving then). \
            For systemd units: ExecReload=appserver reload --pid $MAINPID
            """)

    @OptionGroup var target: ControlTarget
    @Flag(inversion: .prefixedNo, help: "Wait for the outcome; --no-wait only sends HUP.")
    var wait = true

    func run() throws {
        if !wait { return try signal(SIGHUP, target: target) }
        try target.ask(.reload)
    }
}

struct UpgradeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appserver upgrade",
        abstract: "Replace a running server by the binary on disk (USR2); exit 0 once the new arbiter serves.",
        discussion: """
            The server starts the binary now on disk as a new arbiter, which inherits the listening sockets \
            and boots its workers; then the old arbiter hands over (systemd's MAINPID too) and drains. Exit 0 \
            when the new arbiter serves, 1 with the reason when it failed (the old one keeps serving then).
            """)

    @OptionGroup var target: ControlTarget
    @Flag(inversion: .prefixedNo, help: "Wait for the outcome; --no-wait only sends USR2.")
    var wait = true

    func run() throws {
        if !wait { return try signal(SIGUSR2, target: target) }
        try target.ask(.upgrade)
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appserver status",
        abstract: "Print a running server's status: workers, generation, requests served, version.",
        discussion: "--json prints one JSON object (what the metrics endpoint's /status gives): readiness, each worker's pid, state, requests, heartbeat, memory and CPU.")

    @OptionGroup var target: ControlTarget
    @Flag(help: "Print the status as JSON, for scripts.")
    var json = false

    func run() throws {
        try target.ask(json ? .statusJSON : .status)
    }
}

private func signal(_ signal: CInt, target: ControlTarget) throws {
    let pid = try target.arbiterPID()
    if kill(pid, signal) != 0 {
        FileHandle.standardError.write(Data("appserver: cannot signal pid \(pid): \(String(cString: strerror(errno)))\n".utf8))
        throw ExitCode.failure
    }
}
