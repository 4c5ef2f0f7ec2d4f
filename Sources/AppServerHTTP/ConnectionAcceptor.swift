import Logging
import NIOCore

/// The first handler of a listening channel: makes each connection it accepts a connection of the
/// server in the same call, its pipeline set up and the channel registered with the event loop and
/// made active, and does not pass it on.
///
/// What it replaces is ServerBootstrap's accept path, which for every connection applied the (empty)
/// child options through a future, ran the child initializer through another, chained two more to
/// pass the channel on, then queued a task on the loop to register it and a further future to make
/// it active: ~7 futures and a task a connection, whose unspecialized deinits alone looked up generic
/// metadata for thousands of instructions (bench/RESULTS.md). A server behind nginx's `uwsgi_pass`,
/// or behind a `proxy_pass` without upstream keep-alive, pays that on every request.
///
/// The registration is the one `ClientBootstrap.withConnectedSocket` uses for a socket that is already
/// connected (`registerAlreadyConfigured0`: register, then become active, which fires `channelActive`
/// and starts reading), reached through `_channelCore` because NIO has no other public way to
/// register an accepted channel without its accept handler. One difference: that call treats a
/// failed `epoll_ctl(EPOLL_CTL_ADD)` as fatal (ENOMEM, or ENOSPC past `fs.epoll.max_user_watches`),
/// where the accept handler's path closed the one connection; NIO holds those to be fatal, and the
/// arbiter replaces a worker that dies.
final class ConnectionAcceptor: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let setUp: (any Channel) throws -> Void
    private let logger: Logger

    /// `setUp` adds the connection's handlers; it runs on the listening channel's event loop, which is
    /// the connection's too (the server has one loop).
    init(logger: Logger, setUp: @escaping (any Channel) throws -> Void) {
        self.setUp = setUp
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let connection = Self.unwrapInboundIn(data)
        // One loop for the listener and its connections: the set-up below is synchronous on it.
        guard connection.eventLoop === context.eventLoop, context.channel.isActive else {
            connection.close(promise: nil)
            return
        }
        do {
            try setUp(connection)
        } catch {
            logger.error("cannot set up an accepted connection: \(error)")
            connection.close(promise: nil)
            return
        }
        connection._channelCore.registerAlreadyConfigured0(promise: nil)
    }
}
