"""A fake model endpoint for tests and benchmarks: fast, local, and not Ray.

It answers MLflow scoring requests (`dataframe_split`) with a 0/1 label per row, computed from the
row itself so two fakes agree unless told to `flip` a share of rows (the same rows every time).
Optional delay (lognormal, median `delay_ms`, times `slowdown`) and error rate. One asyncio
protocol in its own process, so it does not share the load generator's core or GIL.

    python -m simulator.fake_endpoint --port 8123 --version 2 --flip 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zlib
from types import TracebackType
from typing import Any

VERSION_HEADER = "x-serveops-version"  # as controller.serving.protocol, without importing it


def predict_rows(body: Any, flip: float) -> list[int]:
    split = body.get("dataframe_split") if isinstance(body, dict) else None
    rows = split.get("data", []) if isinstance(split, dict) else []
    labels = []
    for row in rows:
        label = 1 if row and float(row[0]) < 14.0 else 0
        if flip > 0:
            h = zlib.crc32(json.dumps(row).encode()) % 100_000
            if h < flip * 100_000:
                label = 1 - label
        labels.append(label)
    return labels


class _Protocol(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.server.handle(self, head.split(" ", 2)[1] if " " in head else "/", body)

    def send(self, status: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}.get(status, "OK")
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"{VERSION_HEADER}: {self.server.version}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )


class FakeServer:
    def __init__(
        self,
        version: str,
        delay_ms: float,
        sigma: float,
        slowdown: float,
        flip: float,
        error_rate: float,
        seed: int,
    ) -> None:
        self.version = version
        self.delay_ms = delay_ms
        self.sigma = sigma
        self.slowdown = slowdown
        self.flip = flip
        self.error_rate = error_rate
        self.rng = random.Random(seed)
        self.loop = asyncio.get_event_loop()

    def handle(self, proto: _Protocol, path: str, body: bytes) -> None:
        if path.startswith("/-/healthz"):
            proto.send(200, b'{"ok": true}')
            return
        if self.error_rate and self.rng.random() < self.error_rate:
            status, payload = 500, b'{"error_code": 500, "message": "injected error"}'
        else:
            try:
                labels = predict_rows(json.loads(body) if body else None, self.flip)
                status, payload = 200, json.dumps({"predictions": labels}).encode()
            except (ValueError, TypeError, IndexError):
                status, payload = 400, b'{"error_code": "BAD_REQUEST"}'
        if self.delay_ms > 0:
            delay = self.delay_ms * self.slowdown * self.rng.lognormvariate(0.0, self.sigma)
            self.loop.call_later(delay / 1000.0, proto.send, status, payload)
        else:
            proto.send(status, payload)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeServer(
        args.version,
        args.delay_ms,
        args.sigma,
        args.slowdown,
        args.flip,
        args.error_rate,
        args.seed,
    )
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Protocol(server), "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with srv:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", default="1")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--sigma", type=float, default=0.0)
    ap.add_argument("--slowdown", type=float, default=1.0)
    ap.add_argument("--flip", type=float, default=0.0)
    ap.add_argument("--error-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    asyncio.run(_serve(ap.parse_args(argv)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeEndpoint:
    """Start the fake in a child process; `with FakeEndpoint(...) as ep: ep.url`."""

    def __init__(self, **options: float | str) -> None:
        self.port = _free_port()
        self.options = options
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 15.0) -> FakeEndpoint:
        cmd = [sys.executable, "-m", "simulator.fake_endpoint", "--port", str(self.port)]
        for k, v in self.options.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        self._proc = subprocess.Popen(cmd, start_new_session=True, env=os.environ.copy())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake endpoint exited with {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake endpoint did not start")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> FakeEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
