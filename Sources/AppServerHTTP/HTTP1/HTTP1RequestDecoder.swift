import NIOCore

/// Turns a connection's bytes into request parts with `HTTP1Parser`: heads as their own bytes (no
/// copy), body bytes as slices of what was read, refusals as `.invalid` parts for the connection
/// handler to answer. After a request that asks for an upgrade it parses nothing more: the bytes that
/// follow belong to the new protocol, and go on to it when the connection's handler leaves.
final class HTTP1RequestDecoder: RequestDecoder {
    private var parser: HTTP1Parser
    /// Bytes received and not yet parsed.
    private var pending: ByteBuffer?
    private var upgradeRequested = false
    private var stopAfterThisRequest = false
    private let empty = ByteBuffer()
    private var failed = false
    private var detached = false

    init(limits: HTTP1ParserLimits) {
        parser = HTTP1Parser(limits: limits)
    }

    private var firstBytes = FirstBytes()

    var mismatchHint: String? { firstBytes.mismatchHint }

    func received(_ bytes: consuming ByteBuffer, context: ChannelHandlerContext, connection: HTTPConnectionHandler) {
        var incoming = bytes
        firstBytes.note(incoming)
        guard !failed else { return }
        if pending == nil || pending!.readableBytes == 0 {
            pending = incoming
        } else {
            pending!.writeBuffer(&incoming)
        }
        guard !upgradeRequested else { return }
        decode(connection)
    }

    private func decode(_ connection: HTTPConnectionHandler) {
        while !detached, !failed, !upgradeRequested {
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
                connection.receive(part)
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

    func connectionClosed() {}

    func detach() -> ByteBuffer? {
        detached = true
        // After an upgrade: what the client sent after its request is the new protocol's. Otherwise
        // the connection is going away.
        guard upgradeRequested, let rest = pending.take(), rest.readableBytes > 0 else { return nil }
        return rest
    }
}
