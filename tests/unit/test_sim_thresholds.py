"""simulator.thresholds: thresholds from defaults, a policy file, spec.rollout.analysis and
spec.simulation, each with where it came from; and how the report shows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.errors import BadInput
from controller.spec.manifest import load_manifests
from simulator.checks import Thresholds
from simulator.deploy import _renamed
from simulator.report import build_report
from simulator.report_html import to_html
from simulator.report_markdown import to_markdown
from simulator.results import Outcome, ReplayResult
from simulator.thresholds import DEFAULT, SpecSource, resolve, spec_source
from tests.support import deployment_yaml

PATH = "deployments/staging/fraud.yaml"


def source(extra: str, name: str = "fraud", rev: str = "main") -> SpecSource:
    return spec_source(
        f"deployments/staging/{name}.yaml", deployment_yaml(name, extra_spec=extra), rev
    )


def test_without_spec_or_policy_every_threshold_is_the_default() -> None:
    t, sources = resolve([source("")])
    assert t == Thresholds()
    assert set(sources) == set(Thresholds.model_fields)
    assert set(sources.values()) == {DEFAULT}


def test_spec_simulation_sets_thresholds_in_percent_and_names_file_revision_and_field() -> None:
    t, sources = resolve(
        [
            source(
                """\
                simulation:
                  latency_tolerance_pct: 10
                  max_error_rate_increase: 1
                  min_agreement_pct: 95
                  max_input_psi: 0.3
                  min_requests: 500
                """,
                rev="origin/main",
            )
        ]
    )
    assert t.latency_tolerance == 0.1
    assert t.max_error_rate_increase == 0.01
    assert t.min_agreement == 0.95
    assert t.max_input_psi == 0.3
    assert t.min_requests == 500
    assert sources["latency_tolerance"] == (
        f"{PATH}@origin/main: spec.simulation.latency_tolerance_pct"
    )
    assert sources["min_requests"] == f"{PATH}@origin/main: spec.simulation.min_requests"
    assert sources["alpha"] == DEFAULT
    assert t.alpha == Thresholds().alpha


def test_rollout_analysis_counts_only_for_the_fields_it_sets() -> None:
    analysis = """\
        rollout:
          strategy: canary
          steps: [{weight: 50}]
          analysis:
            interval: 1m
        """
    t, sources = resolve([source(analysis)])
    assert t.latency_tolerance == Thresholds().latency_tolerance  # its default 20 is not used
    assert sources["latency_tolerance"] == DEFAULT

    t, sources = resolve([source(analysis + "    max_p95_regression_pct: 15\n")])
    assert t.latency_tolerance == 0.15
    assert sources["latency_tolerance"] == (
        f"{PATH}@main: spec.rollout.analysis.max_p95_regression_pct"
    )


def test_spec_simulation_overrides_analysis_and_the_spec_overrides_the_policy(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("latency_tolerance: 0.02\nmax_output_psi: 0.1\nalpha: 0.01\n")
    t, sources = resolve(
        [
            source(
                """\
                rollout:
                  strategy: canary
                  steps: [{weight: 50}]
                  analysis: {max_p95_regression_pct: 30, max_error_rate_increase: 2}
                simulation: {latency_tolerance_pct: 8}
                """
            )
        ],
        policy,
    )
    assert t.latency_tolerance == 0.08
    assert sources["latency_tolerance"] == f"{PATH}@main: spec.simulation.latency_tolerance_pct"
    assert t.max_error_rate_increase == 0.02
    assert sources["max_error_rate_increase"].endswith(
        "spec.rollout.analysis.max_error_rate_increase"
    )
    assert (t.max_output_psi, t.alpha) == (0.1, 0.01)
    assert sources["max_output_psi"] == sources["alpha"] == f"policy file {policy}"


def test_several_deployments_take_the_strictest_value() -> None:
    a = source("simulation: {latency_tolerance_pct: 10, min_agreement_pct: 90}\n", name="a")
    b = source("simulation: {latency_tolerance_pct: 4, min_agreement_pct: 97}\n", name="b")
    c = source("simulation: {max_input_psi: 0.5}\n", name="c")
    t, sources = resolve([a, b, c])
    assert t.latency_tolerance == 0.04
    assert t.min_agreement == 0.97
    assert t.max_input_psi == 0.5
    assert sources["latency_tolerance"] == (
        "deployments/staging/b.yaml@main: spec.simulation.latency_tolerance_pct (the strictest)"
    )
    assert (
        sources["max_input_psi"] == "deployments/staging/c.yaml@main: spec.simulation.max_input_psi"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency_tolerance: -1\n", "field latency_tolerance: Input should be greater than"),
        ("latency_tolerence: 0.1\n", "field latency_tolerence: Extra inputs are not permitted"),
        ("[1, 2]\n", "expected a mapping of thresholds"),
        ("a: [\n", "not YAML"),
    ],
)
def test_a_bad_policy_file_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    with pytest.raises(BadInput) as info:
        resolve([], policy)
    assert info.value.message.startswith(f"{policy}: ")
    assert message in info.value.message


def test_a_bad_simulation_block_is_refused_by_the_spec() -> None:
    with pytest.raises(BadInput, match=r"fraud.yaml@main: not a valid deployment"):
        source("simulation: {min_agreement_pct: 120}\n")


def test_simulated_copies_neither_record_nor_monitor() -> None:
    text = deployment_yaml(
        extra_spec="recording: {sample_rate: 1}\n"
        "monitoring:\n  reference: {kind: dataset, path: fraud/train.csv}\n"
    )
    doc = yaml.safe_load(_renamed(text, "head", "/sim-head"))
    assert "recording" not in doc["spec"]
    assert "monitoring" not in doc["spec"]  # it needs recording: the copy would not validate
    [copy] = load_manifests({"deployments/sim/fraud-head.yaml": yaml.safe_dump(doc)}, "sim")
    assert copy.name == "fraud-head"


def _result(n: int = 300) -> ReplayResult:
    rng = np.random.default_rng(1)
    outcomes = [
        Outcome(id=f"r{i}", target=t, intended=i * 0.01, sent=i * 0.01,
                done=i * 0.01 + 0.005, status=200, latency_ms=float(rng.uniform(4, 6)),
                version="1" if t == "baseline" else "2", body={"predictions": [i % 2]})
        for i in range(n) for t in ("baseline", "candidate")
    ]  # fmt: skip
    return ReplayResult(
        targets={"baseline": "http://b", "candidate": "http://c"},
        paired=True,
        speed=1.0,
        scheduled=n,
        started_at=0.0,
        duration_s=3.0,
        lag_p50_ms=0.1,
        lag_p99_ms=0.5,
        lag_max_ms=1.0,
        dropped={},
        timed_out={},
        valid=True,
        outcomes=outcomes,
    )


def test_the_report_shows_each_threshold_with_its_source() -> None:
    t, sources = resolve([source("simulation: {latency_tolerance_pct: 10}\n")])
    report, _ = build_report(_result(), [], t, threshold_sources=sources)
    data = report.model_dump()
    assert data["threshold_sources"]["latency_tolerance"] == (
        f"{PATH}@main: spec.simulation.latency_tolerance_pct"
    )
    assert data["passed"] == (report.verdict == "pass")
    md = to_markdown(report)
    assert "Thresholds (1 set by the spec or a policy" in md
    assert (
        f"| `latency_tolerance` | 0.1 | {PATH}@main: spec.simulation.latency_tolerance_pct |" in md
    )
    assert "| `alpha` | 0.05 | default |" in md
    page = to_html(report)
    assert "spec.simulation.latency_tolerance_pct" in page
