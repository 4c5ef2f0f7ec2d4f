import AppServerConfig
import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// The objects every WSGI environ shares, made once per worker (with the GIL held): interned keys,
/// constant values, the `wsgi.*` helpers. `build` makes one request's environ from them.
final class EnvironConstants: @unchecked Sendable {
    private let keyRequestMethod = Python.interned("REQUEST_METHOD")
    private let keyScriptName = Python.interned("SCRIPT_NAME")
    private let keyPathInfo = Python.interned("PATH_INFO")
    private let keyForwardedScriptName = Python.interned("HTTP_SCRIPT_NAME")
    private let keyForwardedPathInfo = Python.interned("HTTP_PATH_INFO")
    private let keyQueryString = Python.interned("QUERY_STRING")
    private let keyRawURI = Python.interned("RAW_URI")
    /// The environ key of the request id's header (HTTP_X_REQUEST_ID), for an id made here.
    private var requestIDKey: PyRef?
    private let keyContentType = Python.interned("CONTENT_TYPE")
    private let keyContentLength = Python.interned("CONTENT_LENGTH")
    private let keyServerName = Python.interned("SERVER_NAME")
    private let keyServerPort = Python.interned("SERVER_PORT")
    private let keyServerProtocol = Python.interned("SERVER_PROTOCOL")
    private let keyServerSoftware = Python.interned("SERVER_SOFTWARE")
    private let keyRemoteAddr = Python.interned("REMOTE_ADDR")
    private let keyRemotePort = Python.interned("REMOTE_PORT")
    private let keyVersion = Python.interned("wsgi.version")
    private let keyScheme = Python.interned("wsgi.url_scheme")
    private let keyInput = Python.interned("wsgi.input")
    private let keyErrors = Python.interned("wsgi.errors")
    private let keyMultithread = Python.interned("wsgi.multithread")
    private let keyMultiprocess = Python.interned("wsgi.multiprocess")
    private let keyRunOnce = Python.interned("wsgi.run_once")
    private let keyFileWrapper = Python.interned("wsgi.file_wrapper")
    private let keyInputTerminated = Python.interned("wsgi.input_terminated")

    private let version: PyRef
    private let scheme = Python.interned("http")
    private let secureScheme = Python.interned("https")
    private let zeroPort = Python.interned("0")
    private let headerMap: HeaderMapMode
    private let emptyString = Python.interned("")
    private let protocol11 = Python.interned("HTTP/1.1")
    private let protocol10 = Python.interned("HTTP/1.0")
    private let software = Python.interned("appserver")
    private let multithread: PyRef
    private let multiprocess: PyRef
    private let errors: PyRef
    private let emptyInput: PyRef
    /// Borrowed from the glue module, which lives as long as the process.
    let inputClass: PyObjectPointer
    let fileWrapperClass: PyObjectPointer
    let tooLargeClass: PyObjectPointer
    let disconnectedClass: PyObjectPointer
    let badRequestClass: PyObjectPointer
    /// The common methods' objects, found by the method's bytes.
    private var methods: HeaderNameCache
    /// `HTTP_*` keys by header name as the client spelled it; bounded so odd clients cannot grow it.
    private var headerKeys = HeaderNameCache(limit: 512)
    /// A uwsgi packet's variable names (nginx's uwsgi_params, uwsgi_param lines), likewise bounded.
    private var gatewayKeys = HeaderNameCache(limit: 128)
    /// SERVER_NAME and SERVER_PORT made for the last Host header, and that header's bytes: a worker
    /// mostly serves one Host, so these are made once, not per request.
    private var lastHost: [UInt8] = []
    private var lastServerName: PyRef?
    private var lastServerPort: PyRef?
    /// REMOTE_ADDR and REMOTE_PORT of IPv4 peers, as a pair of strings by address and port.
    private var remotes = IPv4TupleCache(limit: 4096)
    private let defaultPort = Python.interned("80")
    /// Every environ starts as a copy of this dict: the keys each request has, with the values most
    /// requests share. PyDict_Copy clones a dict's table in one piece, so a request pays one copy and
    /// a few replacements instead of twenty insertions.
    private var template: PyRef?
    /// The template's REQUEST_METHOD (GET), compared by identity to skip replacing it.
    private var templateMethod: PyObjectPointer?
    /// Keys an environ holds before its table (the template's size) grows, and is re-hashed into a new one.
    private var templateRoom = 0
    /// Environs that outgrew the template's table since it was made, and the most keys one had.
    private var outgrown = 0
    private var mostKeys = 0
    /// False once a presized template turned out no roomier (a CPython without presizing): no more tries.
    private var templateCanGrow = true
    /// The most keys a template is made with room for (a hundred headers and the CGI keys).
    private static let mostTemplateRoom = 160

    /// Where the app is mounted (Gunicorn's SCRIPT_NAME from the environment), without a trailing
    /// slash; empty when it is at the root. A request's path must lie below it; PATH_INFO is the rest.
    private let scriptName: [UInt8]
    private let scriptNameObject: PyRef

    init(glue: Glue, errors sink: LogSink, multithread: Bool, multiprocess: Bool, headerMap: HeaderMapMode = .drop,
         requestIDHeader: String = "", scriptName: String = "") throws(PythonError) {
        self.headerMap = headerMap
        let mount = Self.mountPoint(Array(scriptName.utf8))
        self.scriptName = mount
        scriptNameObject = try Python.latin1(mount)
        methods = try HeaderNameCache.commonMethods()
        let one = try Python.int(1), zero = try Python.int(0)
        version = try Python.tuple(one, zero)
        self.multithread = PyRef.bool(multithread)
        self.multiprocess = PyRef.bool(multiprocess)
        let write = LogSink.text.bind(to: sink)
        errors = try Python.call(glue.function(glue.wsgi, "ErrorStream"), write.pointer)
        emptyInput = try Python.call(glue.function(glue.wsgi, "EmptyInput"))
        inputClass = glue.function(glue.wsgi, "InputStream")
        fileWrapperClass = glue.function(glue.wsgi, "FileWrapper")
        tooLargeClass = glue.function(glue.wsgi, "RequestEntityTooLarge")
        disconnectedClass = glue.function(glue.wsgi, "ClientDisconnected")
        badRequestClass = glue.function(glue.wsgi, "BadRequestBody")
        if !requestIDHeader.isEmpty {
            let name = Array(requestIDHeader.utf8)
            let key = try name.withUnsafeBytes { raw in Result { () throws(PythonError) in try headerKey(raw) } }.get()
            if let key { requestIDKey = PyRef(retaining: key) }
        }
        try makeTemplate()
    }

    /// The template: grown once from its own keys (see below), or presized for `room` keys.
    private func makeTemplate(room: Int? = nil) throws(PythonError) {
        template = try PyRef.checked(room.map { appserver_dict_presized($0) } ?? PyDict_New())
        let dict = template.pointer!
        func set(_ key: borrowing PyRef, _ value: PyObjectPointer) throws(PythonError) { try Python.setItem(dict, key.pointer, value) }
        templateMethod = Array("GET".utf8).withUnsafeBytes { methods.find($0) }
        try set(keyRequestMethod, templateMethod!)
        try set(keyScriptName, scriptNameObject.pointer)
        try set(keyPathInfo, emptyString.pointer)
        try set(keyQueryString, emptyString.pointer)
        try set(keyRawURI, emptyString.pointer)
        try set(keyServerProtocol, protocol11.pointer)
        try set(keyServerSoftware, software.pointer)
        try set(keyServerName, emptyString.pointer)
        try set(keyServerPort, emptyString.pointer)
        try set(keyRemoteAddr, emptyString.pointer)
        try set(keyRemotePort, emptyString.pointer)
        try set(keyVersion, version.pointer)
        try set(keyScheme, scheme.pointer)
        try set(keyInput, emptyInput.pointer)
        try set(keyErrors, errors.pointer)
        try set(keyMultithread, multithread.pointer)
        try set(keyMultiprocess, multiprocess.pointer)
        try set(keyRunOnce, appserver_false())
        try set(keyFileWrapper, fileWrapperClass)
        try set(keyInputTerminated, appserver_true())
        // Room for about twenty headers: the copies keep the table's size, and a dict that grows is
        // re-hashed into a new table. Grown from its own keys, the table keeps CPython's str-keys layout,
        // small enough for glibc's per-thread cache: each request's copy is a cached block.
        if room == nil && appserver_dict_grow_once(dict) != 0 { throw PythonError() }
        templateRoom = appserver_dict_room(dict)
        if templateRoom < 0 { throw PythonError() }
    }

    /// A worker whose requests keep outgrowing the template's table (a browser's twenty-odd headers behind
    /// a proxy, nginx's uwsgi_params) gets a template with room for them: re-hashing a table as it grows,
    /// every request, costs more than copying a bigger one (which is past glibc's per-thread cache: the
    /// grown template stays for requests that need it). It only grows, up to `mostTemplateRoom`.
    private func noteOutgrown(keys: Int) throws(PythonError) {
        outgrown += 1
        mostKeys = max(mostKeys, keys)
        guard outgrown >= 32, templateCanGrow, templateRoom < Self.mostTemplateRoom else { return }
        outgrown = 0
        var previous = template.take()
        let previousRoom = templateRoom
        do {
            try makeTemplate(room: min(mostKeys + mostKeys / 4, Self.mostTemplateRoom))
        } catch {
            template = previous.take()
            templateRoom = previousRoom
            throw error
        }
        if templateRoom <= previousRoom {
            // No presizing in this CPython (3.14): keep the template there was, and stop trying.
            template = previous.take()
            templateRoom = previousRoom
            templateCanGrow = false
        }
    }

    /// A new environ for one request; the app thread's natives read its wsgi.input.
    func build(for exchange: HTTPExchange, serial: Int, natives: WSGIThread.Natives) throws(PythonError) -> PyRef {
        let request = exchange.request
        // From the template: only what differs from its values is set below.
        let environ = try PyRef.checked(PyDict_Copy(template.pointer!))
        let dict = environ.pointer
        func set(_ key: borrowing PyRef, _ value: borrowing PyRef) throws(PythonError) { try Python.setItem(dict, key.pointer, value.pointer) }
        if let method = request.head.withMethod({ methods.find($0) }) {
            if method != templateMethod { try Python.setItem(dict, keyRequestMethod.pointer, method) }
        } else {
            try set(keyRequestMethod, try Python.latin1(Substring(request.method)))
        }

        if request.version.minor == 0 { try set(keyServerProtocol, protocol10) }

        // SERVER_NAME and SERVER_PORT from the Host header or the connection, unless a uwsgi packet gives
        // both (its variables go in last).
        var serverNameSet = request.origin?.gatewayHasServer ?? false
        var forwardedMount: [UInt8]?
        let trusted = request.fromTrustedForwarder
        try request.head.headers.forEach({ (name, value) throws(PythonError) in
            if !serverNameSet && name.count == 4 && RequestHeaders.equalsLowercased(name, hostName) && !value.isEmpty {
                serverNameSet = true
                try setServerName(dict, host: value)
            }
            // Gunicorn's forwarder_headers: from a trusted forwarder, SCRIPT_NAME (where nginx mounted the
            // app: `proxy_set_header SCRIPT_NAME /api`) and PATH_INFO pass though their names have '_'.
            if trusted && ForwarderHeader.isOne(name) {
                if name.count == ForwarderHeader.scriptName.count {
                    forwardedMount = Self.mountPoint(Array(value))
                    return try set(keyForwardedScriptName, try Python.latin1(value))
                }
                return try set(keyForwardedPathInfo, try Python.latin1(value))
            }
            try setHeader(dict, name: name, value: value)
        })
        if !serverNameSet { try setServerName(dict, local: request.localAddress) }

        // PATH_INFO is the path's bytes after percent-decoding, read as latin-1 (PEP 3333); every
        // other value is the request's own bytes, each one latin-1 character.
        try request.head.withTarget({ (target) throws(PythonError) in
            let (path, query) = splitTarget(target)
            let pathBytes = UnsafeRawBufferPointer(rebasing: target[path])
            let mount = forwardedMount ?? scriptName
            if forwardedMount != nil { try set(keyScriptName, try Python.latin1(mount)) }
            if mount.isEmpty || request.viaUWSGI {
                // (A uwsgi packet brings its own SCRIPT_NAME and PATH_INFO, as nginx's uwsgi_param sets them.)
                try set(keyPathInfo, try percentDecodedLatin1(pathBytes))
            } else if let below = Self.path(pathBytes, below: mount) {
                if below.isEmpty { try Python.setItem(dict, keyPathInfo.pointer, emptyString.pointer) } else { try set(keyPathInfo, try percentDecodedLatin1(below)) }
            } else {
                // Gunicorn's answer too: a 500 and the reason in the error log.
                throw PythonError.runtimeError("Configuration problem: request path '\(String(decoding: pathBytes, as: UTF8.self))' is not below SCRIPT_NAME '\(String(decoding: mount, as: UTF8.self))'")
            }
            if !query.isEmpty {
                try set(keyQueryString, try Python.latin1(UnsafeRawBufferPointer(rebasing: target[query])))
            }
            try set(keyRawURI, try Python.latin1(target))
        })

        if request.requestIDMade, let key = requestIDKey.pointer {
            // Made here: the app sees it as the header, as if the front end had sent it.
            var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            let value = try PyRef.checked(withUnsafeMutableBytes(of: &digits) { raw in
                RequestID.writeMade(request.madeRequestID, to: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
                return PyUnicode_DecodeLatin1(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count, nil)
            })
            try Python.setItem(dict, key, value)
        }
        if request.origin?.gatewayHasRemote == true {
            // Set below, from the packet's REMOTE_ADDR and REMOTE_PORT as they are.
        } else if let client = request.origin?.client {
            // A trusted proxy's X-Forwarded-For, or the REMOTE_ADDR of a uwsgi packet.
            try set(keyRemoteAddr, try Python.latin1(Substring(client.host)))
            if client.port == 0 { try set(keyRemotePort, zeroPort) } else { try set(keyRemotePort, try Python.latin1(Substring(String(client.port)))) }
        } else {
            try setRemote(dict, request.remoteAddress)
        }

        if request.isSecure { try set(keyScheme, secureScheme) }
        if request.hasBody {
            let serialObject = try Python.int(serial)
            try set(keyInput, try Python.call(inputClass, natives.read.pointer, natives.readline.pointer, serialObject.pointer))
        }
        // A uwsgi packet's CGI variables go in as nginx sent them (SCRIPT_NAME, PATH_INFO, REMOTE_ADDR,
        // SERVER_NAME, HTTPS, DOCUMENT_ROOT, ...), as uWSGI does; each byte one latin-1 character.
        try request.origin?.gatewayVariables?.forEach({ (name, value) throws(PythonError) in
            let text = try Python.latin1(value)   // bound: a temporary's reference may be dropped before the call
            try Python.setItem(dict, try gatewayKey(name), text.pointer)
        })
        let keys = PyDict_Size(dict)
        if keys > templateRoom { try noteOutgrown(keys: keys) }
        return environ
    }

    /// The path's part below a mount point (below `/api`, `/api/x` is `/x` and `/api` itself an empty
    /// one); nil for a path elsewhere (`/other`, `/apix`).
    static func path(_ path: UnsafeRawBufferPointer, below mount: [UInt8]) -> UnsafeRawBufferPointer? {
        guard path.count >= mount.count, path.prefix(mount.count).elementsEqual(mount) else { return nil }
        let rest = UnsafeRawBufferPointer(rebasing: path[mount.count...])
        return rest.isEmpty || rest.first == UInt8(ascii: "/") ? rest : nil
    }

    /// A SCRIPT_NAME as a mount point: no trailing slash ("/" is the root, empty).
    static func mountPoint(_ value: [UInt8]) -> [UInt8] {
        var mount = value
        while mount.last == UInt8(ascii: "/") { mount.removeLast() }
        return mount
    }

    /// One request header into the environ: CONTENT_TYPE, CONTENT_LENGTH or HTTP_*; a repeated
    /// header becomes one value, comma-separated (RFC 9110 5.3), byte for byte.
    private func setHeader(_ environ: PyObjectPointer, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws(PythonError) {
        switch name.count {
        case 12 where RequestHeaders.equalsLowercased(name, contentTypeName):
            return try Python.setItem(environ, keyContentType.pointer, try Python.latin1(value))
        case 14 where RequestHeaders.equalsLowercased(name, contentLengthName):
            return try Python.setItem(environ, keyContentLength.pointer, try Python.latin1(value))
        default: break
        }
        guard let key = try headerKey(name) else { return }
        // One lookup for the usual field seen once; a repeated one is joined to the first.
        let text = try Python.latin1(value)
        let existing = try Python.setDefault(environ, key, text)
        guard existing != text.pointer else { return }
        var length = 0
        // Every value here was made from latin-1 bytes: one byte a character.
        guard let pointer = appserver_latin1_view(existing, &length) else { throw PythonError.valueError("a header value is not latin-1") }
        var joined = Array(UnsafeRawBufferPointer(start: pointer, count: length))
        joined.append(UInt8(ascii: ","))
        joined.append(contentsOf: value)
        try Python.setItem(environ, key, try Python.latin1(joined))
    }

    private func setRemote(_ environ: PyObjectPointer, _ address: SocketAddress?) throws(PythonError) {
        guard let address, address.port != nil else {
            try Python.setItem(environ, keyRemoteAddr.pointer, emptyString.pointer)
            try Python.setItem(environ, keyRemotePort.pointer, emptyString.pointer)
            return
        }
        func set(_ pair: PyObjectPointer) throws(PythonError) {
            try Python.setItem(environ, keyRemoteAddr.pointer, PyTuple_GetItem(pair, 0))
            try Python.setItem(environ, keyRemotePort.pointer, PyTuple_GetItem(pair, 1))
        }
        guard let key = IPv4TupleCache.key(address) else {
            let pair = try remotePair(address)   // IPv6: made each time (bound here, so it outlives `set`)
            return try set(pair.pointer)
        }
        // The pair of strings a connection's requests all share (and every connection from the same port).
        if let known = remotes.find(key) { return try set(known) }
        try set(remotes.insert(remotePair(address), for: key))
    }

    /// `(REMOTE_ADDR, REMOTE_PORT)` of an address, as strings.
    private func remotePair(_ address: SocketAddress) throws(PythonError) -> PyRef {
        var text: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)   // 48 bytes
        return try withUnsafeMutableBytes(of: &text) { (raw) throws(PythonError) -> PyRef in
            let host = try Python.latin1(UnsafeRawBufferPointer(rebasing: raw[..<address.writeIPText(into: raw)]))
            let port = try Python.latin1(UnsafeRawBufferPointer(rebasing: raw[..<writeDecimal(address.port ?? 0, into: raw)]))
            return try Python.tuple(host, port)
        }
    }

    /// The environ key of a header (borrowed from the cache), or nil for a name that is dropped.
    private func headerKey(_ name: UnsafeRawBufferPointer) throws(PythonError) -> PyObjectPointer? {
        if let cached = headerKeys.find(name) { return cached }
        // Names with '_' are dropped (header_map = drop): HTTP_X_USER could otherwise be forged by
        // sending X_User. `dangerous` maps them anyway; `refuse` answered 400 before the app was called.
        if headerMap != .dangerous && name.contains(UInt8(ascii: "_")) { return nil }
        let text = "HTTP_" + String(decoding: name.map { c -> UInt8 in
            if c == UInt8(ascii: "-") { return UInt8(ascii: "_") }
            if c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") { return c - 32 }
            return c
        }, as: UTF8.self)
        return try headerKeys.insert(Python.interned(text), for: name)
    }

    /// A uwsgi variable's name as the environ's key, kept: the same few names come in every packet, and
    /// a kept str has its hash already (a new one was decoded and SipHashed for every variable).
    private func gatewayKey(_ name: UnsafeRawBufferPointer) throws(PythonError) -> PyObjectPointer {
        if let cached = gatewayKeys.find(name) { return cached }
        return try gatewayKeys.insert(Python.latin1(name), for: name)
    }

    /// SERVER_NAME and SERVER_PORT from the Host header's bytes (as Gunicorn: the port after the last
    /// colon, or after an IPv6 literal's bracket; 80 when none is given).
    private func setServerName(_ environ: PyObjectPointer, host: UnsafeRawBufferPointer) throws(PythonError) {
        if host.count == lastHost.count, let name = lastServerName.pointer, let port = lastServerPort.pointer,
           lastHost.withUnsafeBytes({ memcmp($0.baseAddress!, host.baseAddress!, host.count) == 0 }) {
            try Python.setItem(environ, keyServerName.pointer, name)
            try Python.setItem(environ, keyServerPort.pointer, port)
            return
        }
        let nameEnd: Int, portStart: Int?
        if host[0] == UInt8(ascii: "["), let close = host.firstIndex(of: UInt8(ascii: "]")) {
            nameEnd = close + 1
            portStart = nameEnd < host.count && host[nameEnd] == UInt8(ascii: ":") ? nameEnd + 1 : nil
        } else if let colon = host.lastIndex(of: UInt8(ascii: ":")) {
            nameEnd = colon
            portStart = colon + 1
        } else {
            nameEnd = host.count
            portStart = nil
        }
        let name = try Python.latin1(UnsafeRawBufferPointer(rebasing: host[..<nameEnd]))
        let port = try portStart.map { (start) throws(PythonError) in try Python.latin1(UnsafeRawBufferPointer(rebasing: host[start...])) }
            ?? defaultPort.copy()
        try Python.setItem(environ, keyServerName.pointer, name.pointer)
        try Python.setItem(environ, keyServerPort.pointer, port.pointer)
        lastHost = Array(host)
        lastServerName = consume name
        lastServerPort = consume port
    }

    /// SERVER_NAME and SERVER_PORT without a Host header (HTTP/1.0): the address the client connected to.
    private func setServerName(_ environ: PyObjectPointer, local: SocketAddress?) throws(PythonError) {
        let name = try Python.latin1(Substring(local?.ipAddress ?? "localhost"))
        let port = try Python.latin1(Substring(String(local?.port ?? 80)))
        try Python.setItem(environ, keyServerName.pointer, name.pointer)
        try Python.setItem(environ, keyServerPort.pointer, port.pointer)
    }
}

private let hostName = Array("host".utf8)
private let contentTypeName = Array("content-type".utf8)
private let contentLengthName = Array("content-length".utf8)

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

func percentDecodedLatin1(_ path: UnsafeRawBufferPointer) throws(PythonError) -> PyRef {
    // An absolute-form target without a path: "/".
    if path.isEmpty { return try Python.latin1(Substring("/")) }
    guard path.contains(UInt8(ascii: "%")) else { return try Python.latin1(path) }
    return try Python.latin1(percentDecoded(Array(path)))
}
