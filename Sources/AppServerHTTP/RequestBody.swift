import NIOCore

public enum RequestBodyError: Error, Equatable, Sendable {
    /// The client went away before sending the whole body.
    case disconnected
    /// The body is larger than `limit_request_body`.
    case tooLarge(limit: Int64)
    /// No byte of body arrived for this long.
    case timedOut(seconds: Int)
    /// The body's framing is broken (a bad chunk line, a forbidden trailer): the request is a 400.
    case malformed(String)
}

/// A request body on its way from the I/O thread to an app thread, with backpressure: the I/O thread
/// stops reading from the socket while `highWater` bytes wait, and resumes once the app has read the
/// buffer down to `lowWater`. Nothing here ever holds more than about `highWater` plus one read.
public final class RequestBodyStream: @unchecked Sendable {
    /// Shared with other streams (`Monitor.striped`): a request costs no mutex set-up of its own.
    private let monitor: Monitor
    // All guarded by `monitor`.
    private var chunks = BodyChunks()
    private var buffered = 0
    private var finished = false
    private var failure: RequestBodyError?
    private var paused = false
    private var askedToContinue = false
    /// Called once (on the I/O thread) when bytes, the end or a failure arrive (see `poll`).
    private var waiter: (@Sendable () -> Void)?

    private let highWater: Int
    private let lowWater: Int
    /// Called (on an app thread) when reading should resume; hops to the I/O thread itself.
    private let resume: @Sendable () -> Void
    /// Called (on an app thread) the first time the app reads, to send `100 Continue`.
    private let sendContinue: (@Sendable () -> Void)?

    public init(highWater: Int, lowWater: Int, expectsContinue: Bool,
                resume: @escaping @Sendable () -> Void, sendContinue: @escaping @Sendable () -> Void) {
        self.highWater = highWater
        self.lowWater = lowWater
        self.resume = resume
        self.sendContinue = expectsContinue ? sendContinue : nil
        self.monitor = Monitor.nextStriped()
    }

    /// The body of every request without one: complete and empty (and so never changed).
    public static let empty: RequestBodyStream = {
        let stream = RequestBodyStream(highWater: 1, lowWater: 0, expectsContinue: false, resume: {}, sendContinue: {})
        stream.finished = true
        stream.isSharedEmpty = true
        return stream
    }()

    /// This is `empty`: set before it is shared and never changed, so read without the lock. Its end
    /// and failures change nothing; most requests (every GET) skip two lock round trips with it.
    private var isSharedEmpty = false

    // MARK: I/O thread side

    /// Adds bytes; returns true when the socket should stop being read for now.
    public func append(_ buffer: ByteBuffer) -> Bool {
        let (pause, waiter) = monitor.withLock { () -> (Bool, (@Sendable () -> Void)?) in
            guard !finished, failure == nil else { return (false, nil) }
            chunks.append(buffer)
            buffered += buffer.readableBytes
            monitor.broadcast()
            if buffered >= highWater { paused = true }
            return (paused, takeWaiter())
        }
        waiter?()
        return pause
    }

    public func finish() {
        if isSharedEmpty { return }
        let waiter = monitor.withLock { () -> (@Sendable () -> Void)? in
            finished = true
            monitor.broadcast()
            return takeWaiter()
        }
        waiter?()
    }

    public func fail(_ error: RequestBodyError) {
        if isSharedEmpty { return }
        let waiter = monitor.withLock { () -> (@Sendable () -> Void)? in
            if finished && chunks.isEmpty { return nil }
            failure = error
            monitor.broadcast()
            return takeWaiter()
        }
        waiter?()
    }

    private func takeWaiter() -> (@Sendable () -> Void)? {
        defer { waiter = nil }
        return waiter
    }

    /// What `poll` found.
    public enum Poll {
        /// Bytes (all that had arrived, at most `max`); `more`: the body goes on.
        case data(ByteBuffer, more: Bool)
        case pending
        case failed(RequestBodyError)
    }

    /// Takes what has arrived without waiting (for an event loop). On `.pending`, `whenReadable` is
    /// called once, on the I/O thread, when that changes.
    public func poll(max: Int, allocator: ByteBufferAllocator, whenReadable: @escaping @Sendable () -> Void) -> Poll {
        continueOnFirstRead()
        var shouldResume = false
        let result = monitor.withLock { () -> Poll in
            if let failure { return .failed(failure) }
            if buffered > 0 || finished {
                let out = removeFirst(Swift.min(max, buffered), allocator: allocator)
                if paused && buffered <= lowWater {
                    paused = false
                    shouldResume = true
                }
                return .data(out, more: !finished || buffered > 0)
            }
            if paused {
                paused = false
                shouldResume = true
            }
            waiter = whenReadable
            return .pending
        }
        if shouldResume { resume() }
        return result
    }

    public var isFinished: Bool { isSharedEmpty || monitor.withLock { finished } }

    /// The whole body is here (or it failed): reading cannot wait.
    public var isComplete: Bool { isSharedEmpty || monitor.withLock { finished || failure != nil } }

    // MARK: app thread side (call without the GIL)

    /// Up to `max` bytes (`nil`: everything to the end), waiting until that many arrived or the body
    /// ended. An empty buffer means the end of the body.
    public func read(max: Int?, timeout: Int, allocator: ByteBufferAllocator) throws(RequestBodyError) -> ByteBuffer {
        try take(timeout: timeout, allocator: allocator) { chunks, buffered, finished in
            if let max { return buffered >= max || finished ? Swift.min(max, buffered) : nil }
            return finished ? buffered : nil
        }
    }

    /// One line, up to and including `\n`, or at most `max` bytes, or what is left at the end.
    public func readLine(max: Int?, timeout: Int, allocator: ByteBufferAllocator) throws(RequestBodyError) -> ByteBuffer {
        try take(timeout: timeout, allocator: allocator) { chunks, buffered, finished in
            var seen = 0
            for chunk in chunks {
                if let i = chunk.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                    let n = seen + (i - chunk.readableBytesView.startIndex) + 1
                    return max.map { Swift.min($0, n) } ?? n
                }
                seen += chunk.readableBytes
                if let max, seen >= max { return max }
            }
            return finished ? (max.map { Swift.min($0, buffered) } ?? buffered) : nil
        }
    }

    /// Waits until `ready` names how many bytes to take, then takes them as one buffer.
    private func take(timeout: Int, allocator: ByteBufferAllocator,
                      ready: (BodyChunks, Int, Bool) -> Int?) throws(RequestBodyError) -> ByteBuffer {
        continueOnFirstRead()
        var shouldResume = false
        let result: Result<ByteBuffer, RequestBodyError> = monitor.withLock {
            let deadline = timeout > 0 ? Monotonic.now().adding(seconds: Double(timeout)) : nil
            while true {
                if let failure { return .failure(failure) }
                if let n = ready(chunks, buffered, finished) {
                    let out = removeFirst(n, allocator: allocator)
                    if paused && buffered <= lowWater {
                        paused = false
                        shouldResume = true
                    }
                    return .success(out)
                }
                if paused {
                    // The app wants more than the high-water mark: let the socket be read on.
                    paused = false
                    monitor.withUnlocked { self.resume() }
                    continue
                }
                if !monitor.wait(deadline: deadline), let deadline, Monotonic.now() >= deadline {
                    return .failure(.timedOut(seconds: timeout))
                }
            }
        }
        if shouldResume { resume() }
        return try result.get()
    }

    /// The client holds the body back until it sees `100 Continue`: sent when the app first reads.
    private func continueOnFirstRead() {
        guard let sendContinue else { return }
        let first = monitor.withLock { () -> Bool in
            defer { askedToContinue = true }
            return !askedToContinue
        }
        if first { sendContinue() }
    }

    private func removeFirst(_ count: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        guard count > 0 else { return allocator.buffer(capacity: 0) }
        buffered -= count
        if var first = chunks.first, first.readableBytes >= count {
            let slice = first.readSlice(length: count)!
            if first.readableBytes == 0 { chunks.removeFirst() } else { chunks.replaceFirst(with: first) }
            return slice
        }
        var out = allocator.buffer(capacity: count)
        var left = count
        while left > 0, var chunk = chunks.first {
            let n = Swift.min(left, chunk.readableBytes)
            var part = chunk.readSlice(length: n)!
            out.writeBuffer(&part)
            left -= n
            if chunk.readableBytes == 0 { chunks.removeFirst() } else { chunks.replaceFirst(with: chunk) }
        }
        return out
    }
}

/// A body's buffers not read yet, oldest first.
typealias BodyChunks = ArrayQueue<ByteBuffer>

extension Monitor {
    /// Runs `body` with the lock released (called from inside `withLock`).
    func withUnlocked(_ body: () -> Void) {
        unlockForCallout()
        defer { lockAfterCallout() }
        body()
    }
}
