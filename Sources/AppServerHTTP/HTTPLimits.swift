import AppServerConfig

/// The limits and timeouts one connection is held to. Each limit answers with its own status code
/// (414, 431, 413, 408) instead of failing the worker.
public struct HTTPLimits: Sendable {
    public var requestLine: Int
    public var requestFields: Int
    public var requestFieldSize: Int
    /// 0: no limit.
    public var requestBody: Int64
    /// Seconds an idle keep-alive connection is kept open between requests.
    public var keepAlive: Int64
    /// Seconds a client has to send a request head once it started one (or after connecting).
    public var headerTimeout: Int64
    /// Bytes of a request body left unread by the app that are read and thrown away to keep the
    /// connection; past this the connection is closed instead.
    public var maxBodyDiscard: Int = 4 << 20
    /// Request body bytes buffered before reading from the socket pauses (backpressure).
    public var bodyHighWater: Int = 256 << 10
    public var bodyLowWater: Int = 64 << 10
    /// Response bytes queued for the socket before the app's thread waits for them to drain.
    public var responseHighWater: Int = 1 << 20
    public var responseLowWater: Int = 256 << 10
    /// Response bytes a TCP connection's kernel queue takes beyond what it has sent
    /// (TCP_NOTSENT_LOWAT). Without a bound the queue grows with the send buffer's autotuning, to
    /// megabytes a connection: many large responses at once then copy through memory the caches no
    /// longer hold. Bytes sent and not yet acknowledged do not count, so a slow or distant client's
    /// throughput is not limited by it.
    public var unsentBytes: Int = 64 << 10

    public init(requestLine: Int = 4094, requestFields: Int = 100, requestFieldSize: Int = 8190,
                requestBody: Int64 = 0, keepAlive: Int64 = 2, headerTimeout: Int64 = 10) {
        self.requestLine = requestLine
        self.requestFields = requestFields
        self.requestFieldSize = requestFieldSize
        self.requestBody = requestBody
        self.keepAlive = keepAlive
        self.headerTimeout = headerTimeout
    }

    /// What the request parser is held to (a line, fields, a whole head, chunk extensions).
    public var parser: HTTP1ParserLimits {
        var parser = HTTP1ParserLimits()
        parser.requestLine = requestLine
        parser.fieldCount = requestFields
        parser.fieldSize = requestFieldSize
        parser.headSize = requestLine > 0 && requestFields > 0 && requestFieldSize > 0
            ? max(64 * 1024, requestLine + 4 + requestFields * (requestFieldSize + 2) + 2) : 1 << 20
        return parser
    }

    public init(config: ServerConfig) {
        self.init(requestLine: config.limitRequestLine, requestFields: config.limitRequestFields,
                  requestFieldSize: config.limitRequestFieldSize, requestBody: config.limitRequestBody,
                  keepAlive: Int64(config.keepAlive), headerTimeout: Int64(config.headerTimeout))
    }
}
