"""A header-heavy WSGI app for the RSS-over-time benchmark: it reads every request header and answers
with many headers of its own (repeated and latin-1 ones among them)."""


def app(environ, start_response):
    seen = sum(len(value) for key, value in environ.items() if key.startswith("HTTP_"))
    headers = [("Content-Type", "text/plain"), ("Cache-Control", "no-store"), ("X-Seen", str(seen)), ("X-Latin", "caf\u00e9")]
    headers += [("Set-Cookie", f"c{i}=v{i}; Path=/; HttpOnly") for i in range(8)]
    headers += [("X-Extra-%d" % i, "x" * 40) for i in range(8)]
    start_response("200 OK", headers)
    return [b"ok"]
