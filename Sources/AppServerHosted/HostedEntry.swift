import AppServerArbiter
import AppServerCLI
import Foundation

/// Where a python3.X process that the launcher started enters the server (called by the preloaded
/// library, Sources/AppServerPreload, before python3.X's own main ever runs). The launcher names
/// itself and this library in the environment; they are taken out of it here, so that the app and the
/// processes it starts see the environment the server was given.
@_cdecl("appserver_hosted_main")
public func appserverHostedMain() -> Int32 {
    let environment = ProcessInfo.processInfo.environment
    do {
        try HostedImage.adopt(launcher: environment[HostedImage.launcherVariable],
                              library: environment[HostedImage.libraryVariable])
    } catch {
        FileHandle.standardError.write(Data("appserver: error: \(error)\n".utf8))
        return 1
    }
    unsetenv(HostedImage.launcherVariable)
    unsetenv(HostedImage.libraryVariable)
    AppServerMain.main()
}
