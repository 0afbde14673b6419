"""Recordings hold what users sent, for days: by default only allow-listed headers, secret
query values and chosen body fields masked, private files in a private directory outside /tmp,
a total size that restarts cannot grow, and a full disk that loses records, never requests."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from controller.cluster.render import recording_config
from controller.serving import files as files_module
from controller.serving.recorder import Exchange, start
from controller.spec.models import Recording
from simulator.traffic import read_jsonl

HEADERS = [
    (b"Content-Type", b"application/json"),
    (b"X-Forwarded-For", b"203.0.113.7"),
    (b"X-User-Id", b"alice@example.com"),
    (b"Authorization", b"Bearer s3cr3t-t0ken"),
    (b"Cookie", b"session=abc"),
    (b"X-Request-Id", b"r-1"),
]


def exchange(i: int = 0, path: str = "/fraud", body: Any = None) -> Exchange:
    payload = body if body is not None else {"inputs": [[i, 1.5]]}
    return Exchange(
        arrived=1_700_000_000.0 + i,
        method="POST",
        path=path,
        headers=HEADERS,
        body=json.dumps(payload).encode(),
        status=200,
        response_body=json.dumps({"predictions": [1], "echo": payload}).encode(),
        latency_ms=2.5,
        version="7",
    )


def config(tmp_path: Path, **spec: Any) -> Any:
    rendered = recording_config(Recording(sample_rate=1, dir=str(tmp_path / "rec"), **spec))
    assert rendered is not None
    return rendered


def records(directory: Path) -> list[Any]:
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        out.extend(read_jsonl(path)[1])
    return out


def test_only_allow_listed_headers_and_masked_query_and_fields_are_written(
    tmp_path: Path,
) -> None:
    rec = start(config(tmp_path), "fraud")  # the defaults
    rec.offer(exchange(0, path="/fraud?api_key=K3Y&user=bob&access_token=T0K"))
    rec.close()
    [record] = records(tmp_path / "rec")
    assert record.headers == {"content-type": "application/json"}  # not x-forwarded-for & co
    assert record.route == "/fraud?api_key=***&user=bob&access_token=***"
    text = next((tmp_path / "rec").glob("*.jsonl")).read_text()
    for secret in ("203.0.113.7", "alice@example.com", "s3cr3t", "session=abc", "K3Y", "T0K"):
        assert secret not in text

    rec = start(config(tmp_path / "fields", redact_fields=["ssn", "customer.email"]), "fraud")
    body = {"customer": {"email": "a@example.com", "name": "Al"}, "ssn": "123", "x": [1]}
    rec.offer(exchange(1, body=body))
    rec.close()
    [record] = records(tmp_path / "fields" / "rec")
    assert record.body == {"customer": {"email": "***", "name": "Al"}, "ssn": "***", "x": [1]}
    assert record.response.body["echo"]["ssn"] == "***"  # answers that echo a field too


def test_files_are_private_and_not_under_tmp_by_default(tmp_path: Path) -> None:
    assert not Recording(sample_rate=1).dir.startswith("/tmp")
    loose = tmp_path / "rec"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)  # made by someone else, or before: tightened
    old = os.umask(0)  # a umask that hides nothing: the modes are the recorder's own
    try:
        rec = start(config(tmp_path), "fraud")
        rec.offer(exchange())
        rec.close()
    finally:
        os.umask(old)
    [path] = rec.stats().files
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


def restarts(cfg: Any, deployment: str = "fraud", times: int = 8) -> list[Path]:
    """`times` router processes one after the other, each writing several files."""
    for restart in range(times):
        rec = start(cfg, deployment)
        for i in range(60):
            assert rec.offer(exchange(restart * 100 + i))
        rec.close()
    return sorted(Path(cfg.dir).glob(f"{deployment}-*.jsonl"))


def test_the_files_kept_are_capped_across_restarts(tmp_path: Path) -> None:
    other = start(config(tmp_path), "fraud-detector")  # another deployment: never touched
    other.offer(exchange())
    other.close()
    files = restarts(config(tmp_path, max_file_mb=0.01, keep_files=4))
    assert len(files) == 4 + 1  # + fraud-detector's, which the glob also matches
    assert len(list((tmp_path / "rec").glob("fraud-detector-*.jsonl"))) == 1


def test_the_total_size_is_capped_across_restarts(tmp_path: Path) -> None:
    files = restarts(config(tmp_path, max_file_mb=0.01, keep_files=100, max_total_mb=0.03))
    assert sum(p.stat().st_size for p in files) <= 0.03 * 1024 * 1024 + 1024  # + one line


def test_a_full_disk_drops_and_counts_records_and_never_writes_half_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    full = {"on": False}

    def write(fd: int, data: Any) -> int:
        if full["on"]:
            half = len(data) // 2
            real_write(fd, bytes(data[:half]))  # a disk that fills mid-write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files_module.os, "write", write)
    rec = start(config(tmp_path, queue_size=1000), "fraud")
    for i in range(3):
        assert rec.offer(exchange(i))
    _wait(lambda: rec.stats().recorded == 3)
    full["on"] = True
    for i in range(3, 10):
        assert rec.offer(exchange(i))  # offered as ever: the request never waits or fails
    _wait(lambda: rec.stats().write_errors == 7)
    full["on"] = False
    for i in range(10, 12):
        assert rec.offer(exchange(i))
    rec.close()
    stats = rec.stats()
    assert (stats.recorded, stats.write_errors) == (5, 7)
    ids = [r.ts for r in records(tmp_path / "rec")]  # every file parses: no half line
    assert ids == [1_700_000_000.0 + i for i in (0, 1, 2, 10, 11)]


def _wait(condition: Any, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the recorder's writer did not get there"
        time.sleep(0.01)
