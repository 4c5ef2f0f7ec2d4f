import AppServerHTTP
import CPython
import CPythonShim
import NIOCore

/// Large response chunks go to the socket from the app's bytes objects themselves (ForeignBuffer):
/// the buffer holds a reference to the object until NIO has written it. Those references are dropped
/// by a thread holding the GIL, the next time one wraps a chunk or starts a request (`releaseWritten`).
enum BytesBuffer {
    /// A chunk of `object` (a bytes object, `view` its bytes) framed into `out`: copied, or when large
    /// and of an exact `bytes` (immutable, and no `__del__` of a subclass to run when released)
    /// sent from its own memory as a buffer after `out`, which then joins `pieces` (see
    /// ResponseWriter.appendBody(uncopied:)). Needs the GIL.
    static func append(_ object: PyObjectPointer, _ view: UnsafeRawBufferPointer, with writer: inout ResponseWriter,
                       to out: inout ByteBuffer, pieces: inout [ByteBuffer]) {
        guard view.count >= ForeignBuffer.minimumSize, appserver_is_exact_bytes(object) != 0 else {
            writer.appendBody(view, to: &out)
            return
        }
        releaseWritten()
        // The buffer's reference: handed to the registry as its owner token, dropped by `releaseWritten`.
        let owner = PyRef(retaining: object).take()
        writer.appendBody(uncopied: ForeignBuffer.wrap(view, owner: UInt(bitPattern: owner)), after: &out, into: &pieces)
    }

    /// What a chunk of `count` bytes adds to the buffer it is framed into (a large one goes out uncopied).
    static func copiedSize(_ count: Int) -> Int { count < ForeignBuffer.minimumSize ? count : 0 }

    /// Drops the references of chunks written since the last call. Needs the GIL.
    @inline(__always)
    static func releaseWritten() {
        guard ForeignBuffer.hasReleased else { return }
        // Dropping an exact bytes object frees its memory and runs no Python: safe under the registry's lock.
        ForeignBuffer.drainReleased { owner in _ = PyRef(stealing: PyObjectPointer(bitPattern: owner)!) }
    }
}
