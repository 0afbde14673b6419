"""The gate holds on real Git, as CI and the controller run it (no Ray needed): a pull request
cannot waive or delete the rules that judge it, is judged against its merge-base, fails closed
without a base, and a simulated change is admitted after a squash merge through signed
evidence, found again by its spec."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.policy.evidence import DirectoryStore, write_evidence
from controller.policy.gate import gate
from controller.policy.report import refusal
from controller.policy.source import PoliciesAtRevision
from controller.spec.manifest import parse_manifest
from tests.support import commit, git, make_repo
from tests.workflows import REPO_ROOT, repo_files

pytestmark = pytest.mark.e2e

SERVEOPS = str(Path(sys.executable).parent / "serveops")
PROD = "deployments/production/breast-cancer.yaml"
STAGING = "deployments/staging/breast-cancer.yaml"
NOW = "2026-02-01T12:00:00Z"
KEY = b"an evidence key, given out of band"


def serveops(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in an environment of its own: none of the session's MLflow, serveops or GitHub
    variables (other e2e tests' `mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI, which
    `check` reads as --registry-uri), only `env`'s."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SERVEOPS_", "GITHUB_"))
    }
    return subprocess.run(
        [SERVEOPS, *args, "--now", NOW] if args[0] == "check" else [SERVEOPS, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**inherited, **(env or {})},
    )


def _prod(old: str, new: str) -> str:
    text = (REPO_ROOT / PROD).read_text()
    assert old in text
    return text.replace(old, new)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    make_repo(path, repo_files())
    git(path, "checkout", "-q", "-b", "feature")
    return path


def test_a_waiver_added_by_the_change_that_needs_it_does_not_waive(repo: Path) -> None:
    waivers = (REPO_ROOT / "policies/waivers.yaml").read_text() + (
        "  - rule: production-min-replicas\n"
        "    deployments: [production/breast-cancer]\n"
        "    owner: me\n    reason: cheaper\n    expires: 2099-01-01\n"
    )
    broken = _prod("min_replicas: 2", "min_replicas: 1")
    commit(repo, {PROD: broken, "policies/waivers.yaml": waivers}, "one replica, waived")
    result = serveops(repo, "check", "--base", "main", "--head", "feature")
    assert result.returncode == 1, result.stdout + result.stderr
    line = broken.splitlines().index("    min_replicas: 1") + 1
    assert f"{PROD}:{line}: spec.autoscaling.min_replicas: error [production-min-replicas]" in (
        result.stdout
    )
    assert "waivers added (they do not waive this change): production-min-replicas" in (
        result.stdout
    )


def test_a_rule_deleted_by_the_change_still_judges_it(repo: Path) -> None:
    rules = (REPO_ROOT / "policies/production.yaml").read_text()
    start = rules.index("  - id: production-min-replicas")
    end = rules.index("  - id: production-progressive-rollout")
    tests = (REPO_ROOT / "policies/tests/production_test.yaml").read_text()
    batch_tests = (REPO_ROOT / "policies/tests/batch_test.yaml").read_text()
    commit(
        repo,
        {
            PROD: _prod("min_replicas: 2", "min_replicas: 1"),
            "policies/production.yaml": rules[:start] + rules[end:],
            "policies/tests/production_test.yaml": tests.replace("production-min-replicas, ", "")
            .replace("[production-min-replicas, ", "[")
            .replace("fail: [production-min-replicas]", "fail: [production-progressive-rollout]")
            .replace("pass: [production-min-replicas]", "pass: [production-pinned-version]"),
            # The batch rules' tests name it too (endpoint rules never judge batch files).
            "policies/tests/batch_test.yaml": batch_tests.replace("production-min-replicas, ", ""),
        },
        "drop the rule",
    )
    result = serveops(repo, "check", "--base", "main", "--head", "feature", "-o", "json")
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    errors = [f["rule"] for f in doc["findings"] if f["severity"] == "error"]
    assert errors == ["production-min-replicas"]  # warnings (production-monitored) aside
    assert doc["policyChange"]["rulesRemoved"] == ["production-min-replicas"]


def test_the_merge_base_is_the_base_not_the_tip_of_main(repo: Path) -> None:
    text = (REPO_ROOT / STAGING).read_text()
    commit(repo, {STAGING: text.replace("owner: ml-platform", "owner: oncology")}, "pr")
    git(repo, "checkout", "-q", "main")
    other = text.replace("name: breast-cancer", "name: other").replace(
        "route: /breast-cancer", "route: /other"
    )
    commit(repo, {"deployments/staging/other.yaml": other}, "landed on main after branching")
    git(repo, "checkout", "-q", "feature")
    pr = json.loads(
        serveops(repo, "check", "--base", "main", "--head", "feature", "-o", "json").stdout
    )
    assert pr["deployments"] == 1  # the pull request's own change only
    tip = serveops(repo, "check", "--base", "main", "--base-tip", "--head", "feature", "-o", "json")
    assert json.loads(tip.stdout)["deployments"] == 2  # main's new deployment looks deleted


def test_no_base_fails_closed(repo: Path) -> None:
    result = serveops(repo, "check", "--all", "--head", "feature", "--env", "production")
    assert result.returncode == 1
    assert "no base revision: every deployment is treated as created" in result.stdout
    assert "[production-simulation-passed] no simulation evidence" in result.stdout
    missing = serveops(repo, "check", "--all", "--head", "feature", "--env", "prod")
    assert missing.returncode == 2
    assert "no environment 'prod'" in missing.stderr


def test_a_simulated_change_is_admitted_after_a_squash_merge(repo: Path, tmp_path: Path) -> None:
    main_before = git(repo, "rev-parse", "main")
    v2 = _prod("models:/breast-cancer/1", "models:/breast-cancer/2")
    commit(repo, {PROD: v2.replace("max_replicas: 4", "max_replicas: 5")}, "v2, wip")
    head = commit(repo, {PROD: v2}, "v2")
    # the simulate job signs the verdict of the spec it simulated (the pull request's head)
    store = DirectoryStore(tmp_path / "evidence")
    manifest, _ = parse_manifest(PROD, v2)
    assert manifest is not None
    report = {"verdict": "pass", "passed": True, "reason": "no regression", "checks": []}
    write_evidence(store, manifest.deployment, None, report, {"head": head}, KEY)
    # squash merge: one new commit on main, a sha the evidence never saw
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--squash", "feature")
    git(repo, "commit", "-qm", "v2 (squashed)")
    squashed = git(repo, "rev-parse", "HEAD")
    now = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)

    def judge(evidence: DirectoryStore | None) -> str | None:
        verdict = gate(
            repo,
            squashed,
            "production",
            registry=None,
            base=main_before,
            policies=PoliciesAtRevision(repo, main_before),
            evidence=evidence,
            evidence_key=KEY,
            now=now,
        )
        return None if verdict.allowed else refusal(verdict)

    assert judge(store) is None
    refused = judge(None)
    assert refused is not None
    assert "serveops simulate" in refused
    assert "serveops policy evidence write" in refused
    # a record the key did not sign is not evidence
    [record] = list((tmp_path / "evidence").rglob("*.json"))
    record.write_text(record.read_text().replace('"passed": true', '"passed": false'))
    tampered = judge(store)
    assert tampered is not None
    assert "bad signature, not evidence" in tampered
    # the CLI reads the same store
    result = serveops(
        repo,
        "check",
        "--base",
        main_before,
        "--head",
        squashed,
        "--evidence",
        str(tmp_path / "evidence"),
        env={"SERVEOPS_EVIDENCE_KEY": KEY.decode()},
    )
    assert result.returncode == 1
    assert "bad signature" in result.stdout
