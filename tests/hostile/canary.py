"""Canary secrets and the local servers that carry them: a Git repository served over HTTP
(a URL with a token), and a notification sink that keeps every body it receives.

A canary is a unique string planted where an operator keeps a secret; every output of a run is
then scanned for it. Each canary has a shape no generic pattern recognises, so finding none
shows that the mechanism meant for it (URL userinfo, registered secrets, hooks' environment)
worked, not a lucky regex.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import git

TRACKING_USER = "mlflowuser"
TRACKING_PASS = "CANARYtrackingPASS7f3a"
WEBHOOK_SECRET = "CANARYwebhookSECRET91bc"
GIT_TOKEN = "CANARYgitTOKEN4d2e"
HOOK_SECRET = "CANARYhookSECRET55aa"
NOTIFY_TOKEN = "CANARYnotifyTOKEN0c1d"
CANARIES = (TRACKING_PASS, WEBHOOK_SECRET, GIT_TOKEN, HOOK_SECRET, NOTIFY_TOKEN)
HOOK_ENV_NAME = "HOOK_API_TOKEN"  # the operator passes it to command hooks ($SERVEOPS_HOOK_ENV)


def leaks(outputs: dict[str, str | bytes]) -> dict[str, list[str]]:
    """Output name -> canaries found in it (none: {})."""
    found: dict[str, list[str]] = {}
    for name, content in outputs.items():
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        hits = [c for c in CANARIES if c in text]
        if hits:
            found[name] = hits
    return found


def state_files(state: Path) -> dict[str, bytes]:
    """The SQLite file and its WAL/journal, as bytes: what anyone with the file can read."""
    return {
        p.name: p.read_bytes() for p in sorted(state.parent.glob(state.name + "*")) if p.is_file()
    }


def leaky_hook_command(python: str) -> list[str]:
    """A hook that prints every secret it can reach and fails, so its output is quoted."""
    code = (
        "import os, sys; "
        f"print('hook sees', os.environ.get({HOOK_ENV_NAME!r}), "
        "os.environ.get('SERVEOPS_WEBHOOK_SECRET'), os.environ.get('MLFLOW_TRACKING_URI'), "
        "file=sys.stderr); sys.exit(3)"
    )
    return [python, "-c", code]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def git_http(repo: Path, root: Path) -> Iterator[str]:
    """`repo` served read-only over Git's dumb HTTP protocol; yields its URL, with a token in
    its userinfo (the server ignores it, as a real one would check it)."""
    bare = root / "served.git"
    git(root, "clone", "--bare", "--quiet", str(repo), str(bare))
    git(bare, "update-server-info")
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://x-access-token:{GIT_TOKEN}@127.0.0.1:{server.server_address[1]}/served.git"
    finally:
        server.shutdown()
        server.server_close()


def publish(repo: Path, root: Path) -> None:
    """Push `repo`'s main to the served bare repository."""
    bare = root / "served.git"
    git(repo, "push", "--quiet", "--force", str(bare), "main:main")
    git(bare, "update-server-info")


class Sink:
    """Receives notifications: every body, as text."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sink.bodies.append(self.rfile.read(length).decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """A webhook URL with a secret in its path, as Slack's are."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{NOTIFY_TOKEN}"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.bodies]

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def joined(parts: Iterable[str]) -> str:
    return "\n".join(parts)
