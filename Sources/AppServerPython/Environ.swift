import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// The objects every WSGI environ shares, made once per worker (with the GIL held): interned keys,
/// constant values, the `wsgi.*` helpers. `build` makes one request's environ from them.
final class EnvironConstants: @unchecked Sendable {
    private let keyRequestMethod = interned("REQUEST_METHOD")
    private let keyScriptName = interned("SCRIPT_NAME")
    private let keyPathInfo = interned("PATH_INFO")
    private let keyQueryString = interned("QUERY_STRING")
    private let keyRawURI = interned("RAW_URI")
    /// The environ key of the request id's header (HTTP_X_REQUEST_ID), for an id made here.
    private var requestIDKey: PyObjectPointer?
    private let keyContentType = interned("CONTENT_TYPE")
    private let keyContentLength = interned("CONTENT_LENGTH")
    private let keyServerName = interned("SERVER_NAME")
    private let keyServerPort = interned("SERVER_PORT")
    private let keyServerProtocol = interned("SERVER_PROTOCOL")
    private let keyServerSoftware = interned("SERVER_SOFTWARE")
    private let keyRemoteAddr = interned("REMOTE_ADDR")
    private let keyRemotePort = interned("REMOTE_PORT")
    private let keyVersion = interned("wsgi.version")
    private let keyScheme = interned("wsgi.url_scheme")
    private let keyInput = interned("wsgi.input")
    private let keyErrors = interned("wsgi.errors")
    private let keyMultithread = interned("wsgi.multithread")
    private let keyMultiprocess = interned("wsgi.multiprocess")
    private let keyRunOnce = interned("wsgi.run_once")
    private let keyFileWrapper = interned("wsgi.file_wrapper")
    private let keyInputTerminated = interned("wsgi.input_terminated")

    private let version: PyObjectPointer
    private let scheme = interned("http")
    private let secureScheme = interned("https")
    private let zeroPort = interned("0")
    private let headerMap: HeaderMapMode
    private let emptyString = interned("")
    private let protocol11 = interned("HTTP/1.1")
    private let protocol10 = interned("HTTP/1.0")
    private let software = interned("appserver")
    private let multithread: PyObjectPointer
    private let multiprocess: PyObjectPointer
    private let errors: PyObjectPointer
    private let emptyInput: PyObjectPointer
    let inputClass: PyObjectPointer
    let fileWrapperClass: PyObjectPointer
    let tooLargeClass: PyObjectPointer
    let disconnectedClass: PyObjectPointer
    let badRequestClass: PyObjectPointer
    private var methods: [String: PyObjectPointer] = [:]
    /// `HTTP_*` keys by header name as the client spelled it; bounded so odd clients cannot grow it.
    private var headerKeys: [String: PyObjectPointer?] = [:]
    private var lastHost: (header: String, name: PyObjectPointer, port: PyObjectPointer)?

    init(namespace: PyObjectPointer, multithread: Bool, multiprocess: Bool, headerMap: HeaderMapMode = .drop, requestIDHeader: String = "") {
        self.headerMap = headerMap

        version = appserver_tuple2(PyLong_FromLong(1), PyLong_FromLong(0))
        self.multithread = multithread ? appserver_true() : appserver_false()
        self.multiprocess = multiprocess ? appserver_true() : appserver_false()
        func object(_ name: String) -> PyObjectPointer { PyDict_GetItemString(namespace, name)! }
        errors = PyObject_CallNoArgs(object("ErrorStream"))!
        emptyInput = PyObject_CallNoArgs(object("EmptyInput"))!
        inputClass = object("InputStream")
        fileWrapperClass = object("FileWrapper")
        tooLargeClass = object("RequestEntityTooLarge")
        disconnectedClass = object("ClientDisconnected")
        badRequestClass = object("BadRequestBody")
        if !requestIDHeader.isEmpty { requestIDKey = headerKey(requestIDHeader) }
        for method in ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] { methods[method] = interned(method) }
    }

    /// A new environ for one request (a new reference), or nil with a Python exception set.
    func build(for exchange: HTTPExchange, serial: Int) -> PyObjectPointer? {
        let request = exchange.request
        // Sized for the CGI keys, wsgi.* and the headers at once: growing a dict past 5, 10 and 21
        // entries re-hashes it each time.
        guard let environ = _PyDict_NewPresized(24 + request.headers.count) else { return nil }
        func set(_ key: PyObjectPointer, _ value: PyObjectPointer) { PyDict_SetItem(environ, key, value) }
        func setNew(_ key: PyObjectPointer, _ value: PyObjectPointer?) {
            guard let value else { PyErr_Clear(); return }
            PyDict_SetItem(environ, key, value)
            Py_DecRef(value)
        }
        if let method = methods[request.method] { set(keyRequestMethod, method) } else { setNew(keyRequestMethod, latin1(Substring(request.method))) }

        // PATH_INFO is the path's bytes after percent-decoding, read as latin-1 (PEP 3333); every
        // other value is the request's own bytes, each one latin-1 character.
        request.head.withTarget { target in
            let (path, query) = splitTarget(target)
            set(keyScriptName, emptyString)
            setNew(keyPathInfo, percentDecodedLatin1(UnsafeRawBufferPointer(rebasing: target[path])))
            if query.isEmpty { set(keyQueryString, emptyString) } else { setNew(keyQueryString, latin1(UnsafeRawBufferPointer(rebasing: target[query]))) }
            setNew(keyRawURI, latin1(target))
        }
        set(keyServerProtocol, request.version.minor == 0 ? protocol10 : protocol11)
        set(keyServerSoftware, software)

        request.headers.forEach { name, value in
            switch name.count {
            case 12 where RequestHeaders.equalsLowercased(name, contentTypeName):
                setNew(keyContentType, latin1(value))
                return
            case 14 where RequestHeaders.equalsLowercased(name, contentLengthName):
                setNew(keyContentLength, latin1(value))
                return
            default: break
            }
            guard let key = headerKey(String(decoding: name, as: UTF8.self)) else { return }
            if let existing = PyDict_GetItem(environ, key), let existingBytes = PyUnicode_AsLatin1String(existing) {
                // A repeated header: one value, comma-separated (RFC 9110 5.3), byte for byte.
                var length = 0
                let pointer = appserver_bytes_view(existingBytes, &length)
                var joined = Array(UnsafeRawBufferPointer(start: pointer, count: length))
                joined.append(UInt8(ascii: ","))
                joined.append(contentsOf: value)
                Py_DecRef(existingBytes)
                setNew(key, joined.withUnsafeBytes { latin1($0) })
            } else {
                setNew(key, latin1(value))
            }
        }

        if request.requestIDMade, let key = requestIDKey {
            // Made here: the app sees it as the header, as if the front end had sent it.
            var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            setNew(key, withUnsafeMutableBytes(of: &digits) { raw in
                RequestID.writeMade(request.madeRequestID, to: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
                return latin1(UnsafeRawBufferPointer(raw))
            })
        }
        setServerName(environ, host: request.headers.first(name: "host"), local: request.localAddress)
        if let client = request.origin?.client {
            // A trusted proxy's X-Forwarded-For, or the REMOTE_ADDR of a uwsgi packet.
            setNew(keyRemoteAddr, latin1(Substring(client.host)))
            if client.port == 0 { set(keyRemotePort, zeroPort) } else { setNew(keyRemotePort, PyUnicode_FromString(String(client.port))) }
        } else {
            setRemote(environ, request.remoteAddress)
        }

        set(keyVersion, version)
        set(keyScheme, request.isSecure ? secureScheme : scheme)
        if request.hasBody {
            let serialObject = PyLong_FromLong(serial)!
            setNew(keyInput, PyObject_CallOneArg(inputClass, serialObject))
            Py_DecRef(serialObject)
        } else {
            set(keyInput, emptyInput)
        }
        set(keyErrors, errors)
        set(keyMultithread, multithread)
        set(keyMultiprocess, multiprocess)
        set(keyRunOnce, appserver_false())
        set(keyFileWrapper, fileWrapperClass)
        set(keyInputTerminated, appserver_true())
        // A uwsgi packet's CGI variables go in as nginx sent them (SCRIPT_NAME, PATH_INFO, REMOTE_ADDR,
        // SERVER_NAME, HTTPS, DOCUMENT_ROOT, ...), as uWSGI does; each byte one latin-1 character.
        if let gateway = request.origin?.gatewayVariables {
            for (name, value) in gateway {
                guard let key = name.withUnsafeBytes({ latin1($0) }) else { PyErr_Clear(); continue }
                setNew(key, value.withUnsafeBytes { latin1($0) })
                Py_DecRef(key)
            }
        }
        return environ
    }

    private func setRemote(_ environ: PyObjectPointer, _ address: SocketAddress?) {
        func set(_ key: PyObjectPointer, _ value: PyObjectPointer) { PyDict_SetItem(environ, key, value) }
        func setNew(_ key: PyObjectPointer, _ value: PyObjectPointer?) {
            guard let value else { PyErr_Clear(); return }
            PyDict_SetItem(environ, key, value)
            Py_DecRef(value)
        }
        switch address {
        case .some(.v4(let address)):
            setNew(keyRemoteAddr, latin1(Substring(SocketAddress.v4(address).ipAddress ?? "")))
            setNew(keyRemotePort, PyUnicode_FromString(String(SocketAddress.v4(address).port ?? 0)))
        case .some(.v6(let address)):
            setNew(keyRemoteAddr, latin1(Substring(SocketAddress.v6(address).ipAddress ?? "")))
            setNew(keyRemotePort, PyUnicode_FromString(String(SocketAddress.v6(address).port ?? 0)))
        default:
            set(keyRemoteAddr, emptyString)
            set(keyRemotePort, emptyString)
        }
    }

    private func headerKey(_ name: String) -> PyObjectPointer? {
        if let cached = headerKeys[name] { return cached }
        // Names with '_' are dropped (header_map = drop): HTTP_X_USER could otherwise be forged by
        // sending X_User. `dangerous` maps them anyway; `refuse` answered 400 before the app was called.
        var key: PyObjectPointer?
        if headerMap == .dangerous || !name.utf8.contains(UInt8(ascii: "_")) {
            let text = "HTTP_" + String(decoding: name.utf8.map { c -> UInt8 in
                if c == UInt8(ascii: "-") { return UInt8(ascii: "_") }
                if c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") { return c - 32 }
                return c
            }, as: UTF8.self)
            key = interned(text)
        }
        if headerKeys.count < 512 { headerKeys[name] = key }
        return key
    }

    private func setServerName(_ environ: PyObjectPointer, host: String?, local: SocketAddress?) {
        if let host, let last = lastHost, last.header == host {
            PyDict_SetItem(environ, keyServerName, last.name)
            PyDict_SetItem(environ, keyServerPort, last.port)
            return
        }
        var name: Substring
        var port: String
        if let host, !host.isEmpty {
            if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
                name = host[...close]
                let rest = host[host.index(after: close)...]
                port = rest.hasPrefix(":") ? String(rest.dropFirst()) : "80"
            } else if let colon = host.lastIndex(of: ":") {
                name = host[..<colon]
                port = String(host[host.index(after: colon)...])
            } else {
                name = Substring(host)
                port = "80"
            }
        } else {
            name = Substring(local?.ipAddress ?? "localhost")
            port = String(local?.port ?? 80)
        }
        guard let nameObject = latin1(name), let portObject = latin1(Substring(port)) else { PyErr_Clear(); return }
        PyDict_SetItem(environ, keyServerName, nameObject)
        PyDict_SetItem(environ, keyServerPort, portObject)
        if let host {
            if let last = lastHost { Py_DecRef(last.name); Py_DecRef(last.port) }
            lastHost = (host, nameObject, portObject)
        } else {
            Py_DecRef(nameObject)
            Py_DecRef(portObject)
        }
    }
}

private func interned(_ text: String) -> PyObjectPointer {
    PyUnicode_InternFromString(text)!
}

private let contentTypeName = Array("content-type".utf8)
private let contentLengthName = Array("content-length".utf8)

/// A str of raw bytes read as latin-1 (WSGI's "bytes as str" rule); a new reference.
func latin1(_ bytes: UnsafeRawBufferPointer) -> PyObjectPointer? {
    PyUnicode_DecodeLatin1(bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count, nil)
}

/// A str of the text's UTF-8 bytes read as latin-1 (WSGI's "bytes as str" rule); a new reference.
func latin1(_ text: Substring) -> PyObjectPointer? {
    var text = text
    return text.withUTF8 { bytes in
        PyUnicode_DecodeLatin1(UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), bytes.count, nil)
    }
}


/// Where the path and the query are in a request target's bytes (an absolute-form target's path starts
/// after its authority; a fragment is dropped).
func splitTarget(_ target: UnsafeRawBufferPointer) -> (path: Range<Int>, query: Range<Int>) {
    var pathEnd = target.count
    var query = target.count..<target.count
    if let mark = target.firstIndex(of: UInt8(ascii: "?")) {
        pathEnd = mark
        query = (mark + 1)..<target.count
    }
    var pathStart = 0
    if target.first != UInt8(ascii: "/") && target.first != UInt8(ascii: "*") {
        // scheme://authority/path: the path starts at the first '/' after "://".
        if let colon = target[..<pathEnd].firstIndex(of: UInt8(ascii: ":")), colon + 2 < pathEnd,
           target[colon + 1] == UInt8(ascii: "/"), target[colon + 2] == UInt8(ascii: "/") {
            pathStart = target[(colon + 3)..<pathEnd].firstIndex(of: UInt8(ascii: "/")) ?? pathEnd
        }
    }
    if let fragment = target[pathStart..<pathEnd].firstIndex(of: UInt8(ascii: "#")) { pathEnd = fragment }
    if let fragment = target[query].firstIndex(of: UInt8(ascii: "#")) { query = query.lowerBound..<fragment }
    return (pathStart..<max(pathStart, pathEnd), query)
}

func percentDecodedLatin1(_ path: UnsafeRawBufferPointer) -> PyObjectPointer? {
    // An absolute-form target without a path: "/".
    if path.isEmpty { return PyUnicode_FromString("/") }
    guard path.contains(UInt8(ascii: "%")) else { return latin1(path) }
    return percentDecoded(Array(path)).withUnsafeBytes { latin1($0) }
}
