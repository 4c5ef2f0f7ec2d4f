import Testing
@testable import AppServerConfig

@Suite struct TOMLReaderTests {
    @Test func readsScalarsArraysAndTables() throws {
        let text = """
            # a comment
            bind = ["127.0.0.1:8000", 'unix:/run/a.sock']   # trailing comment
            workers = 1_000
            ratio = 0.5
            debug = true
            name = "a \\"quoted\\" \\u00e9 word"
            multi = [
              1,
              2,
            ]
            [logging]
            level = "info"
            """
        let entries = try TOMLReader.parse(text)
        let values = Dictionary(uniqueKeysWithValues: entries.map { ($0.key, $0.value) })
        #expect(values["bind"] == .array([.string("127.0.0.1:8000"), .string("unix:/run/a.sock")]))
        #expect(values["workers"] == .integer(1000))
        #expect(values["ratio"] == .float(0.5))
        #expect(values["debug"] == .boolean(true))
        #expect(values["name"] == .string("a \"quoted\" \u{e9} word"))
        #expect(values["multi"] == .array([.integer(1), .integer(2)]))
        #expect(values["logging.level"] == .string("info"))
        #expect(entries.first { $0.key == "logging.level" }?.line == 12)
    }

    @Test(arguments: [
        ("workers = ", "line 1"),
        ("workers = 2\nworkers = 3", "line 2"),
        ("name = \"unterminated", "unterminated"),
        ("x = [1, 2", "line 1"),
        ("= 3", "line 1"),
        ("t = { a = 1 }", "inline tables"),
    ])
    func rejectsBadInputWithItsLine(text: String, fragment: String) {
        #expect {
            try TOMLReader.parse(text)
        } throws: { error in
            "\(error)".contains(fragment)
        }
    }
}

@Suite struct BindAddressTests {
    @Test func parsesGunicornForms() throws {
        #expect(try BindAddress(parsing: "127.0.0.1:8000") == .tcp(host: "127.0.0.1", port: 8000))
        #expect(try BindAddress(parsing: "[::1]:9000") == .tcp(host: "::1", port: 9000))
        #expect(try BindAddress(parsing: ":8080") == .tcp(host: "127.0.0.1", port: 8080))
        #expect(try BindAddress(parsing: "8081") == .tcp(host: "127.0.0.1", port: 8081))
        #expect(try BindAddress(parsing: "localhost") == .tcp(host: "localhost", port: 8000))
        #expect(try BindAddress(parsing: "unix:/run/app.sock") == .unix(path: "/run/app.sock"))
        #expect(try BindAddress(parsing: "[::1]:9000").description == "[::1]:9000")
    }

    @Test(arguments: ["unix:", "[::1", "[::1]9000", "::1:9000", "host:99999", "host:http"])
    func rejectsMalformedAddresses(text: String) {
        #expect(throws: ConfigError.self) { try BindAddress(parsing: text) }
    }
}

@Suite struct ServerConfigTests {
    @Test func setsValuesByEitherSpelling() throws {
        var config = ServerConfig()
        try config.set("max-requests", .string("100"), source: "cli")
        try config.set("max_requests_jitter", .integer(10), source: "file")
        try config.set("env", .array([.string("A=1"), .string("B=x=y")]), source: "cli")
        try config.set("pythonpath", .string("a, b,,c"), source: "cli")
        try config.set("log-level", .string("WARN"), source: "cli")
        #expect(config.maxRequests == 100 && config.maxRequestsJitter == 10)
        #expect(config.env == ["A": "1", "B": "x=y"])
        #expect(config.pythonpath == ["a", "b", "c"])
        #expect(config.logLevel == .warning)
    }

    @Test func rejectsBadValuesWithOneClearMessage() {
        var config = ServerConfig()
        #expect(throws: ConfigError.invalidValue(key: "workers", value: "0", reason: "must be from 1 to 1024")) {
            try config.set("workers", .string("0"), source: "cli")
        }
        #expect(throws: ConfigError.unknownKey("wrkers", source: "cli")) {
            try config.set("wrkers", .integer(2), source: "cli")
        }
        #expect(throws: ConfigError.self) { try config.set("timeout", .boolean(true), source: "cli") }
    }

    @Test func appReferenceDefaultsToApplication() throws {
        #expect(try AppReference(parsing: "mysite.wsgi") == AppReference(module: "mysite.wsgi", callable: "application"))
        #expect(try AppReference(parsing: "pkg.mod:make.app").callable == "make.app")
        #expect(throws: ConfigError.self) { try AppReference(parsing: "bad module:app") }
        #expect(throws: ConfigError.self) { try AppReference(parsing: "mod:") }
    }

    @Test func validationNeedsAnApp() {
        #expect(throws: ConfigError.self) { try ServerConfig().validate() }
    }
}
