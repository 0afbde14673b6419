"""controller.serving.recorder: the router's request recorder, with real files and fake sinks.

The slow sink is a fake that blocks until released; no test asserts on time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from controller.cluster.render import recording_config, render_router_app
from controller.serving.protocol import RecordingConfig, Target
from controller.serving.recorder import (
    Exchange,
    HeaderFilter,
    Recorder,
    RotatingFileSink,
    replace_recorder,
    start,
)
from controller.spec.models import RECORDING_DENY_HEADERS, ModelDeployment, Recording
from simulator.traffic import TrafficHeader, read_jsonl
from tests.support import deployment_yaml


def exchange(i: int = 0, **over: object) -> Exchange:
    fields: dict[str, object] = {
        "arrived": 1_700_000_000.0 + i,
        "method": "POST",
        "path": "/fraud",
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", f"r{i}".encode())],
        "body": json.dumps({"inputs": [[i, 1.5]]}).encode(),
        "status": 200,
        "response_body": b'{"predictions": [1]}',
        "latency_ms": 3.25,
        "version": "7",
    }
    fields.update(over)
    return Exchange(**fields)  # type: ignore[arg-type]


class MemorySink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.closed = threading.Event()

    def write(self, lines: list[bytes], grids: object = None) -> None:
        self.lines.extend(lines)

    def close(self) -> None:
        self.closed.set()

    @property
    def files(self) -> list[str]:
        return []


class StuckSink(MemorySink):
    """A deliberately slow sink: its first write blocks until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, lines: list[bytes], grids: object = None) -> None:
        self.entered.set()
        assert self.release.wait(60), "test never released the sink"
        super().write(lines, grids)


class BrokenSink(MemorySink):
    def write(self, lines: list[bytes], grids: object = None) -> None:
        raise OSError(28, "No space left on device")


def test_records_are_traffic_records_that_the_simulator_reads(tmp_path: Path) -> None:
    config = RecordingConfig(
        sample_rate=1.0,
        dir=str(tmp_path),
        max_file_mb=1,
        keep_files=5,
        queue_size=100,
        deny_headers=list(RECORDING_DENY_HEADERS),
        allow_headers=["content-type", "x-tenant", "authorization"],  # denied wins
    )
    rec = start(config, "fraud")
    rec.offer(exchange(0, headers=[(b"Authorization", b"Bearer s3cret"), (b"X-Tenant", b"a")]))
    rec.offer(exchange(1, body=b"not json", status=400, response_body=b'{"error_code": 400}'))
    rec.offer(exchange(2, status=None, response_body=None, version=None))
    rec.close()
    [path] = rec.stats().files
    assert Path(path).name.startswith("fraud-")
    assert path.endswith("-0001.jsonl")
    header, records = read_jsonl(Path(path))
    assert isinstance(header, TrafficHeader)
    assert header.source == "recorded by the router of fraud"
    assert [r.route for r in records] == ["/fraud"] * 3
    assert records[0].ts == 1_700_000_000.0
    assert records[0].headers == {"x-tenant": "a"}
    assert records[0].body == {"inputs": [[0, 1.5]]}
    assert records[0].response is not None
    assert (records[0].response.status, records[0].response.version) == (200, "7")
    assert records[0].response.body == {"predictions": [1]}
    assert records[0].response.latency_ms == 3.25
    assert records[1].body == "not json"  # text bodies are kept, and replayed, as they came
    assert records[2].response is not None
    assert records[2].response.status is None
    assert len({r.id for r in records}) == 3
    assert rec.stats().recorded == 3
    assert rec.stats().dropped == 0


def test_files_rotate_by_size_and_the_oldest_beyond_keep_files_go(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path, "fraud-x", max_bytes=2000, keep_files=3)
    rec = Recorder(sink, queue_size=1000)
    for i in range(60):
        assert rec.offer(exchange(i))
    rec.close()
    kept = sorted(tmp_path.glob("fraud-x-*.jsonl"))
    assert [p.name for p in kept] == [Path(f).name for f in rec.stats().files]
    assert len(kept) == 3  # more were written; the oldest were deleted
    assert kept[-1].name > "fraud-x-0003.jsonl"
    seen: list[float] = []
    for path in kept:
        assert path.read_text().startswith('{"kind": "header"')
        _, records = read_jsonl(path)
        assert records
        seen.extend(r.ts for r in records)
        if path != kept[-1]:  # a full file stops at the first line that crosses the size
            assert path.stat().st_size < 2000 + 400
    assert seen == sorted(seen)
    assert seen[-1] == 1_700_000_059.0


def test_deny_list_drops_credentials_cookies_globs_and_transport_headers() -> None:
    keep = HeaderFilter([*RECORDING_DENY_HEADERS, "x-tenant-*"])
    kept = keep(
        [
            (b"Authorization", b"Bearer x"),
            (b"Cookie", b"s=1"),
            (b"Set-Cookie", b"s=2"),
            (b"X-Api-Key", b"k"),
            (b"X-Auth-Token", b"t"),
            (b"X-Client-Secret", b"s"),
            (b"X-Tenant-Id", b"acme"),
            (b"Host", b"127.0.0.1:8000"),
            (b"Content-Length", b"42"),
            (b"Connection", b"keep-alive"),
            (b"Content-Type", b"application/json"),
            (b"X-User-Id", b"u1"),
        ]
    )
    assert kept == {"content-type": "application/json", "x-user-id": "u1"}


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    sink = StuckSink()
    rec = Recorder(sink, queue_size=10)
    assert rec.offer(exchange(0))
    assert sink.entered.wait(60)  # the writer holds request 0 and is stuck in the sink
    results: list[bool] = []
    offering = threading.Thread(target=lambda: results.extend(rec.offer(exchange(i)) for i in
                                                              range(1, 26)))  # fmt: skip
    offering.start()
    offering.join(60)
    # All 25 offers returned while the sink was still stuck: none waited for it.
    assert not offering.is_alive()
    assert not sink.release.is_set()
    assert results == [True] * 10 + [False] * 15
    assert rec.stats().dropped == 15
    sink.release.set()
    rec.close()
    assert rec.stats().recorded == 11
    assert len(sink.lines) == 11
    assert sink.closed.is_set()


def test_a_failing_sink_counts_lost_records_and_keeps_running() -> None:
    rec = Recorder(BrokenSink(), queue_size=10)
    for i in range(3):
        rec.offer(exchange(i))
    rec.close()
    stats = rec.stats()
    assert (stats.recorded, stats.dropped, stats.write_errors) == (0, 0, 3)


def test_sampling_uses_the_rate() -> None:
    rec = Recorder(MemorySink(), sample_rate=0.25)
    assert [rec.sampled(r) for r in (0.0, 0.2499, 0.25, 0.9)] == [True, True, False, False]
    rec.close()


def test_reconfigure_keeps_the_recorder_unless_its_settings_change(tmp_path: Path) -> None:
    config = recording_config(Recording(sample_rate=0.5, dir=str(tmp_path)))
    assert config is not None
    first = replace_recorder(None, None, config, "fraud")
    assert first is not None
    assert replace_recorder(first, config, config.model_copy(), "fraud") is first
    other = replace_recorder(first, config, config.model_copy(update={"sample_rate": 1.0}), "x")
    assert other is not None
    assert other is not first
    assert replace_recorder(other, config, None, "fraud") is None


def test_the_spec_block_renders_into_the_router_config_with_the_built_in_deny_list() -> None:
    import yaml

    doc = yaml.safe_load(
        deployment_yaml(
            extra_spec="""\
            recording:
              sample_rate: 0.1
              dir: /var/lib/serveops/rec
              deny_headers: [X-Tenant-*, authorization]
            """
        )
    )
    dep = ModelDeployment.model_validate(doc)
    target = Target(app="fraud--v1", version="1", weight=100)
    user_config = render_router_app(dep, [target])["deployments"][0]["user_config"]
    rec = user_config["recording"]
    assert rec["sample_rate"] == 0.1
    assert rec["dir"] == "/var/lib/serveops/rec"
    assert rec["deny_headers"] == [*RECORDING_DENY_HEADERS, "x-tenant-*"]
    assert (rec["max_file_mb"], rec["keep_files"], rec["queue_size"]) == (64, 20, 10000)

    doc["spec"].pop("recording")
    plain = render_router_app(ModelDeployment.model_validate(doc), [target])
    assert "recording" not in plain["deployments"][0]["user_config"]


@pytest.mark.parametrize(
    ("block", "field"),
    [("{sample_rate: 0}", "sample_rate"), ("{sample_rate: 1, dir: rel/dir}", "dir")],
)
def test_bad_recording_blocks_are_rejected(block: str, field: str) -> None:
    import yaml
    from pydantic import ValidationError

    doc = yaml.safe_load(deployment_yaml(extra_spec=f"recording: {block}\n"))
    with pytest.raises(ValidationError) as info:
        ModelDeployment.model_validate(doc)
    assert info.value.errors()[0]["loc"] == ("spec", "recording", field)


@pytest.mark.parametrize("codec", ["msgspec", "json only (a node image without msgspec)"])
def test_the_writer_s_lines_are_the_records_whatever_the_codec(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.serving import recorder as recorder_module

    if codec != "msgspec":
        monkeypatch.setattr(recorder_module, "_DECODE", None)
        monkeypatch.setattr(recorder_module, "_ENCODE", None)
    sink = MemorySink()
    rec = Recorder(sink, tag="t")
    bodies = [b'{"inputs": [[1, 2.5]], "name": "caf\xc3\xa9"}', b'{"x": NaN}', b"not json", b""]
    try:
        rec.write_batch([exchange(i, body=body) for i, body in enumerate(bodies)])
    finally:
        rec.close()
    lines = [json.loads(line) for line in sink.lines]
    assert [line["body"] for line in lines[:1]] == [{"inputs": [[1, 2.5]], "name": "café"}]
    assert str(lines[1]["body"]["x"]) == "nan"  # NaN kept (json writes it), not turned to null
    assert [line["body"] for line in lines[2:]] == ["not json", None]
    assert [line["id"] for line in lines] == ["t-1", "t-2", "t-3", "t-4"]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in sink.lines)
