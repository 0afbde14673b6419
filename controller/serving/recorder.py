"""Recording a sample of live requests as JSON Lines, off the request path.

The router hands each sampled request to `Recorder.offer`, which only puts it on a bounded
queue: it never blocks and never raises. A writer thread turns the raw exchanges into records
in the format `simulator/traffic.py` reads (`serveops replay` replays them as they are) and
appends them to files rotated by size. When the queue is full, because the sink is slow or
stuck, the request is dropped and counted, never waited for; a failed write (a full disk) loses
its batch, counted too, and never reaches a request.

Each recorder writes its own files, `<dir>/<deployment>--<UTC start>-<tag>-<n>.jsonl` (the tag
tells router replicas apart), each starting with the traffic format's header line. Recordings
hold what users sent, so by default they hold little: only allow-listed headers, secret-looking
query parameters and the deployment's chosen body fields masked, files 0600 in a 0700
directory, and the deployment's files in the directory capped in number and total size across
every replica and restart (the oldest go first).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.serving.privacy import TRANSPORT_HEADERS, HeaderFilter, Scrubber
from controller.serving.protocol import RecordingConfig

# simulator/imports.py reads TRANSPORT_HEADERS from here; tests, HeaderFilter.
__all__ = ["TRANSPORT_HEADERS", "HeaderFilter", "Scrubber"]

logger = logging.getLogger("ray.serve")

TRAFFIC_FORMAT = "serveops-traffic/v1"  # simulator.traffic.FORMAT
_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
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


def client_request_id(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The client's `X-Request-Id`, kept whatever the header allow-list says (delayed labels
    are joined on it, docs/monitoring.md); only when it is a plain token of at most 128
    characters (it comes from users: nothing else is written)."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def decode_body(raw: bytes | None) -> Any:
    """JSON bodies as values; anything else as text (replayed as is); nothing as None."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


class RotatingFileSink:
    """JSON Lines files that rotate once they reach `max_bytes`. The files matching `family`
    (this deployment's, from every replica and every earlier process) are capped at `keep_files`
    and `max_total_bytes` together: the oldest are deleted when a file is opened. The directory
    is made 0700 and each file 0600; a write that fails (a full disk) is cut back out of the
    file, so a file never holds half a line."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        max_bytes: int,
        keep_files: int,
        *,
        max_total_bytes: int | None = None,
        family: str | None = None,
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.max_total_bytes = max_total_bytes
        self.family = family or f"{prefix}-*.jsonl"
        self.header: dict[str, Any] = {"kind": "header", "format": TRAFFIC_FORMAT}
        self._written: list[Path] = []  # this sink's files, oldest first
        self._opened = 0
        self._fd: int | None = None  # the open file, written unbuffered
        self._size = 0

    @property
    def files(self) -> list[str]:
        return [str(p) for p in self._written if p.exists()]

    def _open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:  # made by someone else, or before: tighten
            self.directory.chmod(0o700)
        self._opened += 1
        path = self.directory / f"{self.prefix}-{self._opened:04d}.jsonl"
        # Never appends to another's file; never readable by others, whatever the umask.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._written.append(path)
        self._size = 0
        self._append((json.dumps(self.header) + "\n").encode())
        self._trim(path)

    def _trim(self, current: Path) -> None:
        """Delete the family's oldest files beyond `keep_files` or the total size (leaving room
        for the file just opened to fill)."""
        family = []
        for p in self.directory.glob(self.family):
            try:
                st = p.stat()
            except FileNotFoundError:  # another replica deleted it meanwhile
                continue
            family.append((st.st_mtime, p.name, p, st.st_size))
        family.sort()
        count, total = len(family), sum(entry[3] for entry in family)
        budget = None if self.max_total_bytes is None else self.max_total_bytes - self.max_bytes
        for _, _, path, size in family:
            over = count > self.keep_files or (budget is not None and total > budget)
            if over and path != current:
                path.unlink(missing_ok=True)
                count, total = count - 1, total - size
        self._written = [p for p in self._written if p.exists()]

    def _append(self, data: bytes) -> None:
        """Write `data` whole, or cut the file back to where it was, close it and raise."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            finally:
                self._close_file()
            raise
        self._size += len(data)

    def write(self, lines: list[str]) -> None:
        chunk: list[str] = []
        pending = 0
        for line in lines:
            if self._fd is None:
                self._open()
            chunk.append(line)
            pending += len(line)
            if self._size + pending >= self.max_bytes:  # the line that crosses the size ends it
                self._append("".join(chunk).encode())
                chunk, pending = [], 0
                self._close_file()
        if chunk:
            if self._fd is None:
                self._open()
            self._append("".join(chunk).encode())

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> None:
        self._close_file()


class Recorder:
    """A bounded queue in front of a sink, drained by one writer thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        sample_rate: float = 1.0,
        deny_headers: Iterable[str] = (),
        allow_headers: Iterable[str] | None = None,
        scrubber: Scrubber | None = None,
        queue_size: int = 10_000,
        tag: str | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._sink = sink
        self._filter = HeaderFilter(deny_headers, allow_headers)
        self._scrub = scrubber or Scrubber()
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
            response["body"] = self._scrub.body(decode_body(ex.response_body))
        if ex.version is not None:
            response["version"] = ex.version
        rec: dict[str, Any] = {
            "id": f"{self._tag}-{self._seq}",
            "ts": ex.arrived,
            "route": self._scrub.path(ex.path),
            "method": ex.method,
            "headers": self._filter(ex.headers),
            "body": self._scrub.body(decode_body(ex.body)),
            "response": response,
        }
        request_id = client_request_id(ex.headers)
        if request_id is not None:  # after `id` and `ts`: the monitor reads those first
            rec["request_id"] = request_id
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
    # `--` ends the name (names never hold it), so one deployment's files are never another's.
    sink = RotatingFileSink(
        Path(config.dir).expanduser(),
        f"{deployment}--{stamp}-{tag}",
        max_bytes=max(1, int(config.max_file_mb * 1024 * 1024)),
        keep_files=config.keep_files,
        max_total_bytes=max(1, int(config.max_total_mb * 1024 * 1024)),
        family=f"{deployment}--*.jsonl",
    )
    sink.header["source"] = f"recorded by the router of {deployment}"
    sink.header["notes"] = [f"sample rate {config.sample_rate:g}"]
    return Recorder(
        sink,
        sample_rate=config.sample_rate,
        deny_headers=config.deny_headers,
        allow_headers=config.allow_headers,
        scrubber=Scrubber(config.redact_query, config.redact_fields),
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
