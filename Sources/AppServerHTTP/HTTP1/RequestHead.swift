import NIOCore
#if canImport(Glibc)
import Glibc
#endif
import NIOHTTP1

/// A request head as the client sent it: its bytes, and where the method, target and fields are in
/// them. Nothing is decoded on the way: WSGI and ASGI get the exact bytes (latin-1 for WSGI).
public struct RequestHead: Sendable {
    /// The head's bytes (`headers.bytes`, from the request line to the empty line that ends it) and
    /// where its fields are in them. Stored, not made when asked for: a RequestHeaders made from the
    /// head's bytes and fields cost a retain and a release of each every time it was read (12 calls
    /// of the runtime a WSGI hello request); a stored one is lent to the callee as it is.
    public let headers: RequestHeaders
    public let parsed: HTTP1Head
    public var bytes: ByteBuffer { headers.bytes }
    /// The method (a token, so ASCII), as text for logs and metrics; `withMethod` for its bytes.
    public var method: String { withMethod { String(decoding: $0, as: UTF8.self) } }
    public var version: HTTPVersion { HTTPVersion(major: 1, minor: parsed.minorVersion) }

    init(bytes: ByteBuffer, parsed: HTTP1Head) {
        // `parsed.fields` kept beside the bytes: read out of `parsed` for each use, it copied the whole
        // parsed head (an outlined copy and a retain); from here it is a load.
        self.headers = RequestHeaders(bytes: bytes, fields: Self.fields(of: parsed), watched: parsed.watchedFields)
        self.parsed = parsed
    }

    /// A parsed head's fields, read through a borrow: read in place, `parsed.fields` copied the whole
    /// parsed head first (the optimizer's copy of a large struct; checked in the disassembly).
    @inline(never)
    private static func fields(of parsed: borrowing HTTP1Head) -> [HTTP1Field] { parsed.fields }

    /// Whether the method is exactly `name` (methods are case-sensitive).
    public func methodIs(_ name: StaticString) -> Bool {
        withMethod { $0.count == name.utf8CodeUnitCount && ($0.isEmpty || memcmp($0.baseAddress!, name.utf8Start, $0.count) == 0) }
    }

    /// The method's bytes (no String is made for each request).
    @inlinable
    public func withMethod<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try headers.bytes.withUnsafeReadableBytes { try body(UnsafeRawBufferPointer(rebasing: $0[parsed.method])) }
    }

    /// The request target's bytes; an error the body throws is thrown, with its type (the scope's and the
    /// environ's path raise PythonError through it, with no wrapper closure and result optional).
    @inlinable   // specialized where it is called: a generic call here cost a metadata lookup a request
    public func withTarget<Result, Failure: Error>(_ body: (UnsafeRawBufferPointer) throws(Failure) -> Result) throws(Failure) -> Result {
        let outcome: Swift.Result<Result, Failure> = headers.bytes.withUnsafeReadableBytes { raw in
            do throws(Failure) {
                return .success(try body(UnsafeRawBufferPointer(rebasing: raw[parsed.target])))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    /// The target as text, for logs (bytes that are not UTF-8 are replaced).
    public var uri: String { withTarget { String(decoding: $0, as: UTF8.self) } }

    /// Parses a whole head (tests, and requests made by the server itself).
    public init(parsing text: String, limits: HTTP1ParserLimits = HTTP1ParserLimits()) throws {
        var buffer = ByteBuffer(string: text)
        var parser = HTTP1Parser(limits: limits)
        let (event, consumed) = buffer.withUnsafeReadableBytes { parser.next($0) }
        switch event {
        case .head(let head):
            self.init(bytes: buffer.readSlice(length: consumed)!, parsed: head)
        case .error(let error):
            throw error
        default:
            throw HTTP1ParseError(400, "not a whole request head")
        }
    }
}

/// The fields of a request head, read in place.
public struct RequestHeaders: Sendable {
    @usableFromInline let bytes: ByteBuffer
    @usableFromInline let fields: [HTTP1Field]
    /// The fields that may have one of the parser's watched names (`HTTP1Head.watchedFields`).
    let watched: UInt64

    init(bytes: ByteBuffer, fields: [HTTP1Field], watched: UInt64 = .max) {
        self.bytes = bytes
        self.fields = fields
        self.watched = watched
    }

    public var count: Int { fields.count }

    /// The fields the parser noted as maybe having a watched name (`HTTP1ParserLimits.watchedNames`), in
    /// order, with their index: every field with such a name, and maybe a few others. The server's readers
    /// of X-Forwarded-* and the request id pass over a browser's twenty-odd other fields this way.
    func forEachWatched(_ body: (_ index: Int, _ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void) {
        guard watched != 0 else { return }
        bytes.withUnsafeReadableBytes { raw in
            func visit(_ index: Int) {
                let field = fields[index]
                body(index, UnsafeRawBufferPointer(rebasing: raw[field.name]), UnsafeRawBufferPointer(rebasing: raw[field.value]))
            }
            var rest = watched
            while rest != 0 {
                let index = rest.trailingZeroBitCount
                rest &= rest &- 1
                // Bits past the last field (`.max`: a head that says nothing of its fields) end the walk.
                guard index < fields.count else { return }
                if index < 63 {
                    visit(index)
                } else {
                    (63..<fields.count).forEach(visit)   // bit 63 stands for field 63 and every one after it
                }
            }
        }
    }

    /// The value of the field at `index` (as `forEachWatched` numbers them).
    func withValue<Result>(ofField index: Int, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        bytes.withUnsafeReadableBytes { body(UnsafeRawBufferPointer(rebasing: $0[fields[index].value])) }
    }

    /// Each field's name and value bytes, in order (the names as the client spelled them); the first
    /// error the body throws ends the walk and is thrown. Inlined where it is called (the environ's and
    /// the scope's headers): called through a closure and a thunk, a field cost ~40 instructions more.
    @inlinable
    public func forEach<Failure: Error>(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        var failure: Failure?
        bytes.withUnsafeReadableBytes { raw in
            for field in fields {
                do throws(Failure) {
                    try body(UnsafeRawBufferPointer(rebasing: raw[field.name]), UnsafeRawBufferPointer(rebasing: raw[field.value]))
                } catch {
                    failure = error
                    return
                }
            }
        }
        if let failure { throw failure }
    }

    /// The first value of a field (name compared without case), as text for logs and handshakes.
    public func first(name: String) -> String? {
        let wanted = Array(name.lowercased().utf8)
        var found: String?
        forEach { n, v in
            if found == nil && Self.equalsLowercased(n, wanted) { found = String(decoding: v, as: UTF8.self) }
        }
        return found
    }

    /// Every value of a field, its comma-separated elements apart and trimmed.
    public func tokens(name: String) -> [String] {
        let wanted = Array(name.lowercased().utf8)
        var result: [String] = []
        forEach { n, v in
            guard Self.equalsLowercased(n, wanted) else { return }
            for element in String(decoding: v, as: UTF8.self).split(separator: ",") {
                let trimmed = element.trimmingCharacters(in: " \t")
                if !trimmed.isEmpty { result.append(String(trimmed)) }
            }
        }
        return result
    }

    /// Every value of a field, as text (for tests).
    public subscript(name: String) -> [String] {
        let wanted = Array(name.lowercased().utf8)
        var result: [String] = []
        forEach { n, v in if Self.equalsLowercased(n, wanted) { result.append(String(decoding: v, as: UTF8.self)) } }
        return result
    }

    /// Whether `bytes` equal a lower-case ASCII name, without case.
    public static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lower: [UInt8]) -> Bool {
        lower.withUnsafeBytes { AppServerHTTP.equalsLowercased(bytes, $0) }
    }
}

/// What the request decoders (HTTP/1.1, uwsgi) hand the connection: a head, body bytes, the end of a
/// request, or why the bytes are refused.
public enum RequestPart: Sendable {
    case head(RequestHead)
    case body(ByteBuffer)
    case end
    case invalid(HTTP1ParseError)
}
