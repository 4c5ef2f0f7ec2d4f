import NIOCore

extension ChannelHandlerContext {
    /// Writes and flushes a connection's last bytes (an error answer, a close frame), then closes it from
    /// this handler once they are written or failed: the answer goes out whole before the close. The
    /// write's future completes on the context's event loop, where the context may be used.
    func writeAndFlushThenClose(_ data: NIOAny) {
        let context = NIOLoopBound(self, eventLoop: eventLoop)
        writeAndFlush(data).whenComplete { _ in context.value.close(promise: nil) }
    }

    /// RFC 9112 9.6's staged close, for a client that may still be sending: writes and flushes the last
    /// bytes, then closes only the output (a FIN after them). The socket stays open for reading, so that
    /// what still arrives is read rather than answered with a reset, which could erase the answer from
    /// the client's buffers before it reads it; the handler closes it when the client closes its side
    /// or its linger time is up.
    func writeAndFlushThenCloseOutput(_ data: NIOAny) {
        let context = NIOLoopBound(self, eventLoop: eventLoop)
        writeAndFlush(data).whenComplete { _ in context.value.close(mode: .output, promise: nil) }
    }
}
