/// The small part of the WSGI glue that is clearer in Python than in C: the file-like wrappers.
/// Every method here calls straight into native functions (`_read`, `_readline`, `_log`) that take
/// the request's serial number, so a stream kept past its request reads nothing of the next one.
let bootstrapSource = #"""
import traceback as _traceback
# Imported here, on the process's main thread, so that threading.main_thread() is this thread (the
# first thread to import threading becomes "main"): uvloop, on the ASGI loop thread, relies on it.
import threading as _threading

class RequestEntityTooLarge(ValueError):
    """The request body is larger than limit_request_body."""

class BadRequestBody(ValueError):
    """The request body's framing is broken (a bad chunk, a forbidden trailer): the request is a 400."""

class ClientDisconnected(OSError):
    """The client went away while the app was reading the request body."""

class InputStream:
    """wsgi.input: the request body, streamed from the socket with backpressure."""
    __slots__ = ("_serial",)

    def __init__(self, serial):
        self._serial = serial

    def read(self, size=-1):
        return _read(self._serial, -1 if size is None else size)

    def readline(self, size=-1):
        return _readline(self._serial, -1 if size is None else size)

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = _readline(self._serial, -1)
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = _readline(self._serial, -1)
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
    """wsgi.errors: text written here goes to the server's error log."""

    def write(self, text):
        _log(text)

    def writelines(self, lines):
        for line in lines:
            _log(line)

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

def format_exception(exc):
    return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")

def load_app(module_name, attribute):
    """The app: MODULE:NAME, MODULE:A.B, or a factory called with literal arguments, MODULE:make(1, x="y")."""
    import importlib
    module = importlib.import_module(module_name)
    name, call = attribute, None
    if attribute.endswith(")"):
        import ast
        try:
            expression = ast.parse(attribute, mode="eval").body
        except SyntaxError:
            raise LookupError(f"Failed to parse {attribute!r} as an attribute name or function call.") from None
        function, parts = getattr(expression, "func", None), []
        while isinstance(function, ast.Attribute):
            parts.append(function.attr)
            function = function.value
        if not isinstance(expression, ast.Call) or not isinstance(function, ast.Name):
            raise LookupError(f"Failed to parse {attribute!r} as an attribute name or function call.")
        name = ".".join([function.id] + parts[::-1])
        try:
            call = ([ast.literal_eval(arg) for arg in expression.args],
                    {keyword.arg: ast.literal_eval(keyword.value) for keyword in expression.keywords})
        except ValueError:
            raise LookupError(f"Failed to parse arguments as literal values: {attribute!r}.") from None
    target = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"Failed to find attribute {name!r} in {module_name!r}.") from None
    if call is not None:
        if not callable(target):
            raise LookupError(f"Factory {name!r} in {module_name!r} is not callable.")
        target = target(*call[0], **call[1])
        if target is None:
            raise LookupError(f"The factory {attribute!r} in {module_name!r} returned None.")
    if not callable(target):
        raise LookupError(f"Application object {attribute!r} in {module_name!r} is not callable.")
    return target

def run_exit_functions():
    import atexit
    atexit._run_exitfuncs()
"""#
