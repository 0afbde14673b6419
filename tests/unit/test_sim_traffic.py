"""simulator.traffic: the record format, JSON Lines, CSV trace import and slicing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.traffic import (
    AZURE_ATTRIBUTION,
    TrafficError,
    TrafficHeader,
    TrafficRecord,
    filter_headers,
    import_csv_trace,
    parse_timestamp,
    parse_window,
    read_jsonl,
    rows_for_tokens,
    slice_file,
    write_jsonl,
)

TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,10,109
2023-11-16 18:16:46.0000000,5000,7
"""


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "azure-sample.csv"
    path.write_text(TRACE)
    return path


def test_filter_headers_drops_credentials_and_cookies_by_default() -> None:
    kept = filter_headers(
        {
            "Authorization": "Bearer x",
            "Cookie": "s=1",
            "X-Auth-Token": "t",
            "X-Api-Key": "k",
            "Content-Type": "application/json",
            "X-Request-Id": "r1",
        }
    )
    assert kept == {"content-type": "application/json", "x-request-id": "r1"}


def test_filter_headers_takes_a_custom_deny_list() -> None:
    kept = filter_headers({"X-Tenant": "a", "Accept": "*/*"}, deny=["x-tenant"], deny_parts=[])
    assert kept == {"accept": "*/*"}


def test_timestamps_keep_sub_millisecond_precision() -> None:
    a = parse_timestamp("2023-11-16 18:15:46.6805900")
    b = parse_timestamp("2023-11-16 18:15:46.6806000")
    assert a == pytest.approx(1700158546.68059)
    assert b - a == pytest.approx(1e-5, abs=1e-6)


def test_rows_follow_request_size_within_bounds() -> None:
    assert rows_for_tokens(0, 256, 32) == 1
    assert rows_for_tokens(374, 256, 32) == 2
    assert rows_for_tokens(100_000, 256, 32) == 32


def test_import_csv_trace_makes_scoring_requests_with_attribution(tmp_path: Path) -> None:
    header, records = import_csv_trace(_trace(tmp_path), seed=3)
    assert [r.attrs["context_tokens"] for r in records] == [374, 10, 5000]
    assert records[1].ts - records[0].ts == pytest.approx(4.314579, abs=1e-6)
    body = records[2].body["dataframe_split"]
    assert len(body["data"]) == records[2].attrs["rows"] == 20
    assert len(body["columns"]) == 30
    assert len(body["data"][0]) == 30
    assert header.license == "CC-BY-4.0"
    assert header.attribution == [AZURE_ATTRIBUTION]
    assert "Splitwise" in AZURE_ATTRIBUTION
    # Same seed, same payloads.
    assert import_csv_trace(_trace(tmp_path), seed=3)[1] == records


def test_import_rejects_a_csv_without_the_trace_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,size\n1,2\n")
    with pytest.raises(TrafficError, match=r"bad.csv:1: expected columns"):
        import_csv_trace(path)


def test_import_names_the_line_of_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,x,1\n")
    with pytest.raises(TrafficError, match=r"bad.csv:2:"):
        import_csv_trace(path)


def test_jsonl_round_trip_keeps_header_and_records(tmp_path: Path) -> None:
    header, records = import_csv_trace(_trace(tmp_path))
    path = tmp_path / "t.jsonl"
    assert write_jsonl(path, records, header) == 3
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "header"
    assert len(lines) == 4
    header2, records2 = read_jsonl(path)
    assert header2 == header
    assert records2 == records


def test_read_jsonl_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a", "ts": 1.0, "route": "/x"}\n{"id": "b", "route": "/x"}\n')
    with pytest.raises(TrafficError, match=r"t.jsonl:2: field ts"):
        read_jsonl(path)


def test_window_accepts_offsets_and_timestamps() -> None:
    first = parse_timestamp("2023-11-16 18:15:00")
    assert parse_window("60..120", first) == (first + 60, first + 120)
    assert parse_window("60..", first)[1] == float("inf")
    start, end = parse_window("2023-11-16T18:16:00..2023-11-16T18:17:00", first)
    assert (start - first, end - first) == (60, 120)
    with pytest.raises(TrafficError, match="empty"):
        parse_window("100..50", first)
    with pytest.raises(TrafficError, match=r"A\.\.B"):
        parse_window("100", first)


def test_slice_cuts_the_window_and_carries_the_attribution(tmp_path: Path) -> None:
    header, records = import_csv_trace(_trace(tmp_path))
    src, dst = tmp_path / "all.jsonl", tmp_path / "cut.jsonl"
    write_jsonl(src, records, header)
    assert slice_file(src, dst, "0..10") == 2
    cut_header, cut = read_jsonl(dst)
    assert [r.id for r in cut] == [records[0].id, records[1].id]
    assert cut_header is not None
    assert cut_header.attribution == header.attribution
    assert "window 0..10" in cut_header.notes[-1]


def test_records_validate_strictly() -> None:
    with pytest.raises(ValueError, match="surprise"):
        TrafficRecord.model_validate({"id": "a", "ts": 1, "route": "/x", "surprise": 1})
    assert TrafficHeader().format == "serveops-traffic/v1"


def test_a_recording_directory_reads_as_one_traffic_file_in_time_order(tmp_path: Path) -> None:
    from simulator.traffic import read_traffic

    rec = tmp_path / "rec"
    rec.mkdir()
    header = TrafficHeader(source="recorded by the router of fraud")
    write_jsonl(rec / "fraud-a-0001.jsonl", [TrafficRecord(id="a1", ts=3.0, route="/f")], header)
    write_jsonl(
        rec / "fraud-b-0001.jsonl",
        [TrafficRecord(id="b1", ts=1.0, route="/f"), TrafficRecord(id="b2", ts=2.0, route="/f")],
        header,
    )
    (rec / "notes.txt").write_text("not traffic")
    merged_header, records = read_traffic(rec)
    assert [r.id for r in records] == ["b1", "b2", "a1"]
    assert merged_header is not None
    assert "merged from 2 files in rec" in merged_header.notes
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrafficError, match=r"without \*\.jsonl"):
        read_traffic(empty)
