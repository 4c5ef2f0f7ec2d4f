#if canImport(Glibc)
import Glibc
#endif
import AppServerConfig
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The app side of the server: takes each request as it arrives (on the I/O thread) and answers it
/// later from any thread through the exchange.
public protocol HTTPApplication: AnyObject, Sendable {
    func handle(_ exchange: HTTPExchange)
    /// An exchange that `handle` put off with `HTTPExchange.handleAfterReads()`, now that the event
    /// loop's tick has read what it had to read. On the event loop.
    func handleAfterReads(_ exchange: HTTPExchange)
    /// The tick's put-off exchanges have all had `handleAfterReads`: what the application kept for
    /// the batch (the GIL, in sync mode) can go. On the event loop.
    func afterReadsHandled()
}

extension HTTPApplication {
    /// For an application that never puts an exchange off.
    public func handleAfterReads(_ exchange: HTTPExchange) { handle(exchange) }
    public func afterReadsHandled() {}
}

/// A connection's first bytes, kept to tell a user what reached the wrong kind of listener.
struct FirstBytes {
    /// Up to six bytes, packed inline (the first in the lowest byte): noting them allocates nothing.
    private var packed: UInt64 = 0
    /// -1 until the first read.
    private var count = -1

    mutating func note(_ buffer: ByteBuffer) {
        guard count < 0 else { return }
        count = min(6, buffer.readableBytes)
        buffer.withUnsafeReadableBytes { raw in
            for i in 0..<count { packed |= UInt64(raw[i]) << (8 * i) }
        }
    }

    private var bytes: [UInt8] { (0..<max(count, 0)).map { UInt8(truncatingIfNeeded: packed >> (8 * $0)) } }

    /// What a connection's first bytes say it was, when it was not HTTP: a hint for the log.
    var mismatchHint: String? {
        let bytes = self.bytes
        guard let first = bytes.first else { return nil }
        if first == 0 {
            return "a uwsgi packet reached an HTTP listener: serve uwsgi there (protocol = \"uwsgi\", or bind uwsgi://...), or use nginx's proxy_pass instead of uwsgi_pass"
        }
        if bytes.starts(with: ProxyHeaderParser.v2Signature.prefix(bytes.count)) || bytes.starts(with: ProxyHeaderParser.v1Prefix.prefix(bytes.count)) {
            return "a PROXY protocol header reached a listener that does not expect one: set proxy_protocol (or bind http+proxy://...), or turn it off in the front end"
        }
        return nil
    }
}

/// The server's own checks of a parsed head, after the parser's RFC 9112 ones: the body limit (413)
/// and `header_map = refuse` (400).
enum RequestHeadCheck {
    /// `fromTrustedForwarder`: SCRIPT_NAME and PATH_INFO are a trusted forwarder's to send (Gunicorn's
    /// forwarder_headers), so they do not count as names with '_'.
    static func refusal(_ head: RequestHead, limits: HTTPLimits, headerMap: HeaderMapMode,
                        fromTrustedForwarder: Bool = false) -> (status: HTTPResponseStatus, reason: String)? {
        if limits.requestBody > 0, let length = head.parsed.contentLength, length > limits.requestBody {
            return (.payloadTooLarge, "a Content-Length of \(length) bytes, over limit_request_body")
        }
        if headerMap == .refuse {
            var underscore = false
            head.headers.forEach { name, _ in
                if name.contains(UInt8(ascii: "_")) && !(fromTrustedForwarder && ForwarderHeader.isOne(name)) { underscore = true }
            }
            if underscore { return (.badRequest, "a header name with '_' (header_map = refuse)") }
        }
        return nil
    }
}

/// One HTTP/1.1 connection: keep-alive, pipelining (requests queue while one is answered), body
/// backpressure, limits, timeouts and draining. The decisions are `ConnectionStateMachine`'s; this
/// handler carries them out on the channel. The bytes of a response are made by `ResponseWriter` on
/// the app's thread.
final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler, ServerConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Turns the connection's bytes into request parts (HTTP/1.1 or uwsgi), which come back to `receive`.
    private let decoder: any RequestDecoder
    private let server: HTTPServer
    private let limits: HTTPLimits
    private let logger: Logger
    /// Who is at the other end: the socket's peer, or the client a PROXY header named.
    private let origin: ConnectionOrigin
    /// The connection speaks uwsgi: its request parts come from the uwsgi decoder with their origin.
    private let uwsgi: Bool
    /// Whether the peer's X-Forwarded-* headers are believed (forwarded_allow_ips), found once.
    private var forwardedTrusted: Bool?
    private var machine: ConnectionStateMachine
    /// The request being answered (or whose unread body is being discarded); in flight for the
    /// metrics from when it is set until it is let go, however the exchange ends.
    private var current: HTTPExchange? {
        didSet {
            guard let metrics = server.metrics, oldValue !== current else { return }
            if oldValue != nil { metrics.requestEnded() }
            if current != nil { metrics.requestStarted() }
        }
    }
    /// Bytes of the current response handed to the channel (status line, headers, body), for the metrics.
    private var responseBytes: Int64 = 0
    /// Bytes of the current response written without a promise: given back to its output budget by
    /// the next write that carries one (see writeResponse).
    private var unpromisedBytes = 0
    /// Signs of progress of the current request (body bytes read, response bytes written), and when the
    /// once-a-second sweep last saw their count change: counting costs less than reading a clock.
    private var progress = 0
    private var progressSeen = (count: -1, at: Monotonic(nanoseconds: 0))
    private var context: ChannelHandlerContext!
    /// Parts of pipelined requests that arrived while an earlier one is still answered. Most
    /// connections never queue one, and hold no storage for it (a CircularBuffer's, even of 2 parts,
    /// was 240 bytes an idle connection and ~650 instructions a new one).
    private var queued = ArrayQueue<RequestPart>()
    private var bodyPaused = false
    private var readPending = false
    /// The idle or header timeout; dated and checked by the server's once-a-second sweep, which is
    /// far cheaper than scheduling and cancelling a timer (or reading the clock) for every request.
    var deadline = SweptDeadline()
    private var requestCount = 0
    /// The peer's and our address, read once per connection (NIO takes a lock for each read).
    private var addresses: ConnectionAddresses?
    /// The channel's allocator, read once (through the channel, a call and two retains a request).
    private var allocator = ByteBufferAllocator()
    private var bodyReceived: Int64 = 0
    /// A small body is read whole before the app is called, so the app never waits for it.
    private var dispatchAtEnd = false

    /// The server's edge rules, held here: read for each request, a borrow of the server's own copy
    /// was a copy (six array retains and releases a request).
    private let edge: EdgePolicy

    init(server: HTTPServer, limits: HTTPLimits, logger: Logger, origin: ConnectionOrigin, uwsgi: Bool) {
        if uwsgi {
            self.decoder = UWSGIRequestDecoder(origin: origin, server: server)
        } else {
            var parserLimits = limits.parser
            parserLimits.watchedNames = server.edge.watchedFieldNames
            self.decoder = HTTP1RequestDecoder(limits: parserLimits)
        }
        self.server = server
        self.edge = server.edge
        self.limits = limits
        self.logger = logger
        self.origin = origin
        self.uwsgi = uwsgi
        // `--keep-alive 0` turns keep-alive off; a uwsgi connection carries one request (nginx never reuses one).
        machine = ConnectionStateMachine(keepAliveEnabled: limits.keepAlive > 0 && !uwsgi, maxBodyDiscard: limits.maxBodyDiscard)
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        allocator = context.channel.allocator
        server.register(self)
        arm(machine.opened())
    }

    func channelInactive(context: ChannelHandlerContext) {
        decoder.connectionClosed()
        deadline.clear()
        current?.abort()
        current = nil
        machine.closed()
        server.unregister(self)
        context.fireChannelInactive()
    }

    /// The context holds this handler: kept, it would keep the handler, itself and the pipeline alive
    /// after the connection is gone (some 2.5 KB a connection). Nothing uses it after this. After a
    /// websocket upgrade, what the client sent after its request goes on to the frame decoder.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        if let rest = decoder.detach() { context.fireChannelRead(NIOAny(rest)) }
    }

    /// The server drains: the response in progress (or the next one) closes the connection.
    func drain() {
        if let timer = machine.drain() { arm(timer) }
    }

    // MARK: reading

    private func bytesArrived() {
        if let timer = machine.bytesArrived() { arm(timer) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering { return }   // a client still sending after its answer: read, and thrown away
        // Bytes arrived: the header timeout starts with a request's first byte.
        bytesArrived()
        decoder.received(unwrapInboundIn(data), context: context, connection: self)
    }

    /// Not passed on: only the pipeline's tail is after this handler, and it does nothing with it (the
    /// channel reads again by itself). After an upgrade this handler is gone and the frame handlers get it.
    func channelReadComplete(context: ChannelHandlerContext) {}

    /// A request part from the decoder. Parts are consumed on their way in: a head bound out of a
    /// borrowed part was copied, a retain of its buffer and of its fields a request.
    func receive(_ part: consuming RequestPart) {
        switch machine.arrival() {
        case .queue: queued.append(part)
        case .drop: break
        case .handle: handle(part)
        }
    }

    private func handle(_ part: consuming RequestPart) {
        switch consume part {
        case .invalid(let error):
            refuse(error)
        case .head(let head):
            guard case .idle = machine.phase else { return }
            startRequest(head)
        case .body(let buffer):
            switch machine.phase {
            case .active(requestDone: false, _):
                guard let exchange = current else { return }
                bodyReceived += Int64(buffer.readableBytes)
                progress &+= 1
                if limits.requestBody > 0 && bodyReceived > limits.requestBody {
                    // A chunked body over the limit: the app's next read raises, and it answers 413.
                    exchange.body.fail(.tooLarge(limit: limits.requestBody))
                    return
                }
                if exchange.body.append(buffer) { bodyPaused = true }
            case .discarding:
                if !machine.discarded(buffer.readableBytes) { close() }
            default:
                break
            }
        case .end:
            if case .active(requestDone: false, _) = machine.phase { current?.body.finish() }
            let dispatch = dispatchAtEnd
            dispatchAtEnd = false
            switch machine.requestEnded(dispatchWaiting: dispatch) {
            case .none: break
            case .dispatch: if let exchange = current { server.application.handle(exchange) }
            case .finish(let finish): apply(finish)
            }
        }
    }

    private func startRequest(_ head: consuming RequestHead) {
        deadline.clear()
        requestCount += 1
        bodyReceived = 0
        unpromisedBytes = 0
        responseBytes = 0
        let lastAllowed = !server.requestStarted()
        if let refusal = RequestHeadCheck.refusal(head, limits: limits, headerMap: edge.headerMap,
                                                  fromTrustedForwarder: edge.headerMap == .refuse && !uwsgi && trustsForwarder()) {
            logger.debug("refused a request from \(addresses?.remote.logText ?? origin.remote.logText): \(refusal.reason)")
            server.countRefusal(Int(refusal.status.code))
            writeErrorAndClose(refusal.status)
            return
        }
        let hasBody = head.parsed.hasBody
        let addresses: ConnectionAddresses
        if let known = self.addresses {
            addresses = known
        } else {
            addresses = ConnectionAddresses(remote: origin.remote, local: origin.local)
            self.addresses = addresses
        }
        let requestOrigin: RequestOrigin?
        if uwsgi {
            requestOrigin = origin.pendingRequestOrigin
            origin.pendingRequestOrigin = nil
        } else {
            switch forwardedOrigin(head) {
            case .success(let found): requestOrigin = found
            case .failure(let reason):
                logger.debug("bad request from \(addresses.remote.logText): \(reason)")
                server.countRefusal(400)
                writeErrorAndClose(.badRequest)
                return
            }
        }
        // A request asking for an upgrade closes after its response unless the app upgrades it.
        let keepAlive = machine.requestStarted(keepAliveRequested: head.parsed.keepAlive && !head.parsed.upgrade, lastAllowed: lastAllowed)
        let contentLength = head.parsed.contentLength, chunked = head.parsed.chunked
        let expectsContinue = hasBody && head.parsed.expectsContinue
        // The locals go into the objects made of them with `consume`: their lifetimes end at the call, so
        // each reference moves in. Otherwise a local lives to the end of this scope (lexical lifetimes,
        // past `handle`), and storing it was a retain here and a release at the end, for each of six.
        let info = RequestInfo(head: consume head, keepAlive: keepAlive, hasBody: hasBody,
                               contentLength: contentLength, addresses: consume addresses,
                               origin: consume requestOrigin, viaUWSGI: uwsgi, fromTrustedForwarder: !uwsgi && forwardedTrusted == true,
                               requestIDHeader: edge.requestIDHeaderBytes)
        let eventLoop = context.eventLoop
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let body: RequestBodyStream
        if hasBody {
            body = RequestBodyStream(
                highWater: limits.bodyHighWater, lowWater: limits.bodyLowWater, expectsContinue: expectsContinue,
                resume: { eventLoop.execute { loopBound.value.resumeBodyReading() } },
                sendContinue: { eventLoop.execute { loopBound.value.writeContinue() } })
        } else {
            body = .empty
        }
        let exchange = HTTPExchange(request: consume info, body: consume body, limits: limits, eventLoop: consume eventLoop,
                                    connection: consume loopBound, allocator: allocator, server: server.shared)
        current = exchange
        if hasBody && !chunked && !expectsContinue && (contentLength ?? 0) <= Int64(limits.bodyHighWater) {
            dispatchAtEnd = true
        } else {
            server.application.handle(exchange)
        }
    }

    /// The peer is in forwarded_allow_ips (asked once a connection).
    private func trustsForwarder() -> Bool {
        if let known = forwardedTrusted { return known }
        let trusted = edge.forwardedAllow.allows(origin.remote)
        forwardedTrusted = trusted
        return trusted
    }

    struct ForwardedRefusal: Error, CustomStringConvertible {
        var description: String
    }

    /// What a trusted peer's headers (or a PROXY v2 header's TLS flag) say of the request's scheme and
    /// client; nil when nothing does, which is the common case and costs no allocation.
    private func forwardedOrigin(_ head: RequestHead) -> Result<RequestOrigin?, ForwardedRefusal> {
        let tls = origin.clientUsedTLS
        guard trustsForwarder() else {
            return .success(tls ? RequestOrigin(isSecure: true, client: nil) : nil)
        }
        switch ForwardedHeaders.read(head.headers, policy: edge) {
        case .none:
            return .success(tls ? RequestOrigin(isSecure: true, client: nil) : nil)
        case .origin(let isSecure, let client):
            return .success(RequestOrigin(isSecure: isSecure || tls, client: client.map { ($0, 0) }))
        case .contradictory(let reason):
            return .failure(ForwardedRefusal(description: reason))
        }
    }

    // MARK: backpressure on reads

    func read(context: ChannelHandlerContext) {
        if bodyPaused || !queued.isEmpty {
            readPending = true
        } else {
            context.read()
        }
    }

    func resumeBodyReading() {
        bodyPaused = false
        resumeReadingIfPending()
    }

    private func resumeReadingIfPending() {
        guard readPending, !bodyPaused, queued.isEmpty, let context else { return }
        readPending = false
        context.read()
    }

    // MARK: writing

    func writeContinue() {
        guard case .active(requestDone: false, responseDone: false) = machine.phase else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
    }

    /// The status code of the response being written, read from its status line.
    private var responseStatus = 0

    static func statusCode(in buffer: ByteBuffer) -> Int {
        guard buffer.readableBytes > 12 else { return 0 }
        return buffer.withUnsafeReadableBytes { bytes in
            var code = 0
            for index in 9..<12 {
                let digit = bytes[index] &- 0x30
                guard digit <= 9 else { return 0 }
                code = code * 10 + Int(digit)
            }
            return code
        }
    }

    /// Queues a response's end to be written after this event-loop tick (see HTTPServer.writeAfterTick).
    func writeAfterTick(_ write: HTTPExchange.PendingWrite) {
        server.writeAfterTick(write)
    }

    /// Hands `exchange` to the application after this tick's reads (see HTTPServer.handleAfterReads).
    func handleAfterReads(_ exchange: HTTPExchange) {
        server.handleAfterReads(exchange)
    }

    /// `pieces` go before a `.buffer` output in the same write (uncopied body chunks and their framing).
    func writeResponse(_ output: ResponseOutput, after pieces: [ByteBuffer]? = nil, size: Int, end: Bool, close: Bool, for exchange: HTTPExchange) {
        // The context read once: each read of the stored one is a retain and a release (three a response).
        guard current === exchange, case .active(_, responseDone: false) = machine.phase, let context else {
            if case .file(let fd, _, _, _) = output { Glibc.close(fd) }
            if !end { exchange.didWrite(size) }
            return
        }
        // A promise gives the bytes back to the exchange's output budget once written. Not one per
        // chunk (each costs ~2k instructions): writes complete in order, so one on a write gives back
        // the bytes of those before it too, and one is taken once `responseLowWater` bytes went
        // without: less than that stays outstanding, so an app waiting to drain below it always wakes.
        // The end of a response needs none: nobody waits on the exchange after it.
        let promise: EventLoopPromise<Void>?
        unpromisedBytes += size
        if end {
            promise = nil
            unpromisedBytes = 0
        } else if unpromisedBytes >= limits.responseLowWater {
            let accounting = context.eventLoop.makePromise(of: Void.self)
            let given = unpromisedBytes
            accounting.futureResult.whenComplete { _ in exchange.didWrite(given) }
            promise = accounting
            unpromisedBytes = 0
        } else {
            promise = nil
        }
        progress &+= 1
        // The bytes for the metrics; the first bytes of a response are its status line,
        // `HTTP/1.1 200 ...` (for the metrics and statsd).
        switch output {
        case .buffer(let buffer):
            responseBytes += Int64(size)
            if responseStatus == 0 {
                if let first = pieces?.first { responseStatus = Self.statusCode(in: first) } else { responseStatus = Self.statusCode(in: buffer) }
            }
        case .file(_, _, let length, let header):
            responseBytes += length + Int64(header.readableBytes)
            if responseStatus == 0 { responseStatus = Self.statusCode(in: header) }
        }
        var flushed = false
        switch output {
        case .buffer(let buffer):
            if let pieces {
                // Every write costs a trip through the channel: an empty buffer after the pieces
                // (an uncopied chunk under a Content-Length) is left out, its promise on the last piece.
                let last = buffer.readableBytes == 0 && !pieces.isEmpty ? pieces.count - 1 : pieces.count
                for (i, piece) in pieces.enumerated() { context.write(wrapOutboundOut(piece), promise: i == last ? promise : nil) }
                if last == pieces.count { context.write(wrapOutboundOut(buffer), promise: promise) }
            } else {
                // Written and flushed in one pass down the pipeline: a flush of its own is a second.
                context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
                flushed = true
                // A response's last buffer is kept for a next head (NIO most often let it go in that
                // flush). Not one after pieces: it holds their framing, they may be an app's memory.
                if end { server.shared.responseBuffers.give(buffer) }
            }
        case .file(let fd, let offset, let length, let header):
            context.write(wrapOutboundOut(header), promise: nil)
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
            let region = FileRegion(fileHandle: handle, readerIndex: Int(offset), endIndex: Int(offset + length))
            let filePromise = context.eventLoop.makePromise(of: Void.self)
            filePromise.futureResult.whenComplete { _ in try? handle.close() }
            if let promise { filePromise.futureResult.cascade(to: promise) }
            context.write(NIOAny(IOData.fileRegion(region)), promise: filePromise)
        }
        if !flushed { context.flush() }
        if !end { return }
        exchange.letObserverGo()
        server.requestFinished(exchange.request, status: responseStatus, requestBodyBytes: bodyReceived, responseBytes: responseBytes)
        responseStatus = 0
        responseBytes = 0
        // Close only if the response said so. One that went out as keep-alive before a drain began
        // leaves the connection open: the client may be sending its next request already, which is
        // then answered with `Connection: close`.
        let request = exchange.request
        // A client waiting for `100 Continue` may never send the body the app left unread (the parser
        // refuses any other expectation, and an HTTP/1.0 request's is ignored: RFC 9110 10.1.1).
        let mustNotDiscard = request.hasBody && (request.head.parsed.expectsContinue
            || request.contentLength.map({ $0 > Int64(limits.maxBodyDiscard) }) ?? false)
        switch machine.responseEnded(close: close || !request.keepAlive, bodyPending: request.hasBody, mustNotDiscard: mustNotDiscard) {
        case .finish(let finish):
            apply(finish)
        case .awaitRequestEnd:
            break   // answered before the request's `.end` part was read (the app ran on the I/O thread)
        case .close:
            self.close()
        case .discardBody(let timer):
            // Read the rest of the body the app did not want, so that the next request can follow.
            exchange.body.fail(.disconnected)
            arm(timer)   // a client that stops sending is not waited on forever
            bodyPaused = false
            resumeReadingIfPending()
        }
    }

    /// The app accepted a websocket upgrade: the 101 response, then the pipeline turns from HTTP
    /// into websocket frames (encoder, decoder with the size limit, fragments joined, the handler).
    func upgradeToWebSocket(_ exchange: HTTPExchange, head: ByteBuffer, webSocket: WebSocketConnection) {
        guard current === exchange, case .active(_, responseDone: false) = machine.phase, let context else {
            webSocket.markClosed()
            webSocket.delegate?.webSocketClosed(code: 1006, reason: "")
            return
        }
        deadline.clear()
        machine.closed()
        current = nil
        exchange.letObserverGo()
        server.requestFinished(exchange.request, status: 101, requestBodyBytes: 0, responseBytes: Int64(head.readableBytes))
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            let limit = webSocket.maxMessageSize
            try pipeline.addHandler(WebSocketFrameEncoder())
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: limit)))
            try pipeline.addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16,
                                                                maxAccumulatedFrameSize: limit))
            try pipeline.addHandler(WebSocketHandler(connection: webSocket, server: server))
            server.unregister(self)
            // Removed after the frame handlers are in: what the client sent after its request reaches
            // the frame decoder (handlerRemoved).
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            logger.error("websocket upgrade failed: \(error)")
            context.close(promise: nil)
        }
    }

    func closeAfterFailure(_ exchange: HTTPExchange) {
        guard current === exchange, case .active = machine.phase else { return }
        close()
    }

    /// Carries out the end of an exchange: close, or idle with the requests pipelined meanwhile
    /// handled in order, until one is active again.
    private func apply(_ finish: ConnectionStateMachine.Finish) {
        switch finish {
        case .close:
            close()
        case .idle(let timer):
            current = nil
            bodyPaused = false
            arm(timer)
            while let part = queued.first {
                if machine.arrival() == .queue { break }
                queued.removeFirst()
                handle(part)
            }
            resumeReadingIfPending()
        }
    }

    /// An error status made by the server itself, after which the connection closes.
    func writeErrorAndClose(_ status: HTTPResponseStatus) {
        guard let context, !closing else { return }
        closing = true
        let reason = status.reasonPhrase
        let body = "\(status.code) \(reason)\n"
        var buffer = context.channel.allocator.buffer(capacity: 160)
        buffer.writeString("HTTP/1.1 \(status.code) \(reason)\r\nServer: appserver\r\nDate: ")
        buffer.writeBytes(HTTPDate.current())
        buffer.writeString("\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        current?.abort()
        current = nil
        machine.answeredWithError()
        deadline.clear()
        if machine.lingers {
            closeInStages(context, after: buffer)
        } else {
            context.writeAndFlushThenClose(wrapOutboundOut(buffer))
        }
    }

    /// Bytes the decoder refuses: before a request is being answered, a 4xx (or 501/505) with
    /// `Connection: close`; in the middle of a request's body, the body fails (the app answers 400 if it
    /// has not answered yet) and the connection closes after the response.
    private func refuse(_ error: HTTP1ParseError) {
        server.countRefusal(error.status)
        let peer = addresses?.remote.logText ?? origin.remote.logText
        let firstRequest = requestCount == 0
        switch machine.refused() {
        case .answerAndClose:
            if firstRequest, let hint = decoder.mismatchHint {
                server.warnRarely("mismatch", "\(hint) (peer \(peer))")
            }
            logger.debug("refused a request from \(peer): \(error)")
            writeErrorAndClose(HTTPResponseStatus(statusCode: error.status))
        case .failBody:
            logger.debug("refused the body of a request from \(peer): \(error)")
            current?.body.fail(.malformed(error.reason))
        case .failBodyAndClose:
            logger.debug("refused the body of a request from \(peer): \(error)")
            current?.body.fail(.malformed(error.reason))
            close()
        case .close:
            close()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close()
    }

    private func close() {
        guard let context, !closing else { return }
        closing = true
        current?.abort()
        current = nil
        machine.closed()
        deadline.clear()
        if machine.lingers {
            closeInStages(context, after: context.channel.allocator.buffer(capacity: 0))
            return
        }
        // Nothing waiting in the channel (the common case: the response went to the kernel at its
        // flush): close now, without the empty write below and its future (~4k instructions, paid by
        // every connection nginx's uwsgi_pass opens).
        if (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0 {
            context.close(promise: nil)
            return
        }
        // Writes complete in order: closing after an empty one lets a response in flight go out whole.
        context.writeAndFlushThenClose(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)))
    }

    /// The connection is on its way out (closed, or closing after an error answer): nothing more is sent.
    private var closing = false
    /// Closing in stages (`ConnectionStateMachine.lingers`): the output is closed, and what the client
    /// still sends is read and thrown away until it closes too or the linger time is up.
    private var lingering = false

    /// How long a client that was still sending has, once answered, to stop and close its side.
    /// Loopback and LAN clients take milliseconds; nginx's lingering_timeout is 5 s too.
    static let lingerSeconds: Int64 = 5

    private func closeInStages(_ context: ChannelHandlerContext, after answer: ByteBuffer) {
        lingering = true
        queued = ArrayQueue()   // parts of requests that will not be answered
        bodyPaused = false
        context.writeAndFlushThenCloseOutput(wrapOutboundOut(answer))
        arm(.linger)
        resumeReadingIfPending()
    }

    // MARK: timers

    private func arm(_ timer: ConnectionStateMachine.Timer) {
        let seconds: Int64
        switch timer {
        case .header: seconds = limits.headerTimeout
        case .keepAlive: seconds = limits.keepAlive
        case .drainGrace: seconds = min(limits.keepAlive, limits.headerTimeout)
        case .linger: seconds = Self.lingerSeconds
        }
        deadline.arm(seconds: seconds)
    }

    /// A request the app has made no progress on for `seconds` (its body all read, its response not
    /// waiting for a slow client): answered 504, or cut off if its head went out already, and counted;
    /// the app's side is told (ASGI cancels the task; a WSGI thread's late response is dropped).
    func checkStuck(seconds: Int64, now: Monotonic) {
        guard let exchange = current, case .active(_, responseDone: false) = machine.phase else { return }
        if progressSeen.count != progress {
            progressSeen = (progress, now)
            return
        }
        let since = max(exchange.request.started, progressSeen.at)
        guard now.nanoseconds - since.nanoseconds > seconds * 1_000_000_000, exchange.body.isFinished, !exchange.hasQueuedOutput else { return }
        let request = exchange.request
        logger.warning("request timed out: no progress in \(seconds) s (timeout): \(request.method) \(request.uri); answered 504, the worker serves on",
                       metadata: request.logMetadata)
        server.metrics?.requestTimedOut()
        exchange.markTimedOut()
        if responseStatus != 0 {
            close()   // the head went out: the client sees the response end early
        } else {
            server.requestFinished(request, status: 504, requestBodyBytes: bodyReceived, responseBytes: 0)
            writeErrorAndClose(.gatewayTimeout)
        }
    }

    /// Called by the server's sweep when `deadline` has passed.
    func deadlinePassed() {
        if lingering {
            context?.close(promise: nil)
            return
        }
        switch machine.deadlinePassed() {
        case .none: break
        case .close: close()
        case .answer408:   // the head did not arrive in time
            server.countRefusal(408)
            writeErrorAndClose(.requestTimeout)
        }
    }
}
