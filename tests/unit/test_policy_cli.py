"""`serveops check` and `serveops policy test`: exit codes, outputs, bad input. No cluster."""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

from typer.testing import CliRunner

from controller.cli.main import app
from tests.support import commit, deployment_yaml, make_repo

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]

RULE = """\
apiVersion: serveops.dev/v1alpha1
kind: PolicyRules
rules:
  - id: two-replicas
    description: at least two replicas
    validations:
      - expression: object.spec.replicas >= 2
        field: spec.replicas
"""


def _repo(tmp_path: Path, rule: str = RULE) -> tuple[Path, str, str]:
    path = tmp_path / "repo"
    base = make_repo(
        path, {"deployments/staging/fraud.yaml": deployment_yaml(), "policies/r.yaml": rule}
    )
    head = commit(
        path, {"deployments/staging/fraud.yaml": deployment_yaml(model="models:/fraud/2")}, "v2"
    )
    return path, base, head


def test_check_exits_1_on_error_and_0_when_waived(tmp_path: Path) -> None:
    path, base, head = _repo(tmp_path)
    args = ["check", "--repo", str(path), "--base", base, "--head", head]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "deployments/staging/fraud.yaml:" in result.output
    assert "[two-replicas] at least two replicas" in result.output
    waiver = (
        "apiVersion: serveops.dev/v1alpha1\nkind: PolicyWaivers\nwaivers:\n"
        "  - {rule: two-replicas, deployments: [staging/fraud], owner: me, reason: test, "
        "expires: 2099-01-01}\n"
    )
    # A waiver added by the change that needs it does not waive: the base's policies judge.
    head2 = commit(path, {"policies/waivers.yaml": waiver}, "waive")
    result = runner.invoke(app, ["check", "--repo", str(path), "--base", base, "--head", head2])
    assert result.exit_code == 1, result.output
    assert "waivers added (they do not waive this change): two-replicas" in result.output
    # Once the waiver has landed, it waives the next change.
    head3 = commit(
        path, {"deployments/staging/fraud.yaml": deployment_yaml(model="models:/fraud/3")}, "v3"
    )
    result = runner.invoke(app, ["check", "--repo", str(path), "--base", head2, "--head", head3])
    assert result.exit_code == 0, result.output
    assert "waivers: 1 applied, 0 unused, 0 expired" in result.output


def test_check_junit_output(tmp_path: Path) -> None:
    path, base, head = _repo(tmp_path)
    result = runner.invoke(
        app, ["check", "--repo", str(path), "--base", base, "--head", head, "-o", "junit"]
    )
    assert result.exit_code == 1
    suite = ET.fromstring(result.stdout).find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"


def test_check_bad_policy_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    path, base, head = _repo(tmp_path, RULE.replace(">= 2", ">= "))
    result = runner.invoke(app, ["check", "--repo", str(path), "--base", base, "--head", head])
    assert result.exit_code == 2
    assert "policies/r.yaml:7: rules[0].validations[0].expression" in result.output


def test_check_bad_usage_exits_2(tmp_path: Path) -> None:
    path, base, head = _repo(tmp_path)
    for args in (
        ["--head", head],  # neither --base nor --all
        ["--base", base, "-o", "xml"],
        ["--base", "no-such-rev"],
        ["--base", base, "--now", "yesterday"],
        ["--base", base, "--simulation", str(tmp_path / "missing.json")],
    ):
        result = runner.invoke(app, ["check", "--repo", str(path), *args])
        assert result.exit_code == 2, (args, result.output)


def test_policy_test_passes_on_the_starter_library() -> None:
    result = runner.invoke(app, ["policy", "test", "--dir", str(REPO_ROOT / "policies")])
    assert result.exit_code == 0, result.output
    assert " passed, 0 failed" in result.output
    assert "has no test case" not in result.output


def test_policy_test_reports_a_wrong_expectation(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    case = tmp_path / "policies/tests/spec_test.yaml"
    case.write_text(case.read_text().replace("fail: [resource-limits]", "pass: [resource-limits]"))
    result = runner.invoke(app, ["policy", "test", "--dir", str(tmp_path / "policies")])
    assert result.exit_code == 1
    assert "FAIL " in result.output
    assert "[resource-limits] expected pass, got fail" in result.output


def test_policy_test_unknown_rule_in_case_exits_2(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    case = tmp_path / "policies/tests/spec_test.yaml"
    case.write_text(case.read_text().replace("fail: [resource-limits]", "fail: [no-such-rule]"))
    result = runner.invoke(app, ["policy", "test", "--dir", str(tmp_path / "policies")])
    assert result.exit_code == 2
    assert "spec_test.yaml:" in result.output
    assert "no rule 'no-such-rule'" in result.output
