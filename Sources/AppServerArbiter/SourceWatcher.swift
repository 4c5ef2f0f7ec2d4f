import Foundation
import Logging

/// `--reload` (development): watches the app's Python files with inotify, the directory trees the app
/// is imported from (the working directory and --pythonpath, without virtualenvs, hidden and cache
/// directories), and `--reload-extra-file`s (paths or glob patterns). The arbiter reloads when one
/// changes, as on HUP: new workers import the new code, and if it does not import (a syntax error),
/// the old workers keep serving and the traceback is in the log.
final class SourceWatcher {
    let descriptor: CInt
    private var directories: [CInt: String] = [:]
    /// Extra files: the directory watched for each, and the names (or patterns) that count in it.
    private var extraPatterns: [String: [String]] = [:]
    private let logger: Logger
    private static let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE)
    private static let skipped: Set<String> = ["__pycache__", "node_modules", "site-packages", "dist-packages"]
    private static let mostDirectories = 10_000

    init?(roots: [String], extraFiles: [String], logger: Logger) {
        self.logger = logger
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else {
            logger.error("--reload: inotify is not available (\(String(cString: strerror(errno)))); code changes will not restart the workers")
            return nil
        }
        for root in roots { watchTree(root) }
        for pattern in extraFiles {
            let path = pattern.hasPrefix("/") ? pattern : FileManager.default.currentDirectoryPath + "/" + pattern
            let directory = (path as NSString).deletingLastPathComponent
            extraPatterns[directory, default: []].append((path as NSString).lastPathComponent)
            if !directories.values.contains(directory) { watch(directory) }
        }
        logger.info("--reload: watching \(directories.count) directories for changes to Python files\(extraFiles.isEmpty ? "" : " and " + extraFiles.joined(separator: ", "))")
    }

    private func watch(_ directory: String) {
        let wd = inotify_add_watch(descriptor, directory, Self.mask)
        if wd >= 0 { directories[wd] = directory }
    }

    private func watchTree(_ root: String) {
        var pending = [root]
        let fm = FileManager.default
        while let directory = pending.popLast(), directories.count < Self.mostDirectories {
            if fm.fileExists(atPath: directory + "/pyvenv.cfg") { continue }   // a virtualenv: not the app's code
            watch(directory)
            for name in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where !name.hasPrefix(".") && !Self.skipped.contains(name) {
                var isDirectory: ObjCBool = false
                let path = directory + "/" + name
                if fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
                   (try? fm.destinationOfSymbolicLink(atPath: path)) == nil {
                    pending.append(path)
                }
            }
        }
    }

    /// The changed files that matter (Python sources and extra files), reading every pending event.
    func readChanges() -> [String] {
        var changed: [String] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { return changed }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= count {
                let (wd, mask, length) = buffer.withUnsafeBytes { raw -> (Int32, UInt32, Int) in
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (event.wd, event.mask, Int(event.len))
                }
                let nameStart = offset + MemoryLayout<inotify_event>.size
                let nameBytes = buffer[nameStart..<min(count, nameStart + length)].prefix { $0 != 0 }
                let name = String(decoding: nameBytes, as: UTF8.self)
                offset = nameStart + length
                guard let directory = directories[wd] else { continue }
                let path = directory + "/" + name
                if mask & UInt32(IN_ISDIR) != 0 {
                    if mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0, !name.hasPrefix("."), !Self.skipped.contains(name) { watchTree(path) }
                    continue
                }
                if mask & UInt32(IN_CREATE) != 0 { continue }   // its IN_CLOSE_WRITE follows
                if name.hasSuffix(".py") || (extraPatterns[directory] ?? []).contains(where: { fnmatch($0, name, 0) == 0 }) {
                    changed.append(path)
                }
            }
        }
    }

    func closeInChild() {
        close(descriptor)
    }
}
