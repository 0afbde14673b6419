"""A GitHub push webhook that makes the controller reconcile at once instead of at its next poll.

Every request must carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>` made with the
shared secret (GitHub's format); anything else is answered 401 and does nothing. A push to the
watched branch wakes the loop; other pushes and events are acknowledged and ignored. The
handler never reconciles itself: the loop does, so passes never overlap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("serveops.controller")

SECRET_ENV = "SERVEOPS_WEBHOOK_SECRET"
MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


@dataclass(frozen=True)
class PushEvent:
    ref: str
    after: str  # the new head sha
    pusher: str


def signature(secret: bytes, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(signature(secret, body), header.strip())


class WebhookServer:
    """`POST /webhook` (any path) on host:port, in a daemon thread. `port=0` picks a free one."""

    def __init__(
        self,
        secret: bytes,
        branch: str,
        on_push: Callable[[PushEvent], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret")
        self.secret = secret
        self.branch = branch
        self.on_push = on_push
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/webhook"

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="serveops-webhook", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, event: str, body: bytes, sig: str | None) -> tuple[int, dict[str, Any]]:
        """The answer to one delivery: (HTTP status, JSON body)."""
        if not verify(self.secret, body, sig):
            return 401, {"error": "bad or missing X-Hub-Signature-256"}
        if event == "ping":
            return 200, {"status": "pong"}
        if event != "push":
            return 202, {"status": "ignored", "reason": f"event {event!r} is not a push"}
        try:
            payload = json.loads(body)
            push = PushEvent(
                ref=str(payload["ref"]),
                after=str(payload.get("after", "")),
                pusher=str((payload.get("pusher") or {}).get("name", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"error": "not a GitHub push event"}
        if push.ref != f"refs/heads/{self.branch}":
            return 202, {"status": "ignored", "reason": f"{push.ref} is not the watched branch"}
        log.info(
            "push to %s (%s) by %s: reconciling now", self.branch, push.after[:12], push.pusher
        )
        self.on_push(push)
        return 202, {"status": "reconciling", "after": push.after}


def _handler_for(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._answer(413 if length > MAX_BODY else 400, {"error": "bad Content-Length"})
                return
            body = self.rfile.read(length)
            status, answer = server.handle(
                self.headers.get("X-GitHub-Event", ""),
                body,
                self.headers.get("X-Hub-Signature-256"),
            )
            self._answer(status, answer)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/healthz":
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"error": "not found"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook: " + format, *args)

    return Handler
