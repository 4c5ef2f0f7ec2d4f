"""A uwsgi load for a uwsgi listener, as nginx's `uwsgi_pass` makes it: one packet on a connection of
its own (nginx's uwsgi_params and the headers a browser sends, as HTTP_* variables), read to the
server's close. `connections` threads for `seconds`; returns the responses that came back whole.
(wrk cannot send it: it checks that its requests parse as HTTP.)"""
import socket
import struct
import threading
import time

VARIABLES = [
    ("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/"), ("PATH_INFO", "/"), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", "127.0.0.1"),
    ("REMOTE_PORT", "51234"), ("SERVER_PORT", "80"), ("SERVER_NAME", "localhost"), ("HTTP_HOST", "localhost"),
    ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"), ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
]


def packet(variables=VARIABLES):
    block = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode() for k, v in variables)
    return struct.pack("<BHB", 0, len(block), 0) + block


def run(port, seconds, connections=4):
    data, deadline, counts = packet(), time.monotonic() + seconds, [0] * connections

    def client(index):
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(data)
                response = b""
                while chunk := s.recv(65536):
                    response += chunk
            if response.startswith(b"HTTP/1.1 200 "):
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)
