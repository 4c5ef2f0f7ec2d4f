"""A differential test of the HTTP/1.1 request parser against h11 (an independent parser, from PyPI):
generated requests, valid ones and ones broken in ways RFC 9112 says to refuse, go to both. Where h11
accepts, appserver must accept and hand the app exactly what h11 read (method, target, every header
byte, the body); where h11 refuses, appserver must refuse with a 4xx/5xx and close.

Kept out of the generator, because the two parsers differ there on purpose (appserver is the stricter
one, as RFC 9112 allows or asks): bare-LF line ends and obs-fold (h11 accepts both), a request target
'*' for methods other than OPTIONS, Host values that are no host[:port], duplicate identical
Content-Length fields, forbidden trailer fields, header names holding '_' (dropped by header_map),
HTTP versions other than 1.0 and 1.1, raw non-ASCII bytes in the request target (served, as Gunicorn
does; h11 refuses them), whitespace before a chunk extension's ';' (BWS, which RFC 9112 allows and
h11 refuses), control bytes other than NUL in field values (RFC 9110 5.5 lets a recipient keep them;
appserver refuses them, h11 keeps them)."""
import json
import re
import os
import random
import socket

import h11

SEED = int(os.environ.get("DIFFERENTIAL_SEED", "20261129"))
COUNT = int(os.environ.get("DIFFERENTIAL_COUNT", "5000"))
TOKEN_EXTRA = "!#$%&'*+-.^`|~"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer", "keep-alive"}


def token(rng, first_alpha=True, length=None):
    length = length or rng.randint(1, 12)
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
    text = rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ") + "".join(rng.choice(chars) for _ in range(length - 1))
    return text


def field_value(rng):
    pieces = []
    for _ in range(rng.randint(0, 20)):
        roll = rng.random()
        if roll < 0.75:
            pieces.append(bytes([rng.randint(0x21, 0x7E)]))
        elif roll < 0.85:
            pieces.append(rng.choice([b" ", b"\t"]))
        else:
            pieces.append(bytes([rng.randint(0x80, 0xFF)]))
    value = b"".join(pieces).strip(b" \t")
    ows = lambda: rng.choice([b"", b" ", b"  ", b"\t", b" \t"])
    return ows() + value + ows(), value


def generate(rng):
    """(request bytes, is broken on purpose)."""
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", token(rng).upper()])
    path = "/" + "".join(rng.choice(PATH_CHARS) for _ in range(rng.randint(0, 30)))
    if rng.random() < 0.3:
        path += "?" + "".join(rng.choice(PATH_CHARS + "?") for _ in range(rng.randint(0, 20)))
    target = path.encode()
    if rng.random() < 0.1:
        target = b"http://example.com" + target
    version = b"HTTP/1.1" if rng.random() < 0.85 else b"HTTP/1.0"
    fields = []
    if version == b"HTTP/1.1" or rng.random() < 0.5:
        fields.append((b"Host", rng.choice([b"example.com", b"example.com:8080", b"127.0.0.1", b"[::1]:80", b"a-b.c"])))
    for _ in range(rng.randint(0, 8)):
        name = token(rng)
        if name.lower() in RESERVED:
            continue
        raw, _ = field_value(rng)
        fields.append((name.encode(), raw))
    body = b""
    framing = rng.choice(["none", "none", "length", "chunked"] if version == b"HTTP/1.1" else ["none", "length"])
    payload = os.urandom(rng.randint(0, 3000)) if framing != "none" else b""
    if framing == "length":
        fields.append((rng.choice([b"Content-Length", b"content-length"]), str(len(payload)).encode()))
        body = payload
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", rng.choice([b"chunked", b"Chunked", b" chunked "])))
        rest = payload
        while rest:
            n = rng.randint(1, len(rest))
            size = format(n, rng.choice(["x", "X"]))
            ext = rng.choice([b"", b";a", b";a=b", b';name="v w"', b";x=1;y"]) if rng.random() < 0.3 else b""
            body += size.encode() + ext + b"\r\n" + rest[:n] + b"\r\n"
            rest = rest[n:]
        body += b"0\r\n"
        for _ in range(rng.randint(0, 2)):
            raw, _ = field_value(rng)
            body += b"X-Trailer-" + token(rng).encode() + b":" + raw + b"\r\n"
        body += b"\r\n"
    broken = False
    if rng.random() < 0.3:
        broken = True
        mutation = rng.randrange(11)
        if mutation == 0:
            fields.append((b"Content-Length", b"12a"))
        elif mutation == 1:
            fields = [f for f in fields if f[0].lower() != b"host"] if version == b"HTTP/1.1" else fields + [(b"Bad Name", b"x")]
        elif mutation == 2:
            fields.append((b"X-Ctl", b"a\x00b"))
        elif mutation == 3:
            fields.append((b"Na(me", b"x"))
        elif mutation == 4:
            method = "G@T"
        elif mutation == 5:
            version = b"HTTP/1.x"
        elif mutation == 6:
            fields.append((b"Transfer-Encoding", b"gzip"))
        elif mutation == 7:
            fields.append((b"Name ", b"x"))   # whitespace before the colon
        elif mutation == 8:
            if framing == "chunked":
                body = b"zz\r\n" + body
            else:
                fields.append((b"Content-Length", b"-1"))
        elif mutation == 9:
            fields.append((b"Content-Length", b"5"))
            fields.append((b"Content-Length", b"6"))
        else:
            target = b"/a b"
    head = method.encode() + b" " + target + b" " + version + b"\r\n"
    head += b"".join(name + b":" + value + b"\r\n" for name, value in fields) + b"\r\n"
    return head + body, broken


def h11_read(data):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    request, body = None, b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return ("incomplete", None, None)
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return ("ok", request, body)
    except h11.RemoteProtocolError as error:
        return ("error", str(error), None)


def appserver_read(port, data):
    """The first response to `data`: (status, head, body); a refusal is read to the connection's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = s.recv(65536)
            if not chunk:
                return 0, response, b""
            response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), None)
        while length is not None and len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, head, body


def test_parser_agrees_with_h11(serve):
    server = serve("mirror:asgi", "--interface", "asgi", "--limit-request-field_size", "16384")
    rng = random.Random(SEED)
    agreed = {"accepted": 0, "refused": 0}
    for n in range(COUNT):
        data, broken = generate(rng)
        verdict, request, body = h11_read(data)
        status, head, answer = appserver_read(server.port, data)
        context = f"request {n} (seed {SEED}): {data[:600]!r}\nh11: {verdict} {request if verdict != 'ok' else ''}\nappserver: {head[:200]!r}"
        if verdict == "ok":
            assert status == 200, context
            seen = json.loads(answer)
            assert seen["method"] == request.method.decode(), context
            target = request.target.split(b"?")[0]
            if not target.startswith(b"/"):
                target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
            assert seen["raw_path"].encode("latin-1") == target, context
            # h11 lower-cases the Transfer-Encoding value; every other byte must be the same.
            expected = sorted([k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers)
            seen_headers = sorted([k, v.lower() if k == "transfer-encoding" else v] for k, v in seen["headers"])
            if not any(k.lower() == b"x-request-id" for k, _ in request.headers):
                # The request id the server made (request_id_header) is the one header it adds.
                made = [h for h in seen_headers if h[0] == "x-request-id"]
                assert len(made) == 1 and re.fullmatch(r"[0-9a-f]{32}", made[0][1]), context
                seen_headers.remove(made[0])
            assert seen_headers == expected, context
            assert seen["body_length"] == len(body), context
            agreed["accepted"] += 1
        elif verdict == "error":
            assert 400 <= status < 600 and b"connection: close" in head.lower(), context
            agreed["refused"] += 1
        else:
            raise AssertionError("the generator made an incomplete request\n" + context)
    print(f"differential: {agreed['accepted']} accepted and {agreed['refused']} refused alike, seed {SEED}")
    assert agreed["accepted"] > COUNT // 3 and agreed["refused"] > COUNT // 10
