"""`make demo`'s tour, run whole on the session's cluster so it cannot silently break: the
controller as a process under the tour's load, a pull request refused by `serveops check`,
`serveops simulate` failing v2 on recorded traffic, a canary to v3 with analysis and a
rollback, each without a failed request (the tour fails its step otherwise).

One test: the tour is one story on one repository, and its steps are each covered in depth
elsewhere (test_gate_ci, test_sim_simulate, test_zero_downtime); what this adds is their wiring as a
user meets it. On a cluster it did not start, the tour removes its applications at the end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from controller.dev import tour_repo
from controller.dev.demo import MODEL_NAME
from controller.dev.tour import ENV, run_tour
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e


def test_the_tour_tells_the_whole_story(
    cluster: Cluster, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "demo"
    timings = run_tour(workdir, address=cluster.address, http_port=cluster.http_port)
    out = capfd.readouterr().out

    outcomes = [(t.number, t.outcome) for t in timings]
    assert outcomes == [(n, "ok") for n in (0, 1, 2, 3, 4, 5, 6, 6, 7)]  # 6: drift, batch
    # Step 6: the drifted inputs are judged drift, the scaled features named.
    assert re.search(r"^breast-cancer\s+v\d+\s+drift\s.*mean radius PSI", out, re.M), out
    # Step 6: live accuracy, before and after the drift: the load's labels joined by request id.
    accuracies = re.findall(
        r"^  v\d+: classification, \d+ labelled rows: accuracy ([0-9.]+)", out, re.M
    )
    assert len(accuracies) >= 2, out
    # Step 6: the drift closes through Git: v3 proposed on a branch, the drift in its message.
    proposal = tour_repo.git(
        workdir / "repo", "log", "-1", "--format=%s%n%b", f"serveops/propose/{ENV}/{MODEL_NAME}-v3"
    )
    assert "v3" in proposal, proposal
    # Step 6: the batch deployment ran twice, for v1, then for v3 after its sample check.
    manifests = [
        json.loads(p.read_text())
        for p in sorted((workdir / "batch" / "scores").glob("run=*/_manifest.json"))
    ]
    assert [m["rows"] for m in manifests] == [5690, 5690]
    assert manifests[0]["previous_model"] is None
    assert manifests[1]["previous_model"] == manifests[0]["model"] != manifests[1]["model"]
    assert manifests[1]["agreement"] >= 0.95
    # Step 2: refused by the production rule it breaks, at the file, line and field.
    assert re.search(
        rf"^{tour_repo.PRODUCTION}:\d+: spec.rollout.steps\[0\].weight: error "
        rf"\[{tour_repo.RULE_BROKEN}\]",
        out,
        re.M,
    ), out
    # Step 3: v2 fails the simulation on agreement, with its report written.
    report = json.loads((workdir / "reports" / "simulate-v2" / "report.json").read_text())
    assert report["verdict"] == "fail"
    agreement = next(c for c in report["checks"] if c["name"] == "agreement")
    assert agreement["status"] == "fail"
    assert (workdir / "reports" / "simulate-v2" / "report.html").is_file()
    # Steps 4 and 5: a merge, then a revert commit naming what it undid.
    log = tour_repo.git(workdir / "repo", "log", "--format=%s%n%b", "main")
    assert "Merge pr/v3" in log
    assert f"Roll back {ENV}/{MODEL_NAME}" in log
    assert "Serveops-Rollback-Of:" in log
    assert "0 failed" in out
    # Step 7: the tour's applications are gone from the cluster it did not start.
    apps = httpx.get(f"{cluster.address}/api/serve/applications/", timeout=30).json()
    assert not any(
        name == MODEL_NAME or name.startswith(f"{MODEL_NAME}--")
        for name in apps.get("applications") or {}
    )
