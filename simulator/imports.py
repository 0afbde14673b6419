"""Request lists from other tools to recorded traffic: HAR 1.2 archives, JSON and CSV lists.

HAR is what browsers' developer tools, proxies (mitmproxy, Charles) and Locust's har2locust
work from: `log.entries[]` with `startedDateTime`, `request` (method, url, headers, postData)
and `response` (status, content, `time`). A request list is the plain form: one object (JSON)
or row (CSV) per request with `ts` or `offset`, `route` or `url`, and optionally `method`,
`headers`, `body`, `id`, `key`. Every error names the file, the entry (JSON) or line (CSV) and
the field, and nothing is written.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from controller.serving.protocol import VERSION_HEADER
from controller.serving.recorder import TRANSPORT_HEADERS
from simulator.traffic import (
    TrafficError,
    TrafficHeader,
    TrafficRecord,
    filter_headers,
)

Format = Literal["azure-csv", "har", "json", "csv"]
FORMATS: tuple[str, ...] = ("auto", "azure-csv", "har", "json", "csv")
AZURE_COLUMNS = {"TIMESTAMP", "ContextTokens"}


# --- which format ------------------------------------------------------------------------------


def detect_format(path: Path) -> Format:
    """By extension, then by content: a HAR has `log`; an Azure trace has TIMESTAMP columns."""
    suffix = path.suffix.lower()
    if suffix == ".har":
        return "har"
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as f:
                columns = set(next(csv.reader(f), []))
        except FileNotFoundError:
            raise TrafficError(f"{path}: no such file") from None
        return "azure-csv" if columns >= AZURE_COLUMNS else "csv"
    if suffix == ".json":
        data = _load_json(path)
        return "har" if isinstance(data, dict) and "log" in data else "json"
    raise TrafficError(
        f"{path}: cannot tell the format from the name; pass --format (azure-csv, har, json or csv)"
    )


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrafficError(f"{path}: no such file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TrafficError(f"{path}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None


# --- shared pieces -----------------------------------------------------------------------------


class _Entry:
    """One entry's fields, read with errors that say where: `file: where.field: problem`."""

    def __init__(self, path: Path, where: str, data: Any, line: int | None = None) -> None:
        self.path, self.where, self.line = path, where, line
        if not isinstance(data, Mapping):
            raise self.error("", f"must be an object, found {type(data).__name__}")
        self.data = data

    def error(self, field: str, problem: str) -> TrafficError:
        if self.line is not None:  # CSV: `file:12: field body: ...`, as the trace importer says
            return TrafficError(f"{self.path}:{self.line}: field {field}: {problem}")
        at = f"{self.where}.{field}" if field else self.where
        return TrafficError(f"{self.path}: {at}: {problem}")

    def get(self, field: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
        value: Any = self.data
        for part in field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            if required:
                raise self.error(field, "missing")
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
            names = " or ".join(t.__name__ for t in _types(kind))
            raise self.error(field, f"must be {names}, found {type(value).__name__} {value!r}")
        return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _iso(text: str) -> float:
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _route_of(url: str) -> str:
    """`https://host/a/b?x=1` or `/a/b?x=1` -> `/a/b?x=1`."""
    parts = urlsplit(url)
    route = parts.path or "/"
    return f"{route}?{parts.query}" if parts.query else route


def _keep_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Credentials and cookies out (the recording deny list), and what describes a connection."""
    kept = filter_headers(dict(pairs))
    return {k: v for k, v in kept.items() if k not in TRANSPORT_HEADERS and not k.startswith(":")}


def _body_of(text: str | None, mime: str | None) -> Any:
    """A JSON body as its value (re-encoded on replay); any other text as is."""
    if text is None or text == "":
        return None
    if mime is None or "json" in mime.lower() or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _finish(
    records: list[TrafficRecord], path_prefix: str | None, route: str | None, limit: int | None
) -> list[TrafficRecord]:
    if path_prefix:
        records = [r for r in records if r.route.startswith(path_prefix)]
    if route:
        records = [r.model_copy(update={"route": route}) for r in records]
    records.sort(key=lambda r: r.ts)
    return records[:limit] if limit is not None else records


# --- HAR 1.2 -----------------------------------------------------------------------------------


def import_har(
    path: Path,
    *,
    path_prefix: str | None = None,
    route: str | None = None,
    limit: int | None = None,
) -> tuple[TrafficHeader, list[TrafficRecord]]:
    """A HAR 1.2 archive (`log.entries[]`) -> records, with their recorded responses."""
    data = _load_json(path)
    top = _Entry(path, "(top level)", data)
    entries = top.get("log.entries", list, required=True)
    records = [_har_record(path, i, e) for i, e in enumerate(entries)]
    header = TrafficHeader(
        source=f"{path.name} (HAR {top.get('log.version', str) or '1.2'})",
        notes=[f"{len(entries)} entries; credentials, cookies and connection headers removed"],
    )
    return header, _finish(records, path_prefix, route, limit)


def _har_record(path: Path, i: int, raw: Any) -> TrafficRecord:
    e = _Entry(path, f"log.entries[{i}]", raw)
    started = e.get("startedDateTime", str, required=True)
    try:
        ts = _iso(started)
    except ValueError:
        raise e.error("startedDateTime", f"not an ISO 8601 time: {started!r}") from None
    method = e.get("request.method", str, required=True).upper()
    url = e.get("request.url", str, required=True)
    headers = _har_headers(e, "request.headers")
    body = None
    if e.get("request.postData", dict) is not None:
        text = e.get("request.postData.text", str)
        mime = e.get("request.postData.mimeType", str)
        if text is None and e.get("request.postData.params", list):
            text = _form(e)
        body = _body_of(text, mime)
    return TrafficRecord(
        id=f"{path.stem}-{i:06d}",
        ts=ts,
        route=_route_of(url),
        method=method,
        headers=_keep_headers(headers),
        body=body,
        response=_har_response(e),
    )


def _har_headers(e: _Entry, field: str) -> list[tuple[str, str]]:
    pairs = []
    for j, h in enumerate(e.get(field, list) or []):
        item = _Entry(e.path, f"{e.where}.{field}[{j}]", h)
        pairs.append((item.get("name", str, required=True), item.get("value", str) or ""))
    return pairs


def _form(e: _Entry) -> str:
    params = e.get("request.postData.params", list) or []
    pairs = []
    for j, p in enumerate(params):
        item = _Entry(e.path, f"{e.where}.request.postData.params[{j}]", p)
        pairs.append((item.get("name", str, required=True), item.get("value", str) or ""))
    return urlencode(pairs)


def _har_response(e: _Entry) -> dict[str, Any] | None:
    if e.get("response", dict) is None:
        return None
    status = e.get("response.status", int, required=True)
    text = e.get("response.content.text", str)
    if text is not None and e.get("response.content.encoding", str) == "base64":
        try:
            text = base64.b64decode(text).decode("utf-8", errors="replace")
        except ValueError:
            raise e.error("response.content.text", "not valid base64") from None
    total = e.get("time", (int, float))
    version = dict((n.lower(), v) for n, v in _har_headers(e, "response.headers")).get(
        VERSION_HEADER
    )
    return {
        "status": status or None,  # HAR's 0: no response arrived
        "body": _body_of(text, e.get("response.content.mimeType", str)),
        "latency_ms": float(total) if total is not None and total >= 0 else None,
        "version": version,
    }


# --- request lists -----------------------------------------------------------------------------


def import_request_list(
    path: Path,
    *,
    fmt: Literal["json", "csv"],
    path_prefix: str | None = None,
    route: str | None = None,
    limit: int | None = None,
) -> tuple[TrafficHeader, list[TrafficRecord]]:
    """A JSON array (or `{"requests": [...]}`) or a CSV of requests -> records."""
    entries = _json_entries(path) if fmt == "json" else _csv_entries(path)
    timing: dict[str, str] = {}
    records = [_list_record(path, i, e, timing) for i, e in enumerate(entries)]
    header = TrafficHeader(
        source=f"{path.name} (request list)",
        notes=["credentials, cookies and connection headers removed"]
        + (["times are offsets from the first request"] if "offset" in timing.values() else []),
    )
    return header, _finish(records, path_prefix, route, limit)


def _json_entries(path: Path) -> list[_Entry]:
    data = _load_json(path)
    name = ""
    if isinstance(data, dict) and "requests" in data:
        data, name = data["requests"], "requests"
    if not isinstance(data, list):
        raise TrafficError(
            f"{path}: expected a JSON array of requests (or an object with 'requests')"
        )
    return [_Entry(path, f"{name}[{i}]", item) for i, item in enumerate(data)]


def _csv_entries(path: Path) -> list[_Entry]:
    try:
        f = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TrafficError(f"{path}: no such file") from None
    with f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if not columns & {"ts", "offset"} or not columns & {"route", "url"}:
            raise TrafficError(
                f"{path}:1: a request list needs a 'ts' or 'offset' column and a 'route' or "
                f"'url' column, found {sorted(columns)}"
            )
        entries = []
        for row in reader:
            line = reader.line_num
            entries.append(_Entry(path, f"line {line}", _csv_fields(path, line, row), line))
        return entries


def _csv_fields(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    """CSV cells to the JSON list's fields: numbers for times, JSON for headers."""
    out: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    for field in ("ts", "offset"):
        if field in out:
            with contextlib.suppress(ValueError):  # `ts` may be ISO; `offset` is checked later
                out[field] = float(out[field])
    if "headers" in out:
        try:
            out["headers"] = json.loads(out["headers"])
        except ValueError as e:
            raise TrafficError(f"{path}:{line}: field headers: not JSON: {e}") from None
    if "body" in out:
        out["body"] = _body_of(out["body"], None)
    return out


def _list_record(path: Path, i: int, e: _Entry, timing: dict[str, str]) -> TrafficRecord:
    ts = _time_of(e, timing)
    if (url := e.get("url", str)) is None and e.get("route", str) is None:
        raise e.error("route", "missing (give 'route' or 'url')")
    route = _route_of(url) if url is not None else e.get("route", str)
    if not route.startswith("/"):
        raise e.error("route", f"must start with '/', found {route!r}")
    headers = e.get("headers", dict) or {}
    for name, value in headers.items():
        if not isinstance(value, str):
            raise e.error(f"headers.{name}", f"must be a string, found {value!r}")
    return TrafficRecord(
        id=str(e.get("id", (str, int)) or f"{path.stem}-{i:06d}"),
        ts=ts,
        route=route,
        method=(e.get("method", str) or "POST").upper(),
        headers=_keep_headers(headers.items()),
        body=e.data.get("body"),
        key=e.get("key", str),
    )


def _time_of(e: _Entry, timing: dict[str, str]) -> float:
    """`ts` (epoch seconds or ISO 8601) or `offset` (seconds from the first request)."""
    kind = "ts" if "ts" in e.data else "offset" if "offset" in e.data else None
    if kind is None:
        raise e.error("ts", "missing (give 'ts', epoch seconds or ISO 8601, or 'offset')")
    first = timing.setdefault("kind", kind)
    if kind != first:
        raise e.error(kind, f"mixes '{kind}' with '{first}' of earlier requests; use one")
    value = e.get(kind, (int, float, str), required=True)
    if isinstance(value, str):
        if kind == "offset":
            raise e.error("offset", f"must be a number of seconds, found {value!r}")
        try:
            return _iso(value)
        except ValueError:
            raise e.error("ts", f"neither epoch seconds nor an ISO 8601 time: {value!r}") from None
    if kind == "offset" and value < 0:
        raise e.error("offset", f"must not be negative, found {value}")
    return float(value)
