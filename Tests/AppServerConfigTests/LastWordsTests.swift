import Logging
import Testing
@testable import AppServerConfig

@Suite struct LastWordsTests {
    /// Zeroed memory, as a fresh worker slot is, for the body.
    func withWords(_ body: (LastWords) -> Void) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: LastWords.capacity, alignment: 8)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: LastWords.capacity)
        defer { memory.deallocate() }
        body(LastWords(memory: memory))
    }

    @Test func nothingSaidIsNothingHeard() {
        withWords { words in #expect(words.heard() == nil) }
    }

    @Test func whatTheWorkerSaysTheArbiterHearsWithItsLevel() {
        withWords { words in
            let traceback = "Exception in worker process while importing 'app':\nTraceback (most recent call last):\n  ...\nKeyError: 'SETTING' — é"
            words.say(.critical, traceback)
            let heard = words.heard()
            #expect(heard?.level == .critical && heard?.message == traceback)
        }
    }

    @Test func aLongMessageKeepsItsFirstLineAndItsEnd() {
        withWords { words in
            let frames = (0..<5000).map { "  File \"deep.py\", line \($0), in recurse" }.joined(separator: "\n")
            let message = "Exception in worker process while importing 'deep':\n" + frames + "\nRecursionError: maximum recursion depth exceeded"
            words.say(.error, message)
            let heard = words.heard()?.message ?? ""
            #expect(heard.utf8.count <= LastWords.messageLimit && heard.utf8.count > LastWords.messageLimit - 100)
            #expect(heard.hasPrefix("Exception in worker process while importing 'deep':\n[... \(message.utf8.count) bytes in all; the middle is left out ...]\n"))
            #expect(heard.hasSuffix("line 4999, in recurse\nRecursionError: maximum recursion depth exceeded"))
        }
    }

    @Test func aMessageThatFitsIsKeptWhole() {
        let bytes = [UInt8](repeating: UInt8(ascii: "x"), count: LastWords.messageLimit)
        #expect(LastWords.fitted(bytes) == bytes)
        #expect(LastWords.fitted(bytes + [UInt8(ascii: "y")]).count == LastWords.messageLimit)
    }
}
