import NIOCore

/// Turns a connection's bytes into request parts (head, body, end, or a refusal) for its handler:
/// HTTP/1.1 (HTTP1RequestDecoder) or uwsgi (UWSGIRequestDecoder). Not a channel handler of its own:
/// the connection's handler owns it and calls it, so that each read, read-complete, write and flush of
/// a request passes one pipeline context fewer (a context hop is ~60 instructions, two of them retain
/// and release; ~5 a keep-alive request). Called on the event loop.
protocol RequestDecoder: AnyObject {
    /// Bytes read from the connection: decoded parts go to `connection.receive`, which may upgrade or
    /// close the connection before this returns (`detach` is then called from inside it).
    func received(_ bytes: consuming ByteBuffer, context: ChannelHandlerContext, connection: HTTPConnectionHandler)
    /// The connection closed.
    func connectionClosed()
    /// The handler leaves the pipeline: nothing more is decoded. Returns the bytes that followed a
    /// request asking for an upgrade, which belong to the new protocol's handlers.
    func detach() -> ByteBuffer?
    /// What the connection's first bytes say it was when they were not this decoder's protocol: a
    /// hint for the log when its first request is refused.
    var mismatchHint: String? { get }
}
