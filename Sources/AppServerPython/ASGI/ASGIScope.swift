import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import NIOCore
import NIOHTTP1

/// Interned keys and constant values of ASGI messages, made once per worker (with the GIL).
final class ASGIMessages: @unchecked Sendable {
    let type = Python.interned("type")
    let body = Python.interned("body")
    let moreBody = Python.interned("more_body")
    let status = Python.interned("status")
    let headers = Python.interned("headers")
    let path = Python.interned("path")
    let httpRequest = Python.interned("http.request")
    let httpDisconnect = Python.interned("http.disconnect")
    let httpResponseStart = KnownType("http.response.start")
    let httpResponseBody = KnownType("http.response.body")
    let emptyBytes: PyRef
    let text = Python.interned("text")
    let bytes = Python.interned("bytes")
    let code = Python.interned("code")
    let reason = Python.interned("reason")
    let subprotocol = Python.interned("subprotocol")
    let webSocketConnect = Python.interned("websocket.connect")
    let webSocketReceive = Python.interned("websocket.receive")
    let webSocketDisconnect = Python.interned("websocket.disconnect")

    /// A message type told apart in every response: its interned str and its characters.
    struct KnownType: ~Copyable {
        let object: PyRef
        let text: StaticString

        init(_ text: StaticString) {
            self.text = text
            object = Python.interned(text.description)
        }
    }

    /// Whether a message's `type` is the str `known`: by identity first (an app's literal of a dotted
    /// name is not interned, so it is another object), then by its characters, read in place and
    /// compared with the known ones (PyUnicode_Compare took ~85 instructions a message for it).
    func isType(_ type: PyObjectPointer, _ known: borrowing KnownType) -> Bool {
        if type == known.object.pointer { return true }
        var length = 0
        guard let characters = appserver_latin1_view(type, &length), length == known.text.utf8CodeUnitCount else { return false }
        return memcmp(characters, known.text.utf8Start, length) == 0
    }

    init() throws(PythonError) {
        emptyBytes = try Python.bytes(UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// "200 OK" and the like, by status code 100-999 (made once per code; an array, not a Dictionary
    /// that hashed the code for every response).
    private var statusLines = [[UInt8]?](repeating: nil, count: 900)

    func statusLine(_ code: Int) -> [UInt8] {
        let index = code - 100
        if index >= 0 && index < statusLines.count, let line = statusLines[index] { return line }
        let line = Array("\(code) \(HTTPResponseStatus(statusCode: code).reasonPhrase)".utf8)
        if index >= 0 && index < statusLines.count { statusLines[index] = line }
        return line
    }

    /// `{"type": type}`.
    func simple(_ type: borrowing PyRef) throws(PythonError) -> PyRef {
        let message = try PyRef.checked(PyDict_New())
        try Python.setItem(message.pointer, self.type.pointer, type.pointer)
        return message
    }

    /// `{"type": "http.request", "body": body, "more_body": more}`.
    func request(body: borrowing PyRef, more: Bool) throws(PythonError) -> PyRef {
        let message = try PyRef.checked(PyDict_New())
        try Python.setItem(message.pointer, type.pointer, httpRequest.pointer)
        try Python.setItem(message.pointer, self.body.pointer, body.pointer)
        try Python.setItem(message.pointer, moreBody.pointer, more ? appserver_true() : appserver_false())
        return message
    }

    /// `{"type": "http.disconnect"}`.
    func disconnect() throws(PythonError) -> PyRef {
        try simple(httpDisconnect)
    }
}

/// Builds the `http` scope of a request (ASGI 3, spec version 2.3), with the GIL.
final class ASGIScopeBuilder: @unchecked Sendable {
    private let keyType = Python.interned("type"), keyAsgi = Python.interned("asgi"), keyHTTPVersion = Python.interned("http_version")
    private let keyServer = Python.interned("server"), keyClient = Python.interned("client"), keyScheme = Python.interned("scheme")
    private let keyMethod = Python.interned("method"), keyRootPath = Python.interned("root_path"), keyPath = Python.interned("path")
    private let keyRawPath = Python.interned("raw_path"), keyQueryString = Python.interned("query_string")
    private let keyHeaders = Python.interned("headers"), keyState = Python.interned("state"), keySubprotocols = Python.interned("subprotocols")
    private let keyExtensions = Python.interned("extensions")
    private let http = Python.interned("http")
    private let websocket = Python.interned("websocket")
    private let ws = Python.interned("ws")
    private let https = Python.interned("https")
    private let wss = Python.interned("wss")
    private let headerMap: HeaderMapMode
    private let version11 = Python.interned("1.1")
    private let version10 = Python.interned("1.0")
    private let asgiVersion: PyRef
    /// `{"http.response.pathsend": {}}` when files may go out with sendfile(2), else nil (no `extensions`).
    private let extensions: PyRef?
    private let rootPath: PyRef
    private let rootPathBytes: [UInt8]
    /// The common methods' objects, found by the method's bytes.
    private var methods: HeaderNameCache
    /// Lower-cased header names as bytes objects, by the name as the client spelled it (bounded).
    private var headerNames = HeaderNameCache(limit: 256)
    /// `(host, port)` tuples: a connection's requests, and all requests for the server's own address, share one.
    private var addressTuples = PyObjectCache<SocketAddress>(limit: 4096)
    /// The same for IPv4 addresses (nearly every peer), found without hashing a SocketAddress.
    private var ipv4Tuples = IPv4TupleCache(limit: 4096)

    private var template: PyRef?
    /// The template's method (GET), compared by identity to skip replacing it.
    private var templateMethod: PyObjectPointer?

    /// The request id's header name, lower case, and as a bytes object, for an id made here.
    private let requestIDHeader: [UInt8]
    private let requestIDName: PyRef?

    init(rootPath: String, headerMap: HeaderMapMode = .drop, requestIDHeader: String = "", pathsend: Bool = true) throws(PythonError) {
        self.headerMap = headerMap
        methods = try HeaderNameCache.commonMethods()
        self.requestIDHeader = Array(requestIDHeader.lowercased().utf8)
        requestIDName = requestIDHeader.isEmpty ? nil : try Python.bytes(Array(requestIDHeader.lowercased().utf8))
        asgiVersion = try PyRef.checked(PyDict_New())
        try Python.setItem(asgiVersion.pointer, Python.interned("version"), Python.interned("3.0"))
        try Python.setItem(asgiVersion.pointer, Python.interned("spec_version"), Python.interned("2.3"))
        if pathsend {
            let extensions = try PyRef.checked(PyDict_New())
            try Python.setItem(extensions.pointer, Python.interned("http.response.pathsend"), try PyRef.checked(PyDict_New()))
            self.extensions = consume extensions
        } else {
            extensions = nil
        }
        self.rootPath = try Python.str(rootPath)
        self.rootPathBytes = Array(rootPath.utf8)
        // Every scope starts as a copy of this dict (PyDict_Copy clones the table in one piece): its
        // keys, with the values most requests share; None where each request sets its own. Filled as any
        // dict of str keys is (not presized), its table has CPython's str-keys layout: small enough for
        // CPython's own allocator, where the general layout of a presized dict went to malloc.
        self.template = try PyRef.checked(PyDict_New())
        let dict = self.template.pointer!
        func set(_ key: borrowing PyRef, _ value: PyObjectPointer) throws(PythonError) { try Python.setItem(dict, key.pointer, value) }
        templateMethod = Array("GET".utf8).withUnsafeBytes { methods.find($0) }
        try set(keyType, http.pointer)
        // Shared by every request, as Granian shares it (Uvicorn makes one a request): apps read it.
        try set(keyAsgi, asgiVersion.pointer)
        try set(keyHTTPVersion, version11.pointer)
        try set(keyScheme, http.pointer)
        try set(keyMethod, templateMethod!)
        try set(keyRootPath, self.rootPath.pointer)
        for key in [keyPath.pointer, keyRawPath.pointer, keyQueryString.pointer, keyHeaders.pointer, keyClient.pointer, keyServer.pointer,
                    keyState.pointer] {
            try Python.setItem(dict, key, appserver_none())
        }
        // One dict for every request, in the template, as `asgi`: a copy (a GC-tracked dict made and
        // freed) cost ~600 instructions a request, 2% of an ASGI hello (RESULTS.md). Apps read it.
        if let extensions = extensions.pointer { try set(keyExtensions, extensions) }
    }

    /// The `websocket` scope: as `http`, without `method`, with scheme `ws` and the offered subprotocols.
    func buildWebSocket(_ request: RequestInfo, state: PyObjectPointer) throws(PythonError) -> PyRef {
        let scope = try build(request, state: state)
        try Python.setItem(scope.pointer, keyType.pointer, websocket.pointer)
        try Python.setItem(scope.pointer, keyScheme.pointer, request.isSecure ? wss.pointer : ws.pointer)
        if PyDict_DelItem(scope.pointer, keyMethod.pointer) != 0 { throw PythonError() }
        // Path Send is an http extension; a websocket has none of appserver's.
        if extensions.pointer != nil && PyDict_DelItem(scope.pointer, keyExtensions.pointer) != 0 { throw PythonError() }
        let offered = WebSocketHandshake.subprotocols(request)
        let list = try PyRef.checked(PyList_New(offered.count))
        for (index, name) in offered.enumerated() { PyList_SetItem(list.pointer, index, try Python.str(name).take()) }
        try Python.setItem(scope.pointer, keySubprotocols.pointer, list.pointer)
        return scope
    }

    /// A new `http` scope.
    func build(_ request: RequestInfo, state: PyObjectPointer) throws(PythonError) -> PyRef {
        // From the template: only what differs from its values is set below.
        let scope = try PyRef.checked(PyDict_Copy(template.pointer!))
        let dict = scope.pointer
        func set(_ key: borrowing PyRef, _ value: borrowing PyRef) throws(PythonError) { try Python.setItem(dict, key.pointer, value.pointer) }
        if request.version.minor == 0 { try set(keyHTTPVersion, version10) }
        if request.isSecure { try set(keyScheme, https) }
        if let method = request.head.withMethod({ methods.find($0) }) {
            if method != templateMethod { try Python.setItem(dict, keyMethod.pointer, method) }
        } else {
            try set(keyMethod, try Python.str(request.method))
        }

        try request.head.withTarget({ (target) throws(PythonError) in
            let (path, query) = splitTarget(target)
            let pathView = UnsafeRawBufferPointer(rebasing: target[path])
            if rootPathBytes.isEmpty && !pathView.isEmpty && !pathView.contains(UInt8(ascii: "%")) {
                // The common case: both come from the target's bytes as they are, nothing copied first.
                try set(keyRawPath, try Python.bytes(pathView))
                try set(keyPath, try PyRef.checked(PyUnicode_DecodeUTF8(pathView.baseAddress!.assumingMemoryBound(to: CChar.self), pathView.count, "replace")))
                try set(keyQueryString, try Python.bytes(UnsafeRawBufferPointer(rebasing: target[query])))
                return
            }
            // As Uvicorn: `path` and `raw_path` include the root path; `path` is percent-decoded UTF-8.
            let pathBytes = path.isEmpty ? [UInt8(ascii: "/")] : Array(target[path])
            try set(keyRawPath, try Python.bytes(rootPathBytes.isEmpty ? pathBytes : rootPathBytes + pathBytes))
            let decodedPath = percentDecoded(pathBytes)
            let decoded = rootPathBytes.isEmpty ? decodedPath : rootPathBytes + decodedPath
            let text = try PyRef.checked(decoded.withUnsafeBufferPointer {
                PyUnicode_DecodeUTF8(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count, "replace")
            })
            try set(keyPath, text)
            try set(keyQueryString, try Python.bytes(UnsafeRawBufferPointer(rebasing: target[query])))
        })

        try set(keyHeaders, try headerList(request))
        if let client = request.origin?.client {
            try set(keyClient, try Python.tuple(try Python.str(client.host), try Python.int(client.port)))
        } else {
            try set(keyClient, try address(request.remoteAddress))
        }
        if let server = request.origin?.server {
            try set(keyServer, try Python.tuple(try Python.str(server.host), try Python.int(server.port)))
        } else {
            try set(keyServer, try address(request.localAddress))
        }
        try set(keyState, try PyRef.checked(PyDict_Copy(state)))
        return scope
    }

    /// `[(name, value), ...]` as bytes, names lower case. A request id made here is one more header,
    /// as if the front end had sent it (it replaces one that was not a plausible id).
    private func headerList(_ request: RequestInfo) throws(PythonError) -> PyRef {
        let madeID = request.requestIDMade ? request.madeRequestID : nil
        let capacity = request.head.headers.count + (madeID == nil ? 0 : 1)
        let list = try PyRef.checked(PyList_New(capacity))
        var index = 0
        try request.head.headers.forEach({ (name, value) throws(PythonError) in
            if madeID != nil && RequestHeaders.equalsLowercased(name, requestIDHeader) { return }
            // header_map = drop: a name with '_' is left out (frameworks map header names to
            // CGI-style keys too, where X_User would pass for X-User).
            guard let nameObject = try headerName(name) else { return }
            PyList_SetItem(list.pointer, index, try Python.tuple(nameObject, try Python.bytes(value)).take())
            index += 1
        })
        if let madeID, let requestIDName = requestIDName.pointer {
            var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            let value = try PyRef.checked(withUnsafeMutableBytes(of: &digits) { raw in
                RequestID.writeMade(madeID, to: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
                return PyBytes_FromStringAndSize(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
            })
            PyList_SetItem(list.pointer, index, try Python.tuple(PyRef(retaining: requestIDName), value).take())
            index += 1
        }
        // Slots left empty (dropped names) go: a list must not hold NULLs.
        if index < capacity && PyList_SetSlice(list.pointer, index, capacity, nil) != 0 { throw PythonError() }
        return list
    }

    /// The lower-cased name as bytes, or nil for a name that header_map drops.
    private func headerName(_ name: UnsafeRawBufferPointer) throws(PythonError) -> PyRef? {
        if let known = headerNames.find(name) { return PyRef(retaining: known) }
        if headerMap == .drop && name.contains(UInt8(ascii: "_")) { return nil }
        let lowered = name.map { c in c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c }
        return PyRef(retaining: try headerNames.insert(Python.bytes(lowered), for: name))
    }

    /// `(host, port)` of an IP address; None for a unix socket or nothing known.
    private func address(_ address: SocketAddress?) throws(PythonError) -> PyRef {
        guard let address else { return .noneObject }
        let key = IPv4TupleCache.key(address)
        if let key, let known = ipv4Tuples.find(key) { return PyRef(retaining: known) }
        if key == nil, let known = addressTuples[address] { return PyRef(retaining: known) }
        guard let host = address.ipAddress, let port = address.port else { return .noneObject }
        let tuple = try Python.tuple(Python.str(host), Python.int(port))
        if let key { return PyRef(retaining: try ipv4Tuples.insert(tuple, for: key)) }
        return PyRef(retaining: try addressTuples.insert(tuple, for: address))
    }
}

/// `%XX` sequences decoded; anything malformed is kept as it is (WSGI's PATH_INFO and ASGI's path).
func percentDecoded(_ input: [UInt8]) -> [UInt8] {
    guard input.contains(UInt8(ascii: "%")) else { return input }
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(input.count)
    var i = 0
    while i < input.count {
        if input[i] == UInt8(ascii: "%"), i + 2 < input.count, let high = hex(input[i + 1]), let low = hex(input[i + 2]) {
            out.append(high << 4 | low)
            i += 3
        } else {
            out.append(input[i])
            i += 1
        }
    }
    return out
}
