"""Serving a REST double over real HTTP on loopback: one handler and one server for all.

A double implements ``handle(method, path, headers, raw_body) -> (status, body)``; a ``str`` body
is sent as plain text (Go's ``404 page not found``), anything else as JSON.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Double(Protocol):
    """What a REST double answers requests with."""

    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        """(HTTP status, body) for one request."""
        ...


class _JsonHandler(BaseHTTPRequestHandler):
    double: Double
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body = self.double.handle(self.command, self.path, self.headers, raw)
        if isinstance(body, str):
            payload, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(int(status))
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve  # noqa: N815 - stdlib naming
    do_POST = _serve  # noqa: N815
    do_PATCH = _serve  # noqa: N815
    do_PUT = _serve  # noqa: N815
    do_DELETE = _serve  # noqa: N815


def serve(double: Double, *, name: str, poll_interval: float = 0.5) -> tuple[Any, Any]:
    """Serve ``double`` on 127.0.0.1 on a free port in a daemon thread; (server, thread).

    ``server.shutdown()`` waits at most ``poll_interval`` for the loop to notice.
    """
    handler = type(f"{name}Handler", (_JsonHandler,), {"double": double, "server_version": name})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=name,
        daemon=True,
    )
    thread.start()
    return server, thread


def stop_serving(server: Any | None, thread: Any | None) -> None:
    """Stop what :func:`serve` started and free the port (either may be None)."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)
