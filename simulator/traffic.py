"""Recorded traffic: one request per JSON line, plus importers and a time-window slicer.

A file may start with one header line (`{"kind": "header", ...}`) naming its format, where its
data came from and the attribution its licence asks for; `slice` and every writer carry it over,
so the attribution travels with the data. Every other line is a `TrafficRecord`.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT = "serveops-traffic/v1"

# Header names never written to a recording, matched case-insensitively: exact names, then parts.
DEFAULT_DENY_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-csrf-token"}
)
DEFAULT_DENY_PARTS: tuple[str, ...] = ("auth", "cookie", "token", "secret", "password", "api-key")

AZURE_ATTRIBUTION = (
    "Source: the Azure Public Dataset (AzureLLMInferenceTrace), licensed under Creative Commons "
    "Attribution 4.0. Attribution: Patel, Choukse, Zhang, Shah, Goiri, Maleki, Bianchini, "
    '"Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024.'
)
BREAST_CANCER_NOTE = (
    "Payloads: rows of scikit-learn's bundled breast cancer Wisconsin (diagnostic) data set."
)


class TrafficError(ValueError):
    """A traffic file or argument is malformed; the message names the file and line."""


class RecordedResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int | None = Field(default=None, description="HTTP status; None if none arrived.")
    body: Any = Field(default=None, description="Response body (parsed JSON, or text).")
    latency_ms: float | None = Field(default=None, ge=0)
    version: str | None = Field(default=None, description="Model version that answered.")


class TrafficRecord(BaseModel):
    """One recorded request and, when recorded live, its response."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Unique within a file; the shard key in distributed replay.")
    ts: float = Field(description="Arrival time, seconds since the Unix epoch (UTC).")
    route: str = Field(description="Path the request was sent to, e.g. /breast-cancer.")
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict, description="Filtered headers.")
    body: Any = Field(default=None, description="Request body (parsed JSON).")
    key: str | None = Field(default=None, description="Ordering key (e.g. a session); optional.")
    request_id: str | None = Field(
        default=None,
        description="The client's X-Request-Id, as the router recorded it (delayed labels are "
        "joined on it); absent in older recordings.",
    )
    response: RecordedResponse | None = None
    attrs: dict[str, Any] = Field(
        default_factory=dict, description="Source-specific facts, e.g. token counts of a trace."
    )


class TrafficHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["header"] = "header"
    format: str = FORMAT
    source: str | None = None
    license: str | None = None
    attribution: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def filter_headers(
    headers: Mapping[str, str],
    deny: Iterable[str] = DEFAULT_DENY_HEADERS,
    deny_parts: Iterable[str] = DEFAULT_DENY_PARTS,
) -> dict[str, str]:
    """Headers with credentials and cookies removed; names lower-cased."""
    deny_set = {d.lower() for d in deny}
    parts = tuple(p.lower() for p in deny_parts)
    kept = {}
    for name, value in headers.items():
        low = name.lower()
        if low in deny_set or any(p in low for p in parts):
            continue
        kept[low] = value
    return kept


# --- JSON Lines --------------------------------------------------------------------------------


def write_jsonl(
    path: Path, records: Iterable[TrafficRecord], header: TrafficHeader | None = None
) -> int:
    """Write records (after the header, if any); returns how many records were written."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        if header is not None:
            f.write(header.model_dump_json(exclude_none=True) + "\n")
        for rec in records:
            f.write(rec.model_dump_json(exclude_defaults=True) + "\n")
            n += 1
    return n


def iter_jsonl(path: Path) -> Iterator[TrafficHeader | TrafficRecord]:
    """The header (if present) and the records, validated, in file order."""
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise TrafficError(f"{path}: no such traffic file") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrafficError(f"{path}:{lineno}: not JSON: {e.msg}") from None
            try:
                if isinstance(obj, dict) and obj.get("kind") == "header":
                    if lineno != 1:
                        raise TrafficError(f"{path}:{lineno}: a header is only allowed on line 1")
                    yield TrafficHeader.model_validate(obj)
                else:
                    yield TrafficRecord.model_validate(obj)
            except ValidationError as e:
                first = e.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(record)"
                raise TrafficError(f"{path}:{lineno}: field {field}: {first['msg']}") from None


def read_jsonl(path: Path) -> tuple[TrafficHeader | None, list[TrafficRecord]]:
    header: TrafficHeader | None = None
    records: list[TrafficRecord] = []
    for item in iter_jsonl(path):
        if isinstance(item, TrafficHeader):
            header = item
        else:
            records.append(item)
    return header, records


def read_traffic(path: Path) -> tuple[TrafficHeader | None, list[TrafficRecord]]:
    """A traffic file, or every `*.jsonl` in a directory (a recording: one series of rotated
    files per router replica), merged in time order under the first file's header."""
    if not path.is_dir():
        return read_jsonl(path)
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise TrafficError(f"{path}: a directory without *.jsonl traffic files")
    header: TrafficHeader | None = None
    records: list[TrafficRecord] = []
    for file in files:
        file_header, file_records = read_jsonl(file)
        header = header or file_header
        records.extend(file_records)
    records.sort(key=lambda r: r.ts)
    if header is not None and len(files) > 1:
        note = f"merged from {len(files)} files in {path.name}"
        header = header.model_copy(update={"notes": [*header.notes, note]})
    return header, records


# --- importing the CSV traces ------------------------------------------------------------------


def parse_timestamp(text: str) -> float:
    """`2023-11-16 18:15:46.6805900` (UTC, up to 7 fractional digits) -> epoch seconds."""
    text = text.strip()
    whole, _, frac = text.partition(".")
    try:
        base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        try:
            base = datetime.fromisoformat(text)
        except ValueError:
            raise TrafficError(f"not a timestamp: {text!r}") from None
        if base.tzinfo is None:
            base = base.replace(tzinfo=UTC)
        return base.timestamp()
    return base.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


class PayloadSource:
    """Rows of scikit-learn's bundled breast cancer data set, in MLflow's `dataframe_split`."""

    def __init__(self, seed: int = 0) -> None:
        from sklearn.datasets import load_breast_cancer

        frame = load_breast_cancer(as_frame=True).data
        self.columns: list[str] = [str(c) for c in frame.columns]
        self.rows: list[list[float]] = [[float(v) for v in row] for row in frame.to_numpy()]
        self._rng = random.Random(seed)

    def body(self, n_rows: int) -> dict[str, Any]:
        picks = [self._rng.randrange(len(self.rows)) for _ in range(n_rows)]
        return {
            "dataframe_split": {
                "columns": self.columns,
                "index": picks,
                "data": [self.rows[i] for i in picks],
            }
        }


def rows_for_tokens(tokens: int, tokens_per_row: int, max_rows: int) -> int:
    """Request size in tokens -> rows in the payload: 1 + tokens // tokens_per_row, capped."""
    return max(1, min(max_rows, 1 + max(0, tokens) // tokens_per_row))


def import_csv_trace(
    path: Path,
    *,
    route: str = "/breast-cancer",
    tokens_per_row: int = 256,
    max_rows: int = 32,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[TrafficHeader, list[TrafficRecord]]:
    """An Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens) -> records.

    Arrival times are kept exactly; each request's size (ContextTokens) chooses how many data set
    rows its payload carries. The same seed always gives the same payloads.
    """
    payloads = PayloadSource(seed)
    records: list[TrafficRecord] = []
    try:
        f = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TrafficError(f"{path}: no such file") from None
    with f:
        reader = csv.DictReader(f)
        needed = {"TIMESTAMP", "ContextTokens"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise TrafficError(
                f"{path}:1: expected columns {sorted(needed)} (and GeneratedTokens), "
                f"found {reader.fieldnames}"
            )
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            lineno = i + 2
            try:
                ts = parse_timestamp(row["TIMESTAMP"])
                ctx = int(row["ContextTokens"])
                gen = int(row.get("GeneratedTokens") or 0)
            except (TrafficError, ValueError) as e:
                raise TrafficError(f"{path}:{lineno}: {e}") from None
            n_rows = rows_for_tokens(ctx, tokens_per_row, max_rows)
            records.append(
                TrafficRecord(
                    id=f"{path.stem}-{i:06d}",
                    ts=ts,
                    route=route,
                    headers={"content-type": "application/json"},
                    body=payloads.body(n_rows),
                    attrs={"context_tokens": ctx, "generated_tokens": gen, "rows": n_rows},
                )
            )
    records.sort(key=lambda r: r.ts)
    header = TrafficHeader(
        source=f"{path.name} (arrival times and request sizes)",
        license="CC-BY-4.0",
        attribution=[AZURE_ATTRIBUTION],
        notes=[
            BREAST_CANCER_NOTE,
            f"rows per request = 1 + ContextTokens // {tokens_per_row}, at most {max_rows}; "
            f"seed {seed}.",
        ],
    )
    return header, records


# --- slicing -----------------------------------------------------------------------------------


def parse_window(text: str, first_ts: float) -> tuple[float, float]:
    """`A..B` -> absolute [start, end) epoch seconds.

    A and B are seconds after the first record (`600..900`, `600..` for the rest) or ISO
    timestamps (`2023-11-16T18:30:00..2023-11-16T18:35:00`, UTC unless an offset is given).
    """
    if ".." not in text:
        raise TrafficError(f"window {text!r} must look like A..B (seconds or ISO timestamps)")
    a, _, b = text.partition("..")

    def point(s: str, default: float) -> float:
        s = s.strip()
        if not s:
            return default
        try:
            return first_ts + float(s)
        except ValueError:
            pass
        try:
            return parse_timestamp(s)
        except TrafficError:
            raise TrafficError(f"window bound {s!r} is neither seconds nor a timestamp") from None

    start, end = point(a, -math.inf), point(b, math.inf)
    if end <= start:
        raise TrafficError(f"window {text!r} is empty (end is not after start)")
    return start, end


def slice_records(records: list[TrafficRecord], start: float, end: float) -> list[TrafficRecord]:
    """Records with start <= ts < end, in time order."""
    return sorted((r for r in records if start <= r.ts < end), key=lambda r: r.ts)


def slice_file(src: Path, dst: Path, window: str) -> int:
    """Cut `window` out of `src` into `dst`, header (and so attribution) included."""
    header, records = read_traffic(src)
    if not records:
        raise TrafficError(f"{src}: no records")
    first = min(r.ts for r in records)
    start, end = parse_window(window, first)
    kept = slice_records(records, start, end)
    if header is not None:
        header = header.model_copy(
            update={"notes": [*header.notes, f"sliced from {src.name}, window {window}"]}
        )
    return write_jsonl(dst, kept, header)
