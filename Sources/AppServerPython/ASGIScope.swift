import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import NIOCore
import NIOHTTP1

/// Interned keys and constant values of ASGI messages, made once per worker (with the GIL).
final class ASGIMessages: @unchecked Sendable {
    let type = PyUnicode_InternFromString("type")!
    let body = PyUnicode_InternFromString("body")!
    let moreBody = PyUnicode_InternFromString("more_body")!
    let status = PyUnicode_InternFromString("status")!
    let headers = PyUnicode_InternFromString("headers")!
    let httpRequest = PyUnicode_InternFromString("http.request")!
    let httpDisconnect = PyUnicode_InternFromString("http.disconnect")!
    let emptyBytes = PyBytes_FromStringAndSize(nil, 0)!
    let text = PyUnicode_InternFromString("text")!
    let bytes = PyUnicode_InternFromString("bytes")!
    let code = PyUnicode_InternFromString("code")!
    let reason = PyUnicode_InternFromString("reason")!
    let subprotocol = PyUnicode_InternFromString("subprotocol")!
    let webSocketConnect = PyUnicode_InternFromString("websocket.connect")!
    let webSocketReceive = PyUnicode_InternFromString("websocket.receive")!
    let webSocketDisconnect = PyUnicode_InternFromString("websocket.disconnect")!

    /// "200 OK" and the like, by status code (made once per code).
    private var statusLines: [Int: [UInt8]] = [:]

    func statusLine(_ code: Int) -> [UInt8] {
        if let line = statusLines[code] { return line }
        let line = Array("\(code) \(HTTPResponseStatus(statusCode: code).reasonPhrase)".utf8)
        if statusLines.count < 1000 { statusLines[code] = line }
        return line
    }

    /// `{"type": type}`; a new reference.
    func simple(_ type: PyObjectPointer) -> PyObjectPointer {
        let message = PyDict_New()!
        PyDict_SetItem(message, self.type, type)
        return message
    }

    /// `{"type": "http.request", "body": body, "more_body": more}` (body stolen); a new reference.
    func request(body: PyObjectPointer, more: Bool) -> PyObjectPointer {
        let message = PyDict_New()!
        PyDict_SetItem(message, type, httpRequest)
        PyDict_SetItem(message, self.body, body)
        PyDict_SetItem(message, moreBody, more ? appserver_true() : appserver_false())
        Py_DecRef(body)
        return message
    }

    /// `{"type": "http.disconnect"}`; a new reference.
    func disconnect() -> PyObjectPointer {
        let message = PyDict_New()!
        PyDict_SetItem(message, type, httpDisconnect)
        return message
    }
}

/// Builds the `http` scope of a request (ASGI 3, spec version 2.3), with the GIL.
final class ASGIScopeBuilder: @unchecked Sendable {
    private let keys = (type: interned("type"), asgi: interned("asgi"), httpVersion: interned("http_version"),
                        server: interned("server"), client: interned("client"), scheme: interned("scheme"),
                        method: interned("method"), rootPath: interned("root_path"), path: interned("path"),
                        rawPath: interned("raw_path"), queryString: interned("query_string"), headers: interned("headers"),
                        state: interned("state"), subprotocols: interned("subprotocols"))
    private let http = interned("http")
    private let websocket = interned("websocket")
    private let ws = interned("ws")
    private let https = interned("https")
    private let wss = interned("wss")
    private let headerMap: HeaderMapMode
    private let version11 = interned("1.1")
    private let version10 = interned("1.0")
    private let asgiVersion: PyObjectPointer
    private let rootPath: PyObjectPointer
    private let rootPathBytes: [UInt8]
    private var methods: [String: PyObjectPointer] = [:]
    /// Lower-cased header names as bytes objects, by the name as the client spelled it (bounded).
    private var headerNames: [String: PyObjectPointer?] = [:]
    private var addressTuples: [SocketAddress: PyObjectPointer] = [:]

    /// The request id's header name, lower case, and as a bytes object, for an id made here.
    private let requestIDHeader: [UInt8]
    private let requestIDName: PyObjectPointer?

    init(rootPath: String, headerMap: HeaderMapMode = .drop, requestIDHeader: String = "") {
        self.headerMap = headerMap
        self.requestIDHeader = Array(requestIDHeader.lowercased().utf8)
        requestIDName = requestIDHeader.isEmpty ? nil : bytes(Array(requestIDHeader.lowercased().utf8))
        asgiVersion = PyDict_New()!
        PyDict_SetItemString(asgiVersion, "version", PyUnicode_InternFromString("3.0"))
        PyDict_SetItemString(asgiVersion, "spec_version", PyUnicode_InternFromString("2.3"))
        self.rootPath = interned(rootPath)
        self.rootPathBytes = Array(rootPath.utf8)
        for method in ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] { methods[method] = interned(method) }
    }

    /// A new scope (a new reference), or nil with a Python exception set.
    /// The `websocket` scope: as `http`, without `method`, with scheme `ws` and the offered subprotocols.
    func buildWebSocket(_ request: RequestInfo, state: PyObjectPointer) -> PyObjectPointer? {
        guard let scope = build(request, state: state) else { return nil }
        PyDict_SetItem(scope, keys.type, websocket)
        PyDict_SetItem(scope, keys.scheme, request.isSecure ? wss : ws)
        PyDict_DelItem(scope, keys.method)
        let offered = WebSocketHandshake.subprotocols(request)
        if let list = PyList_New(offered.count) {
            for (index, name) in offered.enumerated() { PyList_SetItem(list, index, PyUnicode_FromString(name)) }
            PyDict_SetItem(scope, keys.subprotocols, list)
            Py_DecRef(list)
        }
        return scope
    }

    func build(_ request: RequestInfo, state: PyObjectPointer) -> PyObjectPointer? {
        // Sized for its keys at once (a dict re-hashes as it grows past 5 and 10 entries).
        guard let scope = _PyDict_NewPresized(16) else { return nil }
        func set(_ key: PyObjectPointer, _ value: PyObjectPointer) { PyDict_SetItem(scope, key, value) }
        func setNew(_ key: PyObjectPointer, _ value: PyObjectPointer?) {
            guard let value else { PyErr_Clear(); return }
            PyDict_SetItem(scope, key, value)
            Py_DecRef(value)
        }
        set(keys.type, http)
        setNew(keys.asgi, PyDict_Copy(asgiVersion))
        set(keys.httpVersion, request.version.minor == 0 ? version10 : version11)
        set(keys.scheme, request.isSecure ? https : http)
        if let method = methods[request.method] { set(keys.method, method) } else { setNew(keys.method, PyUnicode_FromString(request.method)) }
        set(keys.rootPath, rootPath)

        request.head.withTarget { target in
            let (path, query) = splitTarget(target)
            // As Uvicorn: `path` and `raw_path` include the root path; `path` is percent-decoded UTF-8.
            let pathBytes = path.isEmpty ? [UInt8(ascii: "/")] : Array(target[path])
            setNew(keys.rawPath, bytes(rootPathBytes.isEmpty ? pathBytes : rootPathBytes + pathBytes))
            let decodedPath = percentDecoded(pathBytes)
            let decoded = rootPathBytes.isEmpty ? decodedPath : rootPathBytes + decodedPath
            setNew(keys.path, decoded.withUnsafeBufferPointer {
                PyUnicode_DecodeUTF8(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count, "replace")
            })
            setNew(keys.queryString, PyBytes_FromStringAndSize(UnsafeRawBufferPointer(rebasing: target[query]).baseAddress?.assumingMemoryBound(to: CChar.self), query.count))
        }

        let headers = request.headers
        // A request id made here is one more header, as if the front end had sent it (it replaces one
        // that was not a plausible id).
        let madeID = request.requestIDMade ? request.madeRequestID : nil
        let capacity = headers.count + (madeID == nil ? 0 : 1)
        if let list = PyList_New(capacity) {
            var index = 0
            headers.forEach { name, value in
                if madeID != nil && RequestHeaders.equalsLowercased(name, requestIDHeader) { return }
                // header_map = drop: a name with '_' is left out (frameworks map header names to
                // CGI-style keys too, where X_User would pass for X-User).
                guard let nameObject = headerName(String(decoding: name, as: UTF8.self)) else { return }
                let valueObject = PyBytes_FromStringAndSize(value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count)
                PyList_SetItem(list, index, appserver_tuple2(nameObject, valueObject))   // steals
                index += 1
            }
            if let madeID, let requestIDName {
                Py_IncRef(requestIDName)
                var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
                let value = withUnsafeMutableBytes(of: &digits) { raw in
                    RequestID.writeMade(madeID, to: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
                    return PyBytes_FromStringAndSize(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
                }
                PyList_SetItem(list, index, appserver_tuple2(requestIDName, value))
                index += 1
            }
            if index < capacity { PyList_SetSlice(list, index, capacity, nil) }
            setNew(keys.headers, list)
        }
        if let client = request.origin?.client {
            setNew(keys.client, appserver_tuple2(PyUnicode_FromString(client.host), PyLong_FromLong(client.port)))
        } else {
            setNew(keys.client, address(request.remoteAddress))
        }
        if let server = request.origin?.server {
            setNew(keys.server, appserver_tuple2(PyUnicode_FromString(server.host), PyLong_FromLong(server.port)))
        } else {
            setNew(keys.server, address(request.localAddress))
        }
        setNew(keys.state, PyDict_Copy(state))
        return scope
    }

    /// The lower-cased name as bytes (a new reference), or nil for a name that header_map drops.
    private func headerName(_ name: String) -> PyObjectPointer? {
        if let known = headerNames[name] {
            guard let known else { return nil }
            Py_IncRef(known)
            return known
        }
        if headerMap == .drop && name.utf8.contains(UInt8(ascii: "_")) {
            if headerNames.count < 256 { headerNames[name] = .some(nil) }
            return nil
        }
        let object = bytes(Array(name.lowercased().utf8))
        if headerNames.count < 256 {
            Py_IncRef(object)
            headerNames[name] = object
        }
        return object
    }

    /// `(host, port)` of an IP address; None for a unix socket or nothing known. The tuples are
    /// kept: a connection's requests, and all requests for the server's own address, share one.
    private func address(_ address: SocketAddress?) -> PyObjectPointer {
        if let address, let known = addressTuples[address] { return retained(known) }
        guard let address, let host = address.ipAddress, let port = address.port else {
            Py_IncRef(appserver_none())
            return appserver_none()
        }
        let tuple = appserver_tuple2(PyUnicode_FromString(host), PyLong_FromLong(port))!
        if addressTuples.count >= 4096 {
            for tuple in addressTuples.values { Py_DecRef(tuple) }
            addressTuples.removeAll(keepingCapacity: true)
        }
        addressTuples[address] = retained(tuple)
        return tuple
    }
}

private func interned(_ text: String) -> PyObjectPointer {
    PyUnicode_InternFromString(text)!
}

/// A bytes object of `data`; a new reference.
func bytes(_ data: [UInt8]) -> PyObjectPointer {
    data.withUnsafeBufferPointer {
        PyBytes_FromStringAndSize(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count)!
    }
}

/// A bytes object of the UTF-8 of `text`, without an intermediate array for native strings.
func bytes<Text: StringProtocol>(utf8Of text: Text) -> PyObjectPointer {
    text.utf8.withContiguousStorageIfAvailable {
        PyBytes_FromStringAndSize(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count)!
    } ?? bytes(Array(text.utf8))
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
