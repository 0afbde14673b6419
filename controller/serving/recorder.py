"""Recording a sample of live requests as JSON Lines, off the request path.

The router hands each sampled request to `Recorder.offer`, which only puts it on a bounded
queue: it never blocks and never raises. A writer thread turns the raw exchanges into records
in the format `simulator/traffic.py` reads (`serveops replay` replays them as they are) and
appends them to files rotated by size. When the queue is full, because the sink is slow or
stuck, the request is dropped and counted, never waited for; a failed write is counted too.

Each recorder writes its own files, `<dir>/<deployment>-<UTC start>-<tag>-<n>.jsonl` (the tag
tells router replicas apart), each starting with the traffic format's header line.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.serving.protocol import RecordingConfig

logger = logging.getLogger("ray.serve")

TRAFFIC_FORMAT = "serveops-traffic/v1"  # simulator.traffic.FORMAT
# Describe one connection, not the request: replaying them would be wrong (a re-encoded body
# has another length) or meaningless. Never recorded, whatever the deny list says.
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
BATCH = 256  # records written (and flushed) at once by the writer thread
ERROR_LOG_EVERY_S = 60.0


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through a call
class Exchange:
    """One request and its answer as the router saw them; raw, decoded by the writer thread."""

    arrived: float  # epoch seconds
    method: str
    path: str
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes
    status: int | None  # None: the router raised (the client got Serve's 500)
    response_body: bytes | None
    latency_ms: float
    version: str | None


@dataclass(frozen=True)
class RecorderStats:
    recorded: int  # written to the sink
    dropped: int  # sampled but not queued: the queue was full
    write_errors: int  # queued but lost: the sink failed
    files: list[str]


class Sink(Protocol):
    def write(self, lines: list[str]) -> None: ...

    def close(self) -> None: ...

    @property
    def files(self) -> list[str]: ...


class HeaderFilter:
    """Case-insensitive deny list of header names and globs (`*token*`), plus transport headers."""

    def __init__(self, deny: Iterable[str]) -> None:
        patterns = [d.lower() for d in deny]
        self._exact = frozenset(p for p in patterns if not any(c in p for c in "*?[")) | (
            TRANSPORT_HEADERS
        )
        self._globs = tuple(p for p in patterns if any(c in p for c in "*?["))

    def denied(self, name: str) -> bool:
        return name in self._exact or any(fnmatch.fnmatchcase(name, g) for g in self._globs)

    def __call__(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        kept: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1").lower()
            if not self.denied(name):
                kept[name] = raw_value.decode("latin-1")
        return kept


def decode_body(raw: bytes | None) -> Any:
    """JSON bodies as values; anything else as text (replayed as is); nothing as None."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


class RotatingFileSink:
    """JSON Lines files that rotate once they reach `max_bytes`; keeps the newest `keep_files`."""

    def __init__(self, directory: Path, prefix: str, max_bytes: int, keep_files: int) -> None:
        self.directory = directory
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.header: dict[str, Any] = {"kind": "header", "format": TRAFFIC_FORMAT}
        self._written: list[Path] = []  # the files kept, oldest first
        self._opened = 0
        self._file: Any = None
        self._size = 0

    @property
    def files(self) -> list[str]:
        return [str(p) for p in self._written]

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._opened += 1
        path = self.directory / f"{self.prefix}-{self._opened:04d}.jsonl"
        self._file = path.open("x", encoding="utf-8")  # never appends to another's file
        self._size = self._file.write(json.dumps(self.header) + "\n")
        self._written.append(path)
        for old in self._written[: -self.keep_files]:
            old.unlink(missing_ok=True)
        self._written = self._written[-self.keep_files :]

    def write(self, lines: list[str]) -> None:
        for line in lines:
            if self._file is None:
                self._open()
            self._size += self._file.write(line)
            if self._size >= self.max_bytes:
                self._file.close()
                self._file = None
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Recorder:
    """A bounded queue in front of a sink, drained by one writer thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        sample_rate: float = 1.0,
        deny_headers: Iterable[str] = (),
        queue_size: int = 10_000,
        tag: str | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._sink = sink
        self._filter = HeaderFilter(deny_headers)
        self._queue: queue.Queue[Exchange] = queue.Queue(maxsize=queue_size)
        self._tag = tag or uuid.uuid4().hex[:8]
        self._seq = 0
        self._dropped = 0
        self._recorded = 0
        self._write_errors = 0
        self._last_error_log = -ERROR_LOG_EVERY_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serveops-recorder", daemon=True)
        self._thread.start()

    def sampled(self, rand: float) -> bool:
        """Whether a request drawing `rand` in [0, 1) is recorded."""
        return rand < self.sample_rate

    def offer(self, exchange: Exchange) -> bool:
        """Queue an exchange for writing; False (and counted) when the queue is full."""
        if self._queue.full():  # the common way to drop: cheaper than raising queue.Full
            self._dropped += 1
            return False
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:  # another thread filled it since the check (routers: one puts)
            self._dropped += 1
            return False
        return True

    def stats(self) -> RecorderStats:
        return RecorderStats(self._recorded, self._dropped, self._write_errors, self._sink.files)

    def close(self, timeout_s: float | None = 5.0) -> None:
        """Stop after writing what is queued; waits at most `timeout_s` (None: do not wait)."""
        self._stop.set()
        if timeout_s is not None:
            self._thread.join(timeout_s)

    def record(self, ex: Exchange) -> dict[str, Any]:
        """The traffic-format record of one exchange (`simulator.traffic.TrafficRecord`)."""
        self._seq += 1
        response: dict[str, Any] = {"latency_ms": round(ex.latency_ms, 3)}
        if ex.status is not None:
            response["status"] = ex.status
        if ex.response_body is not None:
            response["body"] = decode_body(ex.response_body)
        if ex.version is not None:
            response["version"] = ex.version
        rec: dict[str, Any] = {
            "id": f"{self._tag}-{self._seq}",
            "ts": ex.arrived,
            "route": ex.path,
            "method": ex.method,
            "headers": self._filter(ex.headers),
            "body": decode_body(ex.body),
            "response": response,
        }
        return rec

    def _run(self) -> None:
        try:
            while True:
                try:
                    batch = [self._queue.get(timeout=0.2)]
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                self._write(batch)
        finally:
            try:
                self._sink.close()
            except Exception:
                logger.exception("recorder: closing the sink failed")

    def _write(self, batch: list[Exchange]) -> None:
        try:
            lines = [json.dumps(self.record(ex), separators=(",", ":")) + "\n" for ex in batch]
            self._sink.write(lines)
        except Exception:  # a full disk loses records, never requests
            self._write_errors += len(batch)
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_EVERY_S:  # a broken disk fails every batch
                self._last_error_log = now
                logger.exception("recorder: %d records lost so far", self._write_errors)
        else:
            self._recorded += len(batch)


def start(config: RecordingConfig, deployment: str) -> Recorder:
    """A recorder writing `config.dir`, its file names starting with the deployment's name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tag = uuid.uuid4().hex[:8]
    sink = RotatingFileSink(
        Path(config.dir),
        f"{deployment}-{stamp}-{tag}",
        max_bytes=max(1, int(config.max_file_mb * 1024 * 1024)),
        keep_files=config.keep_files,
    )
    sink.header["source"] = f"recorded by the router of {deployment}"
    sink.header["notes"] = [f"sample rate {config.sample_rate:g}"]
    return Recorder(
        sink,
        sample_rate=config.sample_rate,
        deny_headers=config.deny_headers,
        queue_size=config.queue_size,
        tag=tag,
    )


def replace_recorder(
    current: Recorder | None,
    current_config: RecordingConfig | None,
    wanted: RecordingConfig | None,
    deployment: str,
) -> Recorder | None:
    """The recorder for `wanted`: the current one when nothing changed, else a new one (the old
    one finishes writing its queue in the background)."""
    if current is not None and wanted == current_config:
        return current
    if current is not None:
        current.close(timeout_s=None)
    return start(wanted, deployment) if wanted is not None else None
