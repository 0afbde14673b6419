"""simulator.imports and `serveops traffic import`: HAR 1.2 archives and JSON/CSV request lists,
from the small fixture files in tests/unit/fixtures/traffic/."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from simulator.imports import detect_format, import_har, import_request_list
from simulator.traffic import TrafficError, read_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "traffic"
HAR = FIXTURES / "sample.har"
runner = CliRunner()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_har_entries_become_records_in_time_order_with_their_responses() -> None:
    header, records = import_har(HAR)
    assert header.source == "sample.har (HAR 1.2)"
    assert [r.route for r in records] == [
        "/static/app.js?v=2",
        "/breast-cancer",
        "/breast-cancer?debug=1",
    ]
    asset, scored, form = records
    assert asset.method == "GET"
    assert asset.ts == _epoch("2026-11-20T10:00:00")
    assert asset.response is not None
    assert asset.response.body == "console.log(1)"
    assert scored.ts == _epoch("2026-11-20T10:00:01.5")
    assert scored.body == {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}
    # Credentials, cookies, connection headers and HTTP/2 pseudo-headers are not kept.
    assert scored.headers == {"content-type": "application/json", "x-user-id": "u-17"}
    assert scored.response is not None
    assert (scored.response.status, scored.response.version) == (200, "3")
    assert scored.response.body == {"predictions": [1]}
    assert scored.response.latency_ms == 12.5
    assert form.body == "a=1&b=x+y"
    assert form.headers == {}
    assert form.response is not None
    assert form.response.status is None
    assert form.response.latency_ms is None


def test_har_path_prefix_keeps_the_model_requests_and_route_replaces_paths() -> None:
    _, records = import_har(HAR, path_prefix="/breast-cancer", route="/sim")
    assert [r.route for r in records] == ["/sim", "/sim"]


def test_json_request_list_takes_iso_and_epoch_times_urls_and_keys() -> None:
    header, records = import_request_list(FIXTURES / "requests.json", fmt="json")
    assert header.source == "requests.json (request list)"
    first, second, third = records
    assert first.ts == _epoch("2026-11-20T10:00:00")
    assert first.method == "POST"
    assert first.body == {"inputs": [[1, 2]]}
    assert (second.id, second.key, second.method) == ("req-2", "u1", "PUT")
    assert second.route == "/fraud?trace=1"
    assert second.headers == {"x-user-id": "u1"}  # x-api-key dropped
    assert third.ts == 1795176000.5
    assert third.body == "plain text"


def test_csv_request_list_with_offsets_json_cells_and_defaults() -> None:
    header, records = import_request_list(FIXTURES / "requests.csv", fmt="csv")
    assert [r.ts for r in records] == [0.0, 0.5, 1.25]
    assert [r.method for r in records] == ["POST", "POST", "GET"]
    assert records[0].headers == {"x-user-id": "u1"}
    assert records[1].body == {"inputs": [[3, 4]]}
    assert records[2].body is None
    assert "times are offsets from the first request" in header.notes


def test_formats_are_detected_by_extension_and_content(tmp_path: Path) -> None:
    assert detect_format(HAR) == "har"
    har_json = tmp_path / "export.json"
    shutil.copy(HAR, har_json)
    assert detect_format(har_json) == "har"
    assert detect_format(FIXTURES / "requests.json") == "json"
    assert detect_format(FIXTURES / "requests.csv") == "csv"
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n")
    assert detect_format(trace) == "azure-csv"
    with pytest.raises(TrafficError, match="pass --format"):
        detect_format(tmp_path / "requests.txt")


def _har_with(tmp_path: Path, change: dict[str, object], index: int = 1) -> Path:
    data = json.loads(HAR.read_text())
    entry = data["log"]["entries"][index]
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = entry
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "bad.har"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"startedDateTime": None}, "log.entries[1].startedDateTime: missing"),
        ({"startedDateTime": "yesterday"}, "log.entries[1].startedDateTime: not an ISO 8601"),
        ({"request.url": None}, "log.entries[1].request.url: missing"),
        ({"request.method": 7}, "log.entries[1].request.method: must be str, found int 7"),
        ({"request.headers": [{"value": "x"}]}, "log.entries[1].request.headers[0].name: missing"),
        ({"response.status": "ok"}, "log.entries[1].response.status: must be int"),
    ],
)
def test_har_errors_name_the_file_the_entry_and_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _har_with(tmp_path, change)
    with pytest.raises(TrafficError) as info:
        import_har(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_broken_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.har"
    path.write_text('{"log": {\n  "entries": [,]\n}}')
    with pytest.raises(TrafficError, match=r"broken.har:2:15: not JSON"):
        import_har(path)
    path.write_text('{"log": {}}')
    with pytest.raises(TrafficError, match=r"log.entries: missing"):
        import_har(path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ('[{"route": "/a"}]', "[0].ts: missing"),
        ('[{"ts": 1, "route": "/a"}, {"ts": 2}]', "[1].route: missing (give 'route' or 'url')"),
        ('[{"ts": 1, "route": "a"}]', "[0].route: must start with '/'"),
        ('[{"ts": "soon", "route": "/a"}]', "[0].ts: neither epoch seconds nor an ISO 8601"),
        ('[{"ts": 1, "route": "/a"}, {"offset": 2, "route": "/a"}]', "[1].offset: mixes"),
        ('[{"ts": 1, "route": "/a", "headers": {"x": 1}}]', "[0].headers.x: must be a string"),
        ('[{"ts": true, "route": "/a"}]', "[0].ts: must be int or float or str, found bool"),
        ('{"other": []}', "expected a JSON array of requests"),
    ],
)
def test_json_list_errors_name_the_entry_and_field(tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "list.json"
    path.write_text(rows)
    with pytest.raises(TrafficError) as info:
        import_request_list(path, fmt="json")
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offset,route\n0,/a\n-1,/a\n", ":3: field offset: must not be negative"),
        ("offset,route\n0,/a\nsoon,/a\n", ":3: field offset: must be a number"),
        ('ts,route,headers\n1,/a,"{bad"\n', ":2: field headers: not JSON"),
        ("when,route\n1,/a\n", ":1: a request list needs a 'ts' or 'offset' column"),
    ],
)
def test_csv_list_errors_name_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text(text)
    with pytest.raises(TrafficError) as info:
        import_request_list(path, fmt="csv")
    assert str(info.value).startswith(f"{path}:")
    assert message in str(info.value)


def test_cli_imports_a_har_and_the_result_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "har.jsonl"
    result = runner.invoke(
        app, ["traffic", "import", str(HAR), "-o", str(out), "--path-prefix", "/breast-cancer"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 requests (har)" in result.output
    header, records = read_jsonl(out)
    assert header is not None
    assert header.source == "sample.har (HAR 1.2)"
    assert [r.route for r in records] == ["/breast-cancer", "/breast-cancer?debug=1"]


def test_cli_bad_input_exits_2_names_the_field_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    bad = _har_with(tmp_path, {"request.url": None})
    result = runner.invoke(app, ["traffic", "import", str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert "log.entries[1].request.url: missing" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["traffic", "import", str(HAR), "-o", str(out), "--format", "pcap"])
    assert result.exit_code == 2
    assert "--format 'pcap'" in result.output
    assert not out.exists()
