"""`serveops simulate` end to end: real Git, a real MLflow store, a real local Ray Serve that the
command starts and stops itself, and a real Locust replay of a slice of the Azure trace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from simulator.traffic import import_csv_trace, write_jsonl
from tests.e2e.conftest import Registry

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT.parent / "shared" / "traces" / "azure-llm-inference-conv-2023.csv"
SERVEOPS = str(Path(sys.executable).with_name("serveops"))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


def _marked(mark: str) -> list[int]:
    """Processes that inherited our marker variable: the Ray that simulate started, if alive."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("SERVEOPS_TEST_MARK") == mark:
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.skipif(not TRACE.exists(), reason="needs the shared Azure trace")
def test_simulate_compares_two_revisions_and_writes_reports(
    registry: Registry, tmp_path: Path
) -> None:
    tracking_uri = registry.tracking_uri  # the session's store: v1 and v2 of the demo model
    v1, v2 = registry.versions

    repo = tmp_path / "repo"
    spec = repo / "deployments" / "staging" / "breast-cancer.yaml"
    spec.parent.mkdir(parents=True)
    shutil.copy(ROOT / "deployments" / "staging" / "breast-cancer.yaml", spec)
    spec.write_text(
        spec.read_text().replace("models:/breast-cancer/1", f"models:/breast-cancer/{v1}")
        + "  simulation:\n    latency_tolerance_pct: 10\n"  # read at the base revision
    )
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "v1")
    spec.write_text(spec.read_text().replace(f"breast-cancer/{v1}", f"breast-cancer/{v2}"))
    _git(repo, "commit", "-qam", "v2")

    header, records = import_csv_trace(TRACE, limit=150)
    traffic = tmp_path / "traffic.jsonl"
    write_jsonl(traffic, records, header)
    out = tmp_path / "out"
    mark = f"sim-{os.getpid()}-{tmp_path.name}"

    proc = subprocess.run(
        [SERVEOPS, "simulate", "--repo", str(repo), "--base", "main~1", "--head", "main",
         "--traffic", str(traffic), "--env", "staging", "--speed", "3", "--out", str(out),
         "--num-cpus", "2"],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SERVEOPS_TEST_MARK": mark},
        capture_output=True,
        text=True,
        timeout=480,  # one core kept for the generator (the default): Ray deploys on the other
        check=False,
    )  # fmt: skip
    assert _marked(mark) == [], "simulate left processes running"
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    assert (out / "report.json").exists(), proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == (1 if report["verdict"] == "fail" else 0)
    checks = {c["name"]: c for c in report["checks"]}
    assert {"replay_validity", "latency", "errors", "agreement", "input_drift"} <= set(checks)
    # Each side was answered by its own revision's model version, through its router.
    assert set(report["sides"]["baseline"]["versions"]) == {v1}
    assert set(report["sides"]["candidate"]["versions"]) == {v2}
    assert report["replay"]["scheduled"] == 150
    assert report["meta"]["deployments"] == ["breast-cancer"]
    assert "Splitwise" in report["meta"]["attribution"][0]
    assert report["thresholds"]["latency_tolerance"] == 0.1
    assert report["threshold_sources"]["latency_tolerance"] == (
        "deployments/staging/breast-cancer.yaml@main~1: spec.simulation.latency_tolerance_pct"
    )
    assert report["threshold_sources"]["alpha"] == "default"
    assert report["passed"] == (report["verdict"] == "pass")
    # v2 is the strongly regularised model: it answers differently on some rows.
    assert checks["agreement"]["figures"]["agreement"] < 1.0
    assert (out / "report.md").read_text().startswith("## Simulation:")
    assert "data:image/png;base64," in (out / "report.html").read_text()
