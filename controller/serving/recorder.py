"""Recording a sample of live requests as JSON Lines, off the request path.

The router hands each sampled request to `Recorder.offer`, which only puts it on a bounded
queue: it never blocks and never raises. A writer thread turns the raw exchanges into records
in the format `simulator/traffic.py` reads (`serveops replay` replays them as they are) and
appends them to files rotated by size (controller/serving/files.py), each with its feature
columns beside it for the monitor (controller/serving/columnar.py). When the queue is full,
because the sink is slow or stuck, the request is dropped and counted, never waited for; a
failed write (a full disk) loses its batch, counted too, and never reaches a request.

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
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

try:  # in the serving extra; a node image without it records with json, 3x slower
    import msgspec
except ImportError:  # test_recorder runs the writer both ways
    msgspec = None  # type: ignore[assignment]

from controller.serving.columnar import Grid, grid_of
from controller.serving.files import TRAFFIC_FORMAT, RotatingFileSink
from controller.serving.privacy import TRANSPORT_HEADERS, HeaderFilter, Scrubber
from controller.serving.protocol import VERSION_HEADER, RecordingConfig

if TYPE_CHECKING:  # only in annotations: the simulator imports this module without a server
    from starlette.requests import Request
    from starlette.responses import JSONResponse

# simulator/imports.py reads TRANSPORT_HEADERS from here; tests, HeaderFilter; tests and
# benches, RotatingFileSink.
__all__ = ["TRAFFIC_FORMAT", "TRANSPORT_HEADERS", "HeaderFilter", "RotatingFileSink", "Scrubber"]

logger = logging.getLogger("ray.serve")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BATCH = 256  # records written (and flushed) at once by the writer thread
# msgspec, not json, turns bodies into records and records into lines: 7x less of the writer
# thread's CPU (and of the GIL it shares with the router's event loop).
_DECODE = msgspec.json.Decoder() if msgspec is not None else None
_ENCODE = msgspec.json.Encoder() if msgspec is not None else None
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


async def exchange_of(
    request: Request, arrived: float, started: float, response: JSONResponse | None
) -> Exchange:
    """A request and its answer (None: the router raised) as the router saw them, `started`
    on the monotonic clock. The body is in the replica's memory already: Serve's proxy sends
    it whole."""
    latency_ms = (time.perf_counter() - started) * 1000.0  # the answer's time, not the read below
    body, url = await request.body(), request.url
    return Exchange(
        arrived=arrived,
        method=request.method,
        path=f"{url.path}?{url.query}" if url.query else url.path,
        headers=request.headers.raw,
        body=body,
        status=response.status_code if response is not None else None,
        response_body=bytes(response.body) if response is not None else None,
        latency_ms=latency_ms,
        version=response.headers.get(VERSION_HEADER) if response is not None else None,
    )


@dataclass(frozen=True)
class RecorderStats:
    recorded: int  # written to the sink
    dropped: int  # sampled but not queued: the queue was full
    write_errors: int  # queued but lost: the sink failed
    files: list[str]


class Sink(Protocol):
    # Lines are JSON, UTF-8, each ending in a newline. `grids` come only when the sink has
    # `keeps_columns` true (controller/serving/columnar.py): each line's grid, or None.
    def write(self, lines: list[bytes], grids: Sequence[Grid | None] | None = None) -> None: ...

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


def decode_body(raw: bytes | None) -> tuple[Any, bool]:
    """JSON bodies as values; anything else as text (replayed as is); nothing as None. And
    whether msgspec took it: False when only Python's json did (NaN, Infinity, a number out of
    float range), whose record must then be written by json too (msgspec writes NaN as null)."""
    if not raw:
        return None, True
    if _DECODE is not None:
        try:
            return _DECODE.decode(raw), True
        except msgspec.DecodeError:
            pass
        except RecursionError:  # nested deeper than a decoder's stack: kept as text
            return raw.decode("utf-8", errors="replace"), True
    try:
        return json.loads(raw), False
    except (ValueError, RecursionError):
        return raw.decode("utf-8", errors="replace"), True


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
        self._grids = bool(getattr(sink, "keeps_columns", False))
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
        return self._record(ex)[0]

    def _record(self, ex: Exchange) -> tuple[dict[str, Any], bool]:
        """The record, and whether msgspec can write it exactly (`decode_body`)."""
        self._seq += 1
        response: dict[str, Any] = {"latency_ms": round(ex.latency_ms, 3)}
        if ex.status is not None:
            response["status"] = ex.status
        exact = True
        if ex.response_body is not None:
            answer, exact = decode_body(ex.response_body)
            response["body"] = self._scrub.body(answer)
        if ex.version is not None:
            response["version"] = ex.version
        body, body_exact = decode_body(ex.body)
        rec: dict[str, Any] = {
            "id": f"{self._tag}-{self._seq}",
            "ts": ex.arrived,
            "route": self._scrub.path(ex.path),
            "method": ex.method,
            "headers": self._filter(ex.headers),
            "body": self._scrub.body(body),
            "response": response,
        }
        request_id = client_request_id(ex.headers)
        if request_id is not None:  # after `id` and `ts`: the monitor reads those first
            rec["request_id"] = request_id
        return rec, exact and body_exact

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
                self.write_batch(batch)
        finally:
            try:
                self._sink.close()
            except Exception:
                logger.exception("recorder: closing the sink failed")

    def write_batch(self, batch: list[Exchange]) -> None:
        """What the writer thread does with the exchanges it takes off the queue at once."""
        try:
            lines, records = [], []
            for ex in batch:
                rec, exact = self._record(ex)
                records.append(rec)
                if exact and _ENCODE is not None:
                    lines.append(_ENCODE.encode(rec) + b"\n")
                else:  # NaN or Infinity in a body: as json wrote it, which reads it back
                    lines.append((json.dumps(rec, separators=(",", ":")) + "\n").encode())
            grids = [grid_of(rec) for rec in records] if self._grids else None
            self._sink.write(lines, grids)
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
        columns=True,
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
