"""`python -m controller.dev.load`: the tour's load by hand, against a local HTTP server that
stands in for a route (fake), stopped by SIGTERM as `kill %2` does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_load_runs_until_sigterm_and_counts_answers_and_failures() -> None:
    bodies: list[dict[str, object]] = []

    class Route(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            status = 503 if len(bodies) == 3 else 200  # one failure to count
            self.send_response(status)
            self.send_header("x-serveops-version", "1")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Route)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/breast-cancer"
    try:
        load = subprocess.Popen(
            [sys.executable, "-m", "controller.dev.load", url, "--rate", "40"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(bodies) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        load.send_signal(signal.SIGTERM)
        out, _ = load.communicate(timeout=60)
    finally:
        server.shutdown()
    assert load.returncode == 1, out  # a failure was counted
    assert "1 failed" in out
    last = out.splitlines()[-1]  # the failure itself: when, and what came back
    assert last.startswith("  failed ")
    assert "503" in last
    rows = {json.dumps(b, sort_keys=True) for b in bodies}
    assert len(rows) == len(bodies)  # a different data set row with each request
