"""A GitHub push webhook that makes the controller reconcile at once instead of at its next poll.

Every request must carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>` made with the
shared secret (GitHub's format); anything else, malformed included, is answered 401 and does
nothing. A push to the watched branch wakes the loop; other pushes and events are acknowledged
and ignored. The handler never reconciles itself: the loop does, so passes never overlap.

The port may be reachable by anyone, so the server is bounded (docs/security.md): a fixed pool
of worker threads behind a short queue (a connection that finds it full is closed at once), a
deadline for reading each request whole (a client that trickles bytes is cut off), a body
limit sized for push events, and a cache of the deliveries seen, so a captured delivery
replayed (same `X-GitHub-Delivery`, or the same signed body under another id) is refused.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import json
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

log = logging.getLogger("serveops.controller")

SECRET_ENV = "SERVEOPS_WEBHOOK_SECRET"
MAX_BODY = 1024 * 1024  # push events of even large pushes are tens of KiB; GitHub caps at 25 MB
READ_TIMEOUT_S = 10.0  # to read one request whole, headers and body
WORKERS = 4  # requests handled at once
QUEUE_SIZE = 16  # accepted connections waiting for a worker; beyond, closed at once
SEEN_DELIVERIES = 10_000  # delivery ids (and signatures) remembered to refuse replays


@dataclass(frozen=True)
class PushEvent:
    ref: str
    after: str  # the new head sha
    pusher: str


@dataclass(frozen=True)
class Limits:
    max_body: int = MAX_BODY
    read_timeout_s: float = READ_TIMEOUT_S
    workers: int = WORKERS
    queue_size: int = QUEUE_SIZE
    seen_deliveries: int = SEEN_DELIVERIES


def signature(secret: bytes, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body`; False for anything malformed (not ASCII,
    another algorithm, any length), never an exception."""
    if header is None:
        return False
    try:
        given = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(signature(secret, body).encode("ascii"), given)


class _Seen:
    """The last `size` keys, for refusing replays (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, *keys: str) -> bool:
        """Remember `keys`; False when one of them was seen already."""
        with self._lock:
            if any(k in self._keys for k in keys):
                return False
            for k in keys:
                self._keys[k] = None
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
            return True


class WebhookServer:
    """`POST /webhook` (any path) on host:port, served by a bounded pool of daemon threads.
    `port=0` picks a free one."""

    def __init__(
        self,
        secret: bytes,
        branch: str,
        on_push: Callable[[PushEvent], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret")
        self.secret = secret
        self.branch = branch
        self.on_push = on_push
        self.limits = limits = limits or Limits()
        self.rejected = 0  # connections closed unread: the queue was full
        self._seen = _Seen(limits.seen_deliveries)
        self._server = _PoolServer((host, port), _handler_for(self), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/webhook"

    def start(self) -> WebhookServer:
        self._server.start_workers()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="serveops-webhook", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.stop_workers()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(
        self, event: str, body: bytes, sig: str | None, delivery: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The answer to one delivery: (HTTP status, JSON body)."""
        if not verify(self.secret, body, sig):
            return 401, {"error": "bad or missing X-Hub-Signature-256"}
        assert sig is not None
        keys = [f"sig:{sig.strip()}"] + ([f"id:{delivery}"] if delivery else [])
        if not self._seen.add(*keys):
            log.warning("webhook: delivery %s replayed; refused", delivery or "(no id)")
            return 409, {"error": "this delivery was received already"}
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


class _PoolServer(HTTPServer):
    """Connections go onto a bounded queue that a fixed pool of threads drains; one that finds
    the queue full is closed unread (counted in `WebhookServer.rejected`)."""

    daemon_threads = True
    # The kernel's queue of connections not accepted yet (HTTPServer's default is 5). With 5, a
    # burst of connections beyond it is dropped at the handshake and retried by the clients
    # after 1, 2, 4 s: the flood test's 100 connections took 13 s to be shed, 2 s since.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], hook: WebhookServer
    ) -> None:
        super().__init__(address, handler)
        self.hook = hook
        self._queue: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(
            hook.limits.queue_size
        )
        self._workers: list[threading.Thread] = []

    def start_workers(self) -> None:
        for i in range(self.hook.limits.workers):
            worker = threading.Thread(target=self._work, name=f"serveops-webhook-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop_workers(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=self.hook.limits.read_timeout_s + 1)

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:
            self.hook.rejected += 1
            self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("webhook: request from %s failed", client_address, exc_info=True)


def _handler_for(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    limits = server.limits

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.read_timeout_s  # each read of the socket

        def setup(self) -> None:
            super().setup()
            # A client trickling a byte at a time passes every read's timeout: the whole
            # request must be in by the deadline, or its reading side is shut (reads end).
            self._watchdog = threading.Timer(limits.read_timeout_s, self._cut)
            self._watchdog.daemon = True
            self._watchdog.start()

        def _cut(self) -> None:
            with contextlib.suppress(OSError):  # closed already
                self.connection.shutdown(socket.SHUT_RD)

        def finish(self) -> None:
            self._watchdog.cancel()
            super().finish()

        def do_POST(self) -> None:
            if self.headers.get("Transfer-Encoding"):
                self._answer(411, {"error": "send a Content-Length, not a chunked body"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > limits.max_body:
                status = 413 if length > limits.max_body else 400
                self._answer(status, {"error": f"bad Content-Length (at most {limits.max_body})"})
                return
            try:
                body = self.rfile.read(length)
            except OSError:  # timed out, or reset: no answer owed
                body = b""
            self._watchdog.cancel()
            if len(body) != length:  # cut off at the deadline, or the client gave up
                self.close_connection = True
                return
            status, answer = server.handle(
                self.headers.get("X-GitHub-Event", ""),
                body,
                self.headers.get("X-Hub-Signature-256"),
                self.headers.get("X-GitHub-Delivery"),
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
            self.send_header("Connection", "close")  # one request per connection: bounded work
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook: " + format, *args)

    return Handler
