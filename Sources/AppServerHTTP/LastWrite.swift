import NIOCore

extension ChannelHandlerContext {
    /// Writes and flushes a connection's last bytes (an error answer, a close frame), then closes it from
    /// this handler once they are written or failed: the answer goes out whole before the close. The
    /// write's future completes on the context's event loop, where the context may be used.
    func writeAndFlushThenClose(_ data: NIOAny) {
        let context = NIOLoopBound(self, eventLoop: eventLoop)
        writeAndFlush(data).whenComplete { _ in context.value.close(promise: nil) }
    }
}
