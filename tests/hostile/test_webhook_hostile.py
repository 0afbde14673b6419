"""The webhook's port may be reachable by anyone: malformed signatures, replays, oversized or
trickled bodies and floods of connections get a bounded, prompt answer (or none), never a
thread each or a pass. Raw sockets, so the client can misbehave; no timing assertions: every
wait has a generous bound, and what is asserted is the server's answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.gitops.webhook import PushEvent, WebhookServer, signature

SECRET = b"s3cret-for-tests"
CLIENT_TIMEOUT_S = 30.0  # far beyond the server's read timeout in these tests


def push_body(after: str = "a" * 40) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": after, "pusher": {"name": "x"}}).encode()


@pytest.fixture
def hook() -> Iterator[tuple[WebhookServer, list[PushEvent]]]:
    pushes: list[PushEvent] = []
    try:  # the limits a hostile client meets, small so the test is quick
        from controller.gitops.webhook import Limits

        kwargs: dict[str, Any] = {
            "limits": Limits(read_timeout_s=1.0, workers=2, queue_size=2, max_body=64 * 1024)
        }
    except ImportError:  # the base commit: no limits to give
        kwargs = {}
    with WebhookServer(SECRET, "main", pushes.append, **kwargs) as server:
        yield server, pushes


def raw_request(
    server: WebhookServer,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    send_body: bool = True,
) -> tuple[int | None, bytes]:
    """Send a request by hand (headers encoded as Latin-1, as HTTP allows); returns the status
    and the raw answer, (None, b"") when the server closed without answering."""
    head = "POST /webhook HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT_S) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + (body if send_body else b""))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    if not answer:
        return None, b""
    return int(answer.split(b" ", 2)[1]), answer


def signed(body: bytes, **extra: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Hub-Signature-256": signature(SECRET, body),
        **extra,
    }


@pytest.mark.parametrize(
    "sig",
    ["sha256=é" + "0" * 63, "sha256=\x00", "sha256=zz", "", "sha256=" + "0" * 10_000],
    ids=["non-ascii", "nul", "not-hex", "empty", "huge"],
)
def test_any_malformed_signature_is_401(
    hook: tuple[WebhookServer, list[PushEvent]], sig: str
) -> None:
    server, pushes = hook
    body = push_body()
    status, _ = raw_request(server, signed(body, **{"X-Hub-Signature-256": sig}), body)
    assert status == 401
    assert pushes == []


def test_a_replayed_delivery_is_refused(hook: tuple[WebhookServer, list[PushEvent]]) -> None:
    server, pushes = hook
    body = push_body()
    first = signed(body, **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    assert raw_request(server, first, body)[0] == 202
    assert raw_request(server, first, body)[0] == 409  # the same delivery again
    renamed = {**first, "X-GitHub-Delivery": "00000000-0000-0000-0000-000000000000"}
    assert raw_request(server, renamed, body)[0] == 409  # the same signed body, another id
    assert len(pushes) == 1


def test_a_body_over_the_limit_is_refused_unread(
    hook: tuple[WebhookServer, list[PushEvent]],
) -> None:
    server, pushes = hook
    headers = signed(b"", **{"Content-Length": str(2 * 1024 * 1024)})  # push events are KiB
    status, _ = raw_request(server, headers, send_body=False)
    assert status == 413
    assert pushes == []


def test_a_client_that_trickles_or_stalls_is_cut_off(
    hook: tuple[WebhookServer, list[PushEvent]],
) -> None:
    server, pushes = hook
    body = push_body()
    # Headers and half the body, then nothing: the server must end it, not wait forever.
    status, answer = raw_request(server, signed(body), body[: len(body) // 2])
    assert status in (None, 408), answer
    assert pushes == []


def test_a_flood_of_connections_gets_a_bounded_pool_and_is_shed(
    hook: tuple[WebhookServer, list[PushEvent]],
) -> None:
    """100 clients open a connection and send nothing. The server does not grow a thread per
    connection; those beyond its pool and queue are closed at once; then it serves again."""
    server, pushes = hook
    before = threading.active_count()
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    deadline = time.monotonic() + CLIENT_TIMEOUT_S  # for all of them together
    closed, most = 0, 0
    try:
        for s in stalled:
            most = max(most, threading.active_count())
            s.settimeout(max(0.01, deadline - time.monotonic()))
            closed += _closed_by_server(s)
    finally:
        for s in stalled:
            s.close()
    assert closed == 100  # each ended by the server: shed at once, or cut at its deadline
    assert most - before <= 2 * 2 + 2  # workers and their watchdogs, not a thread each
    body = push_body("b" * 40)
    assert raw_request(server, signed(body), body)[0] == 202
    assert len(pushes) == 1


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
