"""The part of the WSGI glue that is clearer in Python than in Swift: the file-like objects of the
environ (wsgi.input, wsgi.errors, wsgi.file_wrapper) and the errors a body read raises. Loaded by
appserver as the module `_appserver_wsgi`; every method calls straight into the native functions it
was given."""

class RequestEntityTooLarge(ValueError):
    """The request body is larger than limit_request_body."""

class BadRequestBody(ValueError):
    """The request body's framing is broken (a bad chunk, a forbidden trailer): the request is a 400."""

class ClientDisconnected(OSError):
    """The client went away while the app was reading the request body."""

class InputStream:
    """wsgi.input: the request body, streamed from the socket with backpressure. `read` and `readline`
    are the app thread's native functions; `serial` names the request, so a stream kept past its
    request reads nothing of the next one."""
    __slots__ = ("_read", "_readline", "_serial")

    def __init__(self, read, readline, serial):
        self._read = read
        self._readline = readline
        self._serial = serial

    def read(self, size=-1):
        return self._read(self._serial, -1 if size is None else size)

    def readline(self, size=-1):
        return self._readline(self._serial, -1 if size is None else size)

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self._readline(self._serial, -1)
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self._readline(self._serial, -1)
        if not line:
            raise StopIteration
        return line

    def close(self):
        pass

class EmptyInput(InputStream):
    """wsgi.input of a request without a body; one shared instance."""
    __slots__ = ()

    def __init__(self):
        pass

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __next__(self):
        raise StopIteration

class ErrorStream:
    """wsgi.errors: text written here goes to the server's error log (`log`, a native function)."""
    __slots__ = ("_log",)

    def __init__(self, log):
        self._log = log

    def write(self, text):
        self._log(text)

    def writelines(self, lines):
        for line in lines:
            self._log(line)

    def flush(self):
        pass

class FileWrapper:
    """wsgi.file_wrapper: the server sends a real file with sendfile(2), anything else by iteration."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
