"""A real HTTP server on 127.0.0.1 for tests: each route answers like the service it stands for.

Usage::

    with serve({"/file": (200, {}, b"data")}) as server:
        requests.get(server.url + "/file")
        server.requests  # the paths asked for, in order
        server.arrivals  # (time.monotonic() on arrival, path) for each request

A route's answer is a tuple (status, headers, body) or a callable taking the request
handler and returning one, so a test can count calls or change its answer over time. A
callable that returns None has written its own response (a truncated body, say).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (name fixed by http.server)
        self.server.arrivals.append((time.monotonic(), self.path))
        self.server.requests.append(self.path)
        self.server.headers_seen.append(dict(self.headers))
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
        else:
            answer = route(self) if callable(route) else route
            if answer is None:  # the route wrote its own (possibly broken) response
                return
            status, headers, body = answer
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@contextmanager
def serve(routes: dict):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = routes
    server.requests = []
    server.arrivals = []
    server.headers_seen = []
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting fails at once, like being offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
