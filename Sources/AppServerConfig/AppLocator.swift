import Foundation

/// Finds the file of an app's top-level module before any worker is forked, so that a typo in the app
/// name is one clear message at start-up rather than a crash loop of workers.
public struct AppLocator {
    public var searchPaths: [String]

    public init(config: ServerConfig, pythonPrefix: String = "/usr") {
        let cwd = config.chdir ?? FileManager.default.currentDirectoryPath
        var paths = [cwd] + config.pythonpath.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 }
        let fm = FileManager.default
        for root in [config.virtualenv.map { $0 + "/lib" }, pythonPrefix + "/lib", pythonPrefix + "/local/lib"].compactMap({ $0 }) {
            for dir in ((try? fm.contentsOfDirectory(atPath: root)) ?? []).sorted() where dir.hasPrefix("python3") {
                paths.append(root + "/" + dir)
                paths.append(root + "/" + dir + "/site-packages")
                paths.append(root + "/" + dir + "/dist-packages")
            }
        }
        paths.append(pythonPrefix + "/lib/python3/dist-packages")
        searchPaths = paths
    }

    /// The path of the module's top-level package or file, or nil when no search path holds it.
    public func locate(module: String) -> String? {
        let top = String(module.split(separator: ".").first ?? "")
        let fm = FileManager.default
        for dir in searchPaths {
            let base = dir + "/" + top
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: base, isDirectory: &isDir), isDir.boolValue { return base }
            if fm.fileExists(atPath: base + ".py") { return base + ".py" }
            if let entries = try? fm.contentsOfDirectory(atPath: dir),
               let ext = entries.first(where: { $0.hasPrefix(top + ".") && ($0.hasSuffix(".so") || $0.hasSuffix(".pyc")) }) {
                return dir + "/" + ext
            }
        }
        return nil
    }

    public func check(app: AppReference) throws(ConfigError) {
        guard locate(module: app.module) != nil else {
            throw ConfigError.app("cannot find the app module '\(app.module)': no \(app.module.split(separator: ".").first ?? "").py or package in \(searchPaths.prefix(3).joined(separator: ", "))\(searchPaths.count > 3 ? " or the virtualenv" : "") (check --chdir, --pythonpath and --virtualenv)")
        }
    }
}
