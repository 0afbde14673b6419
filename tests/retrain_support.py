"""A fake HTTP endpoint for retraining tests: the webhook and GitHub's API in one local
server (threading http.server on 127.0.0.1:0) that records what it was sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeEndpoint:
    """Answers each POST with the next of `statuses` (the last one repeats) and `body`."""

    def __init__(self, statuses: tuple[int, ...] = (200,), body: bytes = b"") -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        statuses_left = list(statuses)
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                data = json.loads(self.rfile.read(length))
                received.requests.append((self.path, dict(self.headers.items()), data))
                status = statuses_left.pop(0) if len(statuses_left) > 1 else statuses_left[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
