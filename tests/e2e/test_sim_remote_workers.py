"""Remote replay workers: `serveops replay --master` and `serveops replay-worker` as separate
processes talking TCP on loopback, as separate hosts would, against fake endpoints (not Ray).

Assertions are on behaviour (every request exactly once, lost workers counted), never timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.fake_endpoint import FakeEndpoint
from simulator.traffic import TrafficRecord, write_jsonl

pytestmark = pytest.mark.e2e
SERVEOPS = str(Path(sys.executable).parent / "serveops")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _traffic(tmp_path: Path, n: int, every_s: float) -> Path:
    path = tmp_path / "traffic.jsonl"
    write_jsonl(path, [
        TrafficRecord(id=f"r{i}", ts=1.7e9 + i * every_s, route="/m",
                      body={"inputs": [[float(i)]]})
        for i in range(n)
    ])  # fmt: skip
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [SERVEOPS, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_two_remote_workers_send_every_request_exactly_once(tmp_path: Path) -> None:
    traffic = _traffic(tmp_path, 200, 0.01)
    port = _port()
    out = tmp_path / "out"
    procs: list[subprocess.Popen[str]] = []
    with FakeEndpoint(version="1") as ep:
        try:
            master = _start(
                ["replay", str(traffic), "--url", ep.url, "--master", "--expect-workers", "2",
                 "--master-bind", "127.0.0.1", "--master-port", str(port), "--out", str(out)],
                tmp_path / "master.log",
            )  # fmt: skip
            procs.append(master)
            for k in range(2):
                procs.append(_start(
                    ["replay-worker", str(traffic), "--master-host", "127.0.0.1",
                     "--master-port", str(port)], tmp_path / f"worker-{k}.log",
                ))  # fmt: skip
            assert master.wait(timeout=120) == 0, (tmp_path / "master.log").read_text()[-3000:]
            for p in procs[1:]:
                assert p.wait(timeout=30) == 0
        finally:
            _stop(procs)
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    ids = sorted(o["id"] for o in outcomes)
    assert ids == sorted(f"r{i}" for i in range(200))  # each exactly once
    assert all(o["status"] == 200 for o in outcomes)
    assert all(not o["dropped"] for o in outcomes)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scheduled"] == 200
    assert not any("lost" in p for p in summary["problems"])
    for k in range(2):
        assert "sent " in (tmp_path / f"worker-{k}.log").read_text()


def test_a_worker_that_dies_is_reported_and_its_shard_counted_not_sent(tmp_path: Path) -> None:
    traffic = _traffic(tmp_path, 300, 0.05)  # 15 s of schedule
    port = _port()
    out = tmp_path / "out"
    procs: list[subprocess.Popen[str]] = []
    with FakeEndpoint(version="1") as ep:
        try:
            master = _start(
                ["replay", str(traffic), "--url", ep.url, "--master", "--expect-workers", "2",
                 "--master-bind", "127.0.0.1", "--master-port", str(port), "--out", str(out)],
                tmp_path / "master.log",
            )  # fmt: skip
            procs.append(master)
            workers = [
                _start(["replay-worker", str(traffic), "--master-host", "127.0.0.1",
                        "--master-port", str(port)], tmp_path / f"worker-{k}.log")
                for k in range(2)
            ]  # fmt: skip
            procs += workers
            log = tmp_path / "master.log"
            logs = [tmp_path / f"worker-{k}.log" for k in range(2)]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all("joining" in w.read_text() for w in logs):
                time.sleep(0.2)
            time.sleep(6)  # both joined; the 15 s schedule is under way
            os.killpg(workers[1].pid, signal.SIGKILL)
            workers[1].wait()
            assert master.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            _stop(procs)
    summary = json.loads((out / "summary.json").read_text())
    lost = [p for p in summary["problems"] if "lost" in p]
    assert len(lost) == 1
    assert "counted as not sent" in lost[0]
    assert summary["valid"] is False
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert sorted(o["id"] for o in outcomes) == sorted(f"r{i}" for i in range(300))
    not_sent = [o for o in outcomes if o["dropped"]]
    assert not_sent
    assert all(o["error"].startswith("not sent: worker") for o in not_sent)
    assert all(o["status"] == 200 for o in outcomes if not o["dropped"])


def test_a_worker_with_different_traffic_is_refused(tmp_path: Path) -> None:
    traffic = _traffic(tmp_path, 50, 0.01)
    other = tmp_path / "other"
    other.mkdir()
    different = _traffic(other, 51, 0.01)
    port = _port()
    procs: list[subprocess.Popen[str]] = []
    with FakeEndpoint(version="1") as ep:
        try:
            master = _start(
                ["replay", str(traffic), "--url", ep.url, "--master", "--expect-workers", "1",
                 "--master-bind", "127.0.0.1", "--master-port", str(port)],
                tmp_path / "master.log",
            )  # fmt: skip
            worker = _start(["replay-worker", str(different), "--master-host", "127.0.0.1",
                             "--master-port", str(port)], tmp_path / "worker.log")  # fmt: skip
            procs += [master, worker]
            assert worker.wait(timeout=60) != 0
            assert "digest mismatch" in (tmp_path / "worker.log").read_text()
        finally:
            _stop(procs)
