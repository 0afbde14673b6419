"""Remote replay workers without a network: the traffic digest, the not-sent accounting and
the CLI's refusals (the TCP runs are in tests/e2e/test_sim_remote_workers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from controller.cli.main import app
from simulator.results import ReplayOptions, shard_of, summarize
from simulator.traffic import TrafficRecord, write_jsonl

runner = CliRunner()


def _records(n: int) -> list[TrafficRecord]:
    return [TrafficRecord(id=f"r{i}", ts=100.0 + i, route="/m") for i in range(n)]


def _distributed(code: str) -> str:
    """simulator.distributed imports Locust (gevent patches): run it in a child process."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout.strip()


def test_digest_ignores_file_order_and_sees_any_change() -> None:
    out = _distributed(
        "from simulator.distributed import digest\n"
        "from simulator.traffic import TrafficRecord as R\n"
        "a = [R(id=f'r{i}', ts=100.0 + i, route='/m') for i in range(5)]\n"
        "b = list(reversed(a))\n"
        "c = a[:4] + [R(id='r4', ts=104.5, route='/m')]\n"
        "print(digest(a) == digest(b), digest(a) == digest(c))\n"
    )
    assert out == "True False"


def test_a_lost_shard_is_counted_not_sent_not_dropped_at_the_cap() -> None:
    out = _distributed(
        "from simulator.distributed import _not_sent\n"
        "from simulator.results import ReplayOptions\n"
        "from simulator.traffic import TrafficRecord as R\n"
        "recs = [R(id=f'r{i}', ts=100.0 + i, route='/m') for i in range(40)]\n"
        "outs = _not_sent(recs, {'a': 'http://a'}, ReplayOptions(speed=2), 1, 2, 'worker x lost')\n"
        "print(len(outs), all(o.dropped for o in outs), outs[0].error)\n"
    )
    expected = sum(1 for r in _records(40) if shard_of(r.id, 2) == 1)
    assert out == f"{expected} True not sent: worker x lost"


def test_summarize_reports_cap_drops_apart_from_requests_not_sent() -> None:
    from simulator.results import Outcome

    outs = [Outcome(id="1", target="a", intended=0.0, dropped=True, error="not sent: lost"),
            Outcome(id="2", target="a", intended=0.1, dropped=True)]  # fmt: skip
    res = summarize(outs, targets={"a": "http://a"}, options=ReplayOptions(), scheduled=2,
                    started_at=0.0, duration_s=1.0, cpu_s=0.0)  # fmt: skip
    assert res.dropped == {"a": 2}
    assert res.problems == ["1 request(s) dropped at the cap of 512 in flight"]


def test_master_needs_a_url(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, _records(3))
    res = runner.invoke(app, ["replay", str(path), "--rev", "HEAD", "--master"])
    assert res.exit_code == 2
    assert "--master" in res.output


def test_worker_with_missing_traffic_is_bad_input(tmp_path: Path) -> None:
    res = runner.invoke(app, ["replay-worker", str(tmp_path / "nope.jsonl"), "--master-host", "h"])
    assert res.exit_code == 2
    assert "nope.jsonl" in res.output


def test_expect_workers_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, _records(3))
    res = runner.invoke(
        app, ["replay", str(path), "--url", "http://x", "--master", "--expect-workers", "5000"]
    )
    assert res.exit_code == 2


def test_collector_caps_what_a_worker_may_send() -> None:
    from simulator.distributed import Collector

    c = Collector(limit=10)
    c.add("w1", "12345", False)
    c.add("w1", "678901", True)  # 11 bytes in all
    assert "w1" in c.refused
    assert "w1" not in c.done
    c.add("w2", 42, True)  # not text
    assert c.refused["w2"] == "sent a malformed result"
    c.add("w3", "ab", True)
    c.add("w3", "cd", True)  # after the last chunk: ignored
    assert c.done == {"w3"}
    assert "".join(c.parts["w3"]) == "ab"


def test_a_worker_cannot_add_or_double_requests() -> None:
    from simulator.distributed import _only_shard
    from simulator.results import Outcome, ReplayResult

    recs = _records(20)
    mine = [r.id for r in recs if shard_of(r.id, 2) == 0]
    other = next(r.id for r in recs if shard_of(r.id, 2) == 1)
    outs = [Outcome(id=i, target="a", intended=0.0) for i in mine]
    outs += [Outcome(id=mine[0], target="a", intended=0.0),  # a duplicate
             Outcome(id=other, target="a", intended=0.0),  # another shard's
             Outcome(id=mine[1], target="zz", intended=0.0)]  # fmt: skip  # no such target
    res = summarize(outs, targets={"a": "http://a"}, options=ReplayOptions(), scheduled=20,
                    started_at=0.0, duration_s=1.0, cpu_s=0.0)  # fmt: skip
    assert isinstance(res, ReplayResult)
    kept = _only_shard(res, recs, {"a": "http://a"}, 0, 2)
    assert sorted(o.id for o in kept.outcomes) == sorted(mine)
