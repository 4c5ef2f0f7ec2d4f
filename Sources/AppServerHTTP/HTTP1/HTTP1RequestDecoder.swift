import NIOCore

/// Turns a connection's bytes into request parts with `HTTP1Parser`: heads as their own bytes (no
/// copy), body bytes as slices of what was read, refusals as `.invalid` parts for the connection
/// handler to answer. After a request that asks for an upgrade it parses nothing more: the bytes that
/// follow belong to the new protocol, and go on to it when this handler is removed.
final class HTTP1RequestDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = RequestPart

    private var parser: HTTP1Parser
    /// Bytes received and not yet parsed.
    private var pending: ByteBuffer?
    private var upgradeRequested = false
    private var stopAfterThisRequest = false
    private let empty = ByteBuffer()
    private var failed = false
    private var removed = false

    /// The connection's handler, next in the pipeline: parts go to it by a direct call. Passed through
    /// the pipeline, each part was boxed in an `Any` and cast back (two dynamic casts a request).
    /// Strong until `handlerRemoved`: a weak reference gives the handler a side table, which sends every
    /// retain and release of it (~20 a request) down the runtime's slow path.
    private var connection: HTTPConnectionHandler?

    init(limits: HTTP1ParserLimits, connection: HTTPConnectionHandler? = nil) {
        parser = HTTP1Parser(limits: limits)
        self.connection = connection
    }

    /// The connection's first bytes, for a hint when they were not HTTP.
    private(set) var firstBytes = FirstBytes()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        // Bytes arrived: the header timeout starts with a request's first byte.
        firstBytes.note(incoming)
        connection?.bytesArrived()
        guard !failed else { return }
        if pending == nil || pending!.readableBytes == 0 {
            pending = incoming
        } else {
            pending!.writeBuffer(&incoming)
        }
        guard !upgradeRequested else { return }
        decode(context: context)
    }

    private func decode(context: ChannelHandlerContext) {
        while !removed, !failed, !upgradeRequested {
            // Moved out and back (not copied): a copy is a retain and a release of its storage a part.
            var buffer = pending.take() ?? empty
            if buffer.readableBytes == 0 && parser.isAtRequestStart { break }
            let (event, consumed) = buffer.withUnsafeReadableBytes { parser.next($0) }
            var part: RequestPart?
            // Consumed, not borrowed: a head bound out of a borrowed event was copied (a retain of its fields).
            switch consume event {
            case .needMore:
                part = nil
            case .head(let head):
                if head.upgrade { stopAfterThisRequest = true }
                part = .head(RequestHead(bytes: buffer.getSlice(at: buffer.readerIndex, length: consumed)!, parsed: head))
            case .body(let range):
                part = .body(buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count)!)
            case .end:
                part = .end
                if stopAfterThisRequest { upgradeRequested = true }
            case .error(let error):
                failed = true
                part = .invalid(error)
            }
            buffer.moveReaderIndex(forwardBy: consumed)
            if buffer.readableBytes > 0 { pending = consume buffer }
            if let part = part.take() {
                if let connection { connection.receive(part) } else { context.fireChannelRead(wrapInboundOut(part)) }
            } else if consumed == 0 {
                break
            }
        }
        // A partial element waits for more bytes; a long-lived buffer gives back what was read.
        if let buffer = pending, buffer.readerIndex > 64 * 1024 {
            var compacted = buffer
            compacted.discardReadBytes()
            pending = compacted
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        connection = nil
        // After an upgrade: what the client sent after its request is the new protocol's (the
        // handlers of which come next in the pipeline). Otherwise the connection is going away.
        if upgradeRequested, let rest = pending, rest.readableBytes > 0 {
            pending = nil
            context.fireChannelRead(NIOAny(rest))
        }
    }
}
