import Foundation
import Testing
@testable import AppServerConfig

@Suite struct VirtualenvVersionTests {
    func virtualenv(_ pyvenv: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("venv-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try pyvenv.write(toFile: dir + "/pyvenv.cfg", atomically: true, encoding: .utf8)
        return dir
    }

    @Test func readsVersionOrVersionInfo() throws {
        #expect(ServerConfig.pythonVersion(ofVirtualenv: try virtualenv("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n")) == "3.11")
        #expect(ServerConfig.pythonVersion(ofVirtualenv: try virtualenv("home = /x\nimplementation = CPython\nversion_info = 3.12.1.final.0\n")) == "3.12")
        #expect(ServerConfig.pythonVersion(ofVirtualenv: try virtualenv("home = /x\n")) == nil)
    }

    @Test func aVirtualenvOfAnotherPythonIsRefusedWithWhatToDo() throws {
        var config = ServerConfig()
        config.app = "app:app"
        config.virtualenv = try virtualenv("version = 3.13.0\n")
        #expect(throws: ConfigError.self) { try config.validate(embeddedPython: "3.11") }
        do {
            try config.validate(embeddedPython: "3.11")
        } catch {
            #expect(error.description.contains("made by Python 3.13, and this appserver embeds Python 3.11"))
        }
        try config.validate()                          // no embedded version given: not checked
        config.virtualenv = try virtualenv("version = 3.11.9\n")
        try config.validate(embeddedPython: "3.11")
    }
}
