"""Bad values from an app reach it as clear Python exceptions (logged with a traceback, answered 500),
and the worker lives on: the bridge converts and checks, it never traps (no force-unwrapped converter,
no unchecked attribute)."""
import time

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def no_crash(server):
    log = server.log()
    assert "crashed" not in log and "SIGSEGV" not in log and "SIGABRT" not in log, log


@pytest.mark.parametrize("path, message", [
    ("/errors-surrogate", "UnicodeEncodeError"),
    ("/errors-bytes", "wsgi.errors.write() takes one str"),
    ("/status-wide", "the status must be a str of latin-1 characters"),
    ("/header-not-tuple", "each response header must be a (name, value) tuple, not list"),
    ("/read-bad-size", "TypeError"),
])
def test_wsgi_bad_values_raise_in_the_app(serve, path, message):
    server = serve("bridgeerrors:wsgi", "--interface", "wsgi")
    response = requests.post(server.url + path, data=b"a body", timeout=10)
    assert response.status_code == 500
    assert requests.get(server.url + "/", timeout=10).text == "fine"   # the same worker serves on
    assert message in server.log()
    no_crash(server)


@pytest.mark.parametrize("path, message", [
    ("/type-surrogate", "UnicodeEncodeError"),
    ("/header-triple", "each response header must be a [name, value] pair of bytes"),
    ("/header-str", "response header names and values must be bytes"),
    ("/status-str", "TypeError"),
    ("/body-first", "http.response.body sent before http.response.start"),
    ("/start-twice", "http.response.start sent twice"),
    ("/unknown-type", "unexpected ASGI message type 'http.response.bogus' for an http scope"),
])
def test_asgi_bad_messages_raise_in_the_app(serve, path, message):
    server = serve("bridgeerrors:asgi", "--interface", "asgi")
    assert requests.get(server.url + path, timeout=10).status_code == 500
    assert requests.get(server.url + "/", timeout=10).text == "fine"
    assert message in server.log() and "Exception in ASGI application" in server.log()
    no_crash(server)


def test_asgi_message_types_are_told_by_their_characters(serve):
    """Types an app builds at run time (not the interned objects, one a str subclass) are the same types."""
    server = serve("bridgeerrors:asgi", "--interface", "asgi")
    response = requests.get(server.url + "/built-types", timeout=10)
    assert (response.status_code, response.text) == (200, "built")
    no_crash(server)


def test_an_app_returning_no_awaitable_is_a_type_error(serve):
    server = serve("bridgeerrors:asgi_not_awaitable", "--interface", "asgi", "--lifespan", "off")
    assert requests.get(server.url + "/", timeout=10).status_code == 500
    assert "the ASGI app returned 42, which cannot be awaited" in server.log()
    no_crash(server)


def test_a_bad_websocket_accept_header_is_refused_clearly(serve):
    server = serve("bridgeerrors:asgi", "--interface", "asgi")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10).close()
    assert refused.value.response.status_code == 500
    assert "websocket.accept refused: each websocket.accept header must be a [name, value] pair of bytes" in server.log()
    assert requests.get(server.url + "/", timeout=10).text == "fine"
    no_crash(server)


def test_a_lifespan_failure_message_that_is_not_utf8_is_reported(serve):
    server = serve("bridgeerrors:lifespan_surrogate", "--interface", "asgi", "--lifespan", "on", wait=False)
    deadline = time.monotonic() + 20
    while "ASGI lifespan startup failed: 'bad \\udcff text'" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ASGI lifespan startup failed: 'bad \\udcff text'" in server.log(), server.log()
    no_crash(server)
