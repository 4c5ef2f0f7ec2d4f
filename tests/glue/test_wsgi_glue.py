import io


class FakeBody:
    """The natives behind wsgi.input: read(serial, size) and readline(serial, size) of one request."""

    def __init__(self, data, serial=7):
        self.stream = io.BytesIO(data)
        self.serial = serial
        self.calls = []

    def read(self, serial, size):
        self.calls.append(("read", serial, size))
        if serial != self.serial:
            return b""
        return self.stream.read(None if size < 0 else size)

    def readline(self, serial, size):
        self.calls.append(("readline", serial, size))
        if serial != self.serial:
            return b""
        return self.stream.readline(None if size < 0 else size)


def make_input(glue, data, serial=7):
    body = FakeBody(data, serial)
    return glue["wsgi"].InputStream(body.read, body.readline, serial), body


def test_input_read_passes_serial_and_size(glue):
    stream, body = make_input(glue, b"hello world")
    assert stream.read(5) == b"hello"
    assert stream.read(None) == b" world"
    assert stream.read() == b""
    assert body.calls == [("read", 7, 5), ("read", 7, -1), ("read", 7, -1)]


def test_input_lines(glue):
    stream, _ = make_input(glue, b"a\nbb\nccc")
    assert stream.readline() == b"a\n"
    assert stream.readline(1) == b"b"
    assert list(stream) == [b"b\n", b"ccc"]


def test_readlines_stops_at_hint(glue):
    stream, _ = make_input(glue, b"one\ntwo\nthree\n")
    assert stream.readlines(4) == [b"one\n"]
    assert stream.readlines() == [b"two\n", b"three\n"]


def test_a_stream_kept_past_its_request_reads_nothing(glue):
    body = FakeBody(b"secret of the next request", serial=8)
    stale = glue["wsgi"].InputStream(body.read, body.readline, 7)
    assert stale.read() == b"" and stale.readline() == b"" and list(stale) == []


def test_input_has_no_dict(glue):
    stream, _ = make_input(glue, b"")
    try:
        stream.extra = 1
    except AttributeError:
        pass
    else:
        raise AssertionError("InputStream takes no new attributes (it is made per request)")


def test_empty_input(glue):
    empty = glue["wsgi"].EmptyInput()
    assert empty.read() == b"" and empty.read(10) == b"" and empty.readline() == b""
    assert empty.readlines() == [] and list(empty) == []
    assert isinstance(empty, glue["wsgi"].InputStream)
    empty.close()


def test_error_stream_writes_through_its_native(glue):
    lines = []
    errors = glue["wsgi"].ErrorStream(lines.append)
    errors.write("one\n")
    errors.writelines(["two\n", "three\n"])
    errors.flush()
    assert lines == ["one\n", "two\n", "three\n"]


def test_file_wrapper_iterates_in_blocks_and_passes_close(glue):
    closed = []

    class File(io.BytesIO):
        def close(self):
            closed.append(True)
            super().close()

    wrapper = glue["wsgi"].FileWrapper(File(b"x" * 10), 4)
    assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
    wrapper.close()
    assert closed == [True]


def test_file_wrapper_without_close(glue):
    class Reader:
        def read(self, size):
            return b""

    wrapper = glue["wsgi"].FileWrapper(Reader())
    assert wrapper.blksize == 8192 and list(wrapper) == [] and not hasattr(wrapper, "close")


def test_body_errors_are_the_kinds_apps_catch(glue):
    wsgi = glue["wsgi"]
    assert issubclass(wsgi.RequestEntityTooLarge, ValueError)
    assert issubclass(wsgi.BadRequestBody, ValueError)
    assert issubclass(wsgi.ClientDisconnected, OSError)
