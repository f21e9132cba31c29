"""A Hugging Face Hub double for answers olah cannot give: a gated repository.

The Hub answers API calls on a gated repository without (or with an unauthorised) token with
HTTP 401 and the header ``X-Error-Code: GatedRepo``; ``huggingface_hub`` maps exactly that to
``GatedRepoError`` (``huggingface_hub/utils/_http.py``, ``hf_raise_for_status``). Every request
is answered that way here.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Gated(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = json.dumps(
            {"error": "Access to model org/gated is restricted. You must have access to it."}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to this model is restricted")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


class GatedHub:
    """A loopback server that answers every request like the Hub does for a gated repo."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Gated)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GatedHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
