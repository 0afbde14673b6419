"""The demo's tour without a cluster: a failing step is named and stops the tour after
everything was stopped, later issues' steps are skipped with a note, the load counts failures,
and the files the tour starts from are where it reads them."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.dev import demo, tour_repo
from controller.dev import tour_support as support
from controller.dev.load import Load, labels_csv
from controller.dev.tour import StepFailed, Tour
from controller.serving.protocol import VERSION_HEADER


class Scripted(Tour):
    """A tour whose steps only record that they ran; `fail_in` raises in that step."""

    fail_in: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ran: list[str] = []

    def _do(self, name: str) -> None:
        self.ran.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} broke")

    def set_up(self) -> None:
        self._do("set_up")

    def deploy_v1(self) -> None:
        self._do("deploy_v1")

    def refused_by_policy(self) -> None:
        self._do("refused_by_policy")

    def simulate_v2(self) -> None:
        self._do("simulate_v2")

    def canary_v3(self) -> None:
        self._do("canary_v3")

    def roll_back(self) -> None:
        self._do("roll_back")

    def drift_alert(self) -> None:
        self._do("drift_alert")

    def batch_run(self) -> None:
        self._do("batch_run")

    def stop(self) -> None:
        self.ran.append("stop")


def test_a_failing_step_stops_the_tour_named_after_everything_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tour = Scripted(tmp_path / "demo")
    tour.fail_in = "simulate_v2"
    with pytest.raises(StepFailed, match=r"step 3 \(a pull request for v2.*\) failed: .*broke"):
        tour.run()
    assert tour.ran == ["set_up", "deploy_v1", "refused_by_policy", "simulate_v2", "stop"]
    outcomes = [(t.number, t.outcome) for t in tour.timings]
    assert outcomes == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "failed"), (7, "ok")]
    assert "demo: step 3 (a pull request for v2" in capsys.readouterr().out


def test_every_step_prints_its_duration_and_step_6_runs_what_this_serveops_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli.main import app

    timings = Scripted(tmp_path / "demo").run()
    assert [t.number for t in timings] == [0, 1, 2, 3, 4, 5, 6, 6, 7]
    have = {g.name for g in app.registered_groups} | {c.name for c in app.registered_commands}
    expected = ["ok" if c in have else "skipped" for c in ("monitor", "batch")]
    assert [t.outcome for t in timings if t.number == 6] == expected
    out = capsys.readouterr().out
    assert len(re.findall(r"^  \(\d+\.\ds(, skipped)?\)$", out, re.M)) == 9  # every step

    # A serveops without a later issue's command skips its step, with a note.
    monkeypatch.setattr(app, "registered_commands", [])
    monkeypatch.setattr(app, "registered_groups", [])
    tour = Scripted(tmp_path / "demo2")
    timings = tour.run()
    assert [t.outcome for t in timings if t.number == 6] == ["skipped", "skipped"]
    assert "drift_alert" not in tour.ran
    out = capsys.readouterr().out
    assert "skipped: this serveops has no `serveops monitor` yet" in out
    assert "skipped: this serveops has no `serveops batch` yet" in out


def test_stop_runs_even_when_the_set_up_fails(tmp_path: Path) -> None:
    tour = Scripted(tmp_path / "demo")
    tour.fail_in = "set_up"
    with pytest.raises(StepFailed, match=r"step 0 \(set up"):
        tour.run()
    assert tour.ran == ["set_up", "stop"]


def test_the_files_the_tour_starts_from_exist() -> None:
    assert demo.EXAMPLE.is_file()
    assert tour_repo.PRODUCTION_EXAMPLE.is_file()
    assert (tour_repo.POLICIES / "production.yaml").is_file()
    text = tour_repo.faster_production(tour_repo.PRODUCTION_EXAMPLE.read_text())
    assert "- {weight: 50, pause: 1m}" in text


def test_faster_production_refuses_a_file_it_cannot_edit() -> None:
    with pytest.raises(ValueError, match="no longer has the step"):
        tour_repo.faster_production("spec: {}\n")


class _Server:
    """An HTTP server answering POSTs: 200 with a version header, or 500 for bodies whose
    row index is in `fail_rows`."""

    def __init__(self, fail_rows: set[int]) -> None:
        self.rows: list[int] = []
        self.ids: dict[str, int] = {}  # X-Request-Id -> the row its body held
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                row = body["dataframe_split"]["index"][0]
                server.rows.append(row)
                server.ids[self.headers["x-request-id"]] = row
                self.send_response(500 if row in fail_rows else 200)
                self.send_header(VERSION_HEADER, "7")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/m"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server(fail_rows={1})
    s.thread.start()
    yield s
    s.httpd.shutdown()


def twelve_answers(server: _Server) -> Load:
    """A load of three rows in turn against `server`, stopped after twelve answers."""
    bodies = [
        {"dataframe_split": {"columns": ["a"], "index": [i], "data": [[i]]}} for i in range(3)
    ]
    load = Load(server.url, rate=200, threads=2, bodies=bodies).start()
    while len(load.answers) < 12:
        threading.Event().wait(0.01)
    load.stop()
    return load


def test_the_load_counts_answers_and_failures_and_cycles_through_rows(server: _Server) -> None:
    load = twelve_answers(server)
    window = load.window(load.started_at)
    assert window.requests == len(load.answers)
    assert {a.status for a in window.failed} == {500}
    assert len(window.failed) == server.rows.count(1)
    assert window.versions == {"7": window.requests}
    assert set(server.rows) == {0, 1, 2}
    assert f"{len(window.failed)} failed" in window.line()


def test_a_request_without_an_answer_is_a_failure() -> None:
    bodies = [{"x": 1}]
    load = Load("http://127.0.0.1:9/none", rate=50, threads=1, timeout_s=2, bodies=bodies)
    load.start()
    while not load.answers:
        threading.Event().wait(0.01)
    load.stop()
    assert load.answers[0].status == 0
    assert load.window(load.started_at).failed


@pytest.mark.parametrize(("rate", "threads"), [(0, 1), (-1, 1), (10, 0)])
def test_a_load_needs_a_positive_rate_and_a_thread(rate: float, threads: int) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        Load("http://127.0.0.1:9/", rate=rate, threads=threads)


def test_the_simulated_traffic_is_the_recording_up_to_each_files_last_complete_line(
    tmp_path: Path,
) -> None:
    recordings, target = tmp_path / "recordings", tmp_path / "traffic"
    recordings.mkdir()
    (recordings / "a.jsonl").write_text('{"kind": "header"}\n{"r": 1}\n{"r": 2}\n{"r": 3, "bo')
    (recordings / "b.jsonl").write_text('{"kind": "header"}\n{"r": 4}\n')
    (recordings / "c.jsonl").write_text('{"kind": "hea')  # files being started
    (recordings / "d.jsonl").write_text('{"kind": "header"}\n')
    assert support.count_recorded(recordings) == 4  # the partial line counts: a record coming
    assert support.snapshot_recordings(recordings, target) == 3
    assert (target / "a.jsonl").read_text() == '{"kind": "header"}\n{"r": 1}\n{"r": 2}\n'
    assert (target / "b.jsonl").read_text() == '{"kind": "header"}\n{"r": 4}\n'
    assert sorted(p.name for p in target.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_a_background_process_logs_and_is_stopped_with_its_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "serveops_bin", lambda: "/bin/sh")
    log = tmp_path / "bg.log"
    bg = support.Background(["-c", "echo started; exec sleep 60"], dict(os.environ), log)
    while "started" not in log.read_text():
        threading.Event().wait(0.05)
    assert bg.exited() is None
    bg.stop(timeout_s=10)
    assert bg.exited() is not None


def test_stopping_goes_on_when_stopping_one_part_fails(tmp_path: Path) -> None:
    stopped: list[str] = []

    class Part:
        def __init__(self, name: str, fails: bool = False) -> None:
            self.name, self.fails, self.pid = name, fails, 1

        def stop(self, *args: object, **kwargs: object) -> None:
            stopped.append(self.name)
            if self.fails:
                raise RuntimeError(f"{self.name} would not stop")

    tour = Tour(tmp_path / "demo")
    tour._load = Part("load", fails=True)  # type: ignore[assignment]
    tour._controller = Part("controller")  # type: ignore[assignment]
    tour._ray = Part("ray")  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="load would not stop"):
        tour.stop()
    assert stopped == ["load", "controller", "ray"]
    assert (tour._load, tour._controller, tour._ray) == (None, None, None)


def test_each_request_has_its_own_id_and_the_labels_name_the_row_it_sent(
    server: _Server,
) -> None:
    """The tour's delayed labels: the row each id carried, as the server saw it, answered
    requests only."""
    load = twelve_answers(server)
    answered = load.answered(load.started_at, load.started_at + 3600)
    assert len({a.request_id for a in answered}) == len(answered)  # no id twice
    assert all(server.ids[a.request_id] == a.row for a in answered)
    text = labels_csv(answered, ["benign", "failed", "malignant"])
    rows = [line.split(",") for line in text.splitlines()]
    assert rows[0] == ["request_id", "label"]
    expected = {a.request_id: ["benign", "failed", "malignant"][a.row] for a in answered}
    assert {rid: label for rid, label in rows[1:]} == {
        rid: label
        for rid, label in expected.items()
        if label != "failed"  # 500s: no label
    }
