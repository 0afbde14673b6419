"""The benches' open loop (tests/e2e/load.py) against a local HTTP server, no Ray: a request
it sends late carries its lateness, and a window's p99 from when requests were due counts
it, so a load generator starved of CPU cannot hide a slow server (coordinated omission)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from tests.e2e.load import Answer, OpenLoop, summarize


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = b'{"predictions": [0]}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/m"
    httpd.shutdown()


def test_a_request_sent_late_carries_its_lateness(server: str) -> None:
    loop = OpenLoop(server, rate=1, body={"inputs": [[0]]})

    async def send() -> None:
        async with aiohttp.ClientSession() as session:
            await loop._one(session, late_s=2.5)

    asyncio.run(send())
    [answer] = loop.answers
    assert answer.status == 200
    assert answer.late_s == 2.5
    assert answer.from_due_s == answer.late_s + answer.latency_s


def test_the_p99_from_due_counts_what_the_client_was_late() -> None:
    on_time = [Answer(100.0 + i / 100, 0.010, 200, "1") for i in range(99)]
    held_back = [Answer(101.0, 0.010, 200, "1", late_s=1.2)]
    window = summarize(on_time + held_back, since=100.0, until=102.0)
    assert window.p99_ms == pytest.approx(10.0)  # timed from the send: the wait is hidden
    assert window.p99_due_ms == pytest.approx(1210.0)
