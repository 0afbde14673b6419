"""LocalRay and Ray's token authentication, without Ray: once any local `ray.init()` wrote
~/.ray/auth_token, `ray start` turns tokens on unless told otherwise. The local head is started
with RAY_AUTH_MODE=disabled, and a dashboard that answers 401 is a clear error, not a wait."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.dev import localray
from controller.dev.localray import LocalRay
from controller.errors import ServeopsError


class _Started(Exception):
    pass


def test_the_local_head_is_started_without_token_authentication(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        seen.update(cmd=cmd, env=kwargs["env"])
        raise _Started

    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # even when the caller's shell says token
    monkeypatch.setattr(localray.subprocess, "Popen", popen)
    ray = LocalRay(2)
    try:
        with pytest.raises(_Started):
            ray._start_once(timeout_s=1)
    finally:
        shutil.rmtree(ray.temp_dir)
    assert seen["env"]["RAY_AUTH_MODE"] == "disabled"
    assert "--num-cpus=2" in seen["cmd"]


@pytest.fixture
def dashboard() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_dashboard_asking_for_a_token_fails_at_once(dashboard: str) -> None:
    ray = LocalRay(2, dashboard_port=int(dashboard.rsplit(":", 1)[1]))
    with pytest.raises(ServeopsError, match=r"requires authentication \(HTTP 401\)"):
        ray._wait_ready(timeout_s=60)
