"""The run program's pure parts, without Ray: scoring a batch, agreement, the request round trip,
and a run already committed answering without writing (or starting Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from controller.batch.job import check_fits, main, run
from controller.batch.promotion import agreement
from controller.batch.request import RunRequest, RunResult, parse_result
from controller.batch.scoring import score
from controller.batch.storage import MANIFEST
from controller.spec.batch import BatchOutput


class Doubler:
    def predict(self, frame: Any) -> Any:
        return frame.sum(axis=1).to_numpy() * 2


def request(out: Path) -> RunRequest:
    return RunRequest.model_validate(
        {
            "environment": "staging", "deployment": "nightly", "run_key": "20261202T020000Z",
            "commit": "abc", "model_uri": "models:/m/2", "previous_model_uri": "models:/m/1",
            "input": {"uri": "/nowhere/in.csv", "format": "csv"},
            "output": {"uri": str(out), "id_column": "id"},
            "resources": {}, "promotion": {},
        }
    )  # fmt: skip


def test_score_carries_the_id_and_reads_only_the_features() -> None:
    batch = pd.DataFrame({"id": [7, 8], "a": [1.0, 2.0], "b": [3.0, 4.0]})
    out = score(Doubler(), batch, None, BatchOutput(uri="/o", id_column="id"))
    assert out.to_dict("list") == {"id": [7, 8], "prediction": [8.0, 12.0]}
    named = score(Doubler(), batch, ["a"], BatchOutput(uri="/o", prediction_column="p"))
    assert named.to_dict("list") == {"p": [2.0, 4.0]}
    with pytest.raises(KeyError, match="no column"):
        score(Doubler(), batch, ["zz"], BatchOutput(uri="/o"))


def test_agreement_counts_equal_labels_and_numbers_within_tolerance() -> None:
    assert agreement(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 1]), 0) == 0.75
    assert agreement(np.array([0.5, 1.0]), np.array([0.55, 1.2]), 0.1) == 0.5
    assert agreement(np.array(["a", "b"]), np.array(["a", "b"]), 0) == 1.0
    assert agreement(np.array([]), np.array([]), 0) == 1.0


def test_a_committed_run_is_not_written_again(tmp_path: Path) -> None:
    final = tmp_path / "run=20261202T020000Z"
    final.mkdir()
    (final / MANIFEST).write_text(json.dumps({"rows": 42}))
    result = run(request(tmp_path))  # never reaches Ray: the input does not even exist
    assert result == RunResult(
        status="succeeded",
        rows=42,
        output=str(final),
        message="already committed; nothing written again",
    )


def test_a_failure_is_the_last_line_of_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["job", request(tmp_path).encode()])
    assert code == 1
    result = parse_result(capsys.readouterr().out)
    assert result is not None
    assert result.status == "failed"
    assert "does not exist" in result.message


def test_actors_that_would_starve_the_reads_are_refused(tmp_path: Path) -> None:
    req = request(tmp_path).model_copy(
        update={
            "resources": request(tmp_path).resources.model_copy(
                update={"concurrency": 2, "num_cpus": 0.75}
            )
        }
    )
    with pytest.raises(ValueError, match=r"reserve 1\.5 of the cluster's 2 CPUs"):
        check_fits(req, 2.0)
    check_fits(req, 3.0)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_promotion_sample_is_the_head_of_the_files_ray_data_reads(
    tmp_path: Path, fmt: str
) -> None:
    from controller.batch.storage import head

    frame = pd.DataFrame({"id": range(50), "x": [float(i) for i in range(50)]})
    (tmp_path / "_staging").mkdir()  # never read: not input
    for name in ("part-0", "_staging/part-9"):
        path = tmp_path / f"{name}.{'json' if fmt == 'jsonl' else fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path, index=False)
    sample = head(str(tmp_path), fmt, 20)
    assert list(sample["id"]) == list(range(20))
    assert len(head(str(tmp_path), fmt, 1000)) == 50  # one file: the staging one is not input


def test_progress_lines_count_rows_written_of_the_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from controller.batch.job import progress_lines
    from controller.batch.request import parse_progress

    source, staging = tmp_path / "in", tmp_path / "staging"
    source.mkdir()
    staging.mkdir()
    pd.DataFrame({"id": range(30), "x": 1.0}).to_parquet(source / "a.parquet")
    req = request(tmp_path / "out").model_copy(
        update={
            "input": request(tmp_path).input.model_copy(
                update={"uri": str(source), "format": "parquet"}
            )
        }
    )
    seen = ""
    with progress_lines(req, str(staging), every_s=0.01):
        pd.DataFrame({"id": range(12), "prediction": 0}).to_parquet(staging / "part-0.parquet")
        for _ in range(500):  # until the reporter has seen the file (no timing asserted)
            seen += capsys.readouterr().out
            if '"rows":12' in seen:
                break
            time.sleep(0.01)
    progress = parse_progress(seen)
    assert progress is not None
    assert (progress.rows, progress.total) == (12, 30)


def test_a_progress_line_is_read_bounded() -> None:
    from controller.batch.request import PROGRESS_PREFIX, parse_progress

    assert parse_progress("nothing here") is None
    assert parse_progress(PROGRESS_PREFIX + '{"rows": 5, "total": null}\nmore') is not None
    assert parse_progress(PROGRESS_PREFIX + '{"rows": -1}') is None
    assert parse_progress(PROGRESS_PREFIX + '{"rows": 1, "x": "' + "a" * 10_000 + '"}') is None


class Fixed:
    """A model answering the labels it was given, row by row."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def predict(self, frame: Any) -> Any:
        return np.asarray(self.labels[: len(frame)])


def test_a_version_change_is_judged_with_the_simulators_output_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.batch import promotion

    old = [0, 1] * 50
    new = list(old)
    new[0], new[3] = 1, 0  # two flips in 100 rows: 98% agreement
    models = {"models:/m/1": Fixed(old), "models:/m/2": Fixed(new)}
    monkeypatch.setattr(promotion, "load_model", lambda uri, tracking: models[uri])
    monkeypatch.setattr(
        promotion, "head", lambda uri, fmt, rows: pd.DataFrame({"id": range(100), "x": 1.0})
    )
    req = request(tmp_path / "out")
    passed = promotion.promotion_check(
        req.model_copy(
            update={"promotion": req.promotion.model_copy(update={"min_agreement": 0.9})}
        )
    )
    assert passed is not None
    assert passed.status == "succeeded"
    assert passed.agreement == 0.98
    assert passed.comparison is not None
    checks = {c["name"]: c for c in passed.comparison["checks"]}
    flips = {"0->0": 49, "1->1": 49, "0->1": 1, "1->0": 1}  # previous -> new
    assert checks["agreement"]["figures"]["flip_matrix"] == flips
    assert 0.9 < checks["agreement"]["figures"]["cohen_kappa"] < 1
    assert "output_shift" in checks
    assert set(passed.comparison["us_per_row"]) == {"previous", "new"}

    strict = req.model_copy(
        update={"promotion": req.promotion.model_copy(update={"min_agreement": 0.99})}
    )
    rejected = promotion.promotion_check(strict)
    assert rejected is not None
    assert rejected.status == "rejected"
    assert "agrees with models:/m/1 on 98.0% of 100 sampled rows" in rejected.message
    assert "below the 99.0% required; nothing written" in rejected.message
    # Clearly below: the simulator's check fails it, with its interval and the flips.
    worse = dict(models, **{"models:/m/2": Fixed([1 - v for v in old[:20]] + old[20:])})
    monkeypatch.setattr(promotion, "load_model", lambda uri, tracking: worse[uri])
    clear = promotion.promotion_check(strict)
    assert clear is not None
    assert "20 of 100 predictions flipped" in clear.message


def test_a_result_line_too_long_for_the_log_drops_the_comparison() -> None:
    big = RunResult(status="succeeded", agreement=1.0, comparison={"x": "a" * 20_000})
    parsed = parse_result("log\n" + big.line() + "\n")
    assert parsed is not None
    assert (parsed.status, parsed.agreement, parsed.comparison) == ("succeeded", 1.0, None)


def test_a_result_from_a_newer_job_with_fields_unknown_here_still_parses() -> None:
    line = 'SERVEOPS_RESULT {"status": "succeeded", "rows": 3, "field_of_the_future": [1]}'
    parsed = parse_result("log\n" + line + "\n")
    assert parsed is not None
    assert (parsed.status, parsed.rows) == ("succeeded", 3)
