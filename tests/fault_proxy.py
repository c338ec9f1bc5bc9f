"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (moto), for the object-store fault tests.

Each request, drawn from a seeded generator, is either forwarded, answered ``503 SlowDown`` (or ``500
InternalError``) without reaching the store, cut with a TCP reset before it is forwarded, or forwarded and its
reply lost (the connection reset after the store acted: the client retries a request that already succeeded).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message>'
         "<RequestId>fault</RequestId></Error>")


class FaultProxy:
    """``with FaultProxy(upstream, rates) as proxy: ...`` (``proxy.endpoint``); ``rates``: fractions of requests
    answered 503 (``slowdown``), 500 (``error``), reset before forwarding (``reset``) and forwarded with the reply
    lost (``lost_reply``). ``counts`` tallies what was done."""

    def __init__(self, upstream: str, rates: dict[str, float], seed: int = 0):
        self.upstream = urlsplit(upstream)
        self.rates = dict(rates)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, **{k: 0 for k in rates}}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _body(self) -> bytes:
                if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = []  # HTTP/1.1 chunked upload (s3fs streams file-like bodies so)
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()

            def _handle(self) -> None:
                body = self._body()
                fault = proxy.draw()
                if fault in ("slowdown", "error"):
                    status, code = (503, "SlowDown") if fault == "slowdown" else (500, "InternalError")
                    data = ERROR.format(code=code).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault == "reset":
                    return self._reset()
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"expect"}}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "lost_reply":
                    return self._reset()
                self.send_response(resp.status, resp.reason)
                head = self.command == "HEAD"  # its Content-Length is the object's, with no body
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients hanging up on injected faults: expected
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self) -> str | None:
        with self.lock:
            x = self.rng.random()
            for kind, rate in self.rates.items():
                if x < rate:
                    self.counts[kind] += 1
                    return kind
                x -= rate
            self.counts["forwarded"] += 1
            return None

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
