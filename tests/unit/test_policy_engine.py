"""The policy engine: loading and compiling rules, evaluation, waivers, outputs. No cluster."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from controller.errors import BadInput
from controller.policy import check_revisions, gate, refusal
from controller.policy.formats import as_junit, as_sarif
from controller.policy.loader import PolicyInvalid, load_policies, read_policy_files
from controller.policy.report import as_github, as_json, markdown_summary
from controller.policy.source import PoliciesGiven
from controller.policy.testing import run_tests
from controller.registry.mlflow import FixedRegistry, ModelVersionRecord
from tests.support import commit, deployment_yaml, make_repo

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.UTC)

RULES = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyRules
    rules:
      - id: two-replicas
        description: at least two replicas
        match: {environments: [staging]}
        validations:
          - expression: object.spec.replicas != null && object.spec.replicas >= 2
            messageExpression: "'only ' + string(object.spec.replicas) + ' replica'"
            field: spec.replicas
      - id: cpu-hint
        description: small CPU reservations are suspicious
        severity: warning
        validations:
          - expression: object.spec.resources.num_cpus >= 0.5
            message: num_cpus below 0.5
            field: spec.resources.num_cpus
    """
)


def _policies(rules: str = RULES, waivers: str = "") -> dict[str, str]:
    files = {"policies/rules.yaml": rules}
    if waivers:
        files["policies/waivers.yaml"] = waivers
    return files


def _waiver(rule: str, expires: str, deployments: str = "[staging/fraud]") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: PolicyWaivers
        waivers:
          - rule: {rule}
            deployments: {deployments}
            owner: risk-team
            reason: migration in progress
            expires: {expires}
        """
    )


def _problems(files: dict[str, str]) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_policies(files)
    return [str(p) for p in info.value.problems]


# --- bad input: found before anything is evaluated, with file and line -----------------------


def test_cel_syntax_error_names_file_line_and_field() -> None:
    bad = RULES.replace("object.spec.replicas >= 2", "object.spec.replicas >= ")
    [problem] = _problems(_policies(bad))
    assert problem.startswith("policies/rules.yaml:8: rules[0].validations[0].expression:")
    assert "syntax error" in problem


def test_unknown_field_reference_is_an_error() -> None:
    bad = RULES.replace("object.spec.resources.num_cpus", "object.spec.resource.num_cpus")
    [problem] = _problems(_policies(bad))
    assert "policies/rules.yaml:15:" in problem
    assert "object.spec has no field 'resource'" in problem


def test_unknown_variable_and_function_are_errors() -> None:
    bad = RULES.replace("object.spec.resources.num_cpus >= 0.5", "obj.spec > 1").replace(
        "object.spec.replicas != null &&", "lowerAscii(object.metadata.name) == 'x' &&"
    )
    problems = _problems(_policies(bad))
    assert any("unknown variable obj" in p for p in problems)
    assert any("unknown function lowerAscii" in p for p in problems)


def test_params_the_cel_runtime_cannot_take_are_errors() -> None:
    dated = RULES.replace(
        "    severity: warning\n", "    severity: warning\n    params: {since: [2026-01-01]}\n"
    )
    [problem] = _problems(_policies(dated))
    assert problem.startswith("policies/rules.yaml:14: rules[1].params.since[0]:")
    assert "a date is not a CEL value" in problem


def test_waiver_for_unknown_rule_and_malformed_date() -> None:
    [problem] = _problems(_policies(waivers=_waiver("no-such-rule", "2026-03-01")))
    assert problem.startswith("policies/waivers.yaml:4: waivers[0].rule:")
    assert "does not exist" in problem
    [problem] = _problems(_policies(waivers=_waiver("two-replicas", "2026-02-30")))
    assert problem.startswith("policies/waivers.yaml:8: invalid value: day is out of range")
    [problem] = _problems(_policies(waivers=_waiver("two-replicas", "'next friday'")))
    assert problem.startswith("policies/waivers.yaml:8: waivers[0].expires:")


def test_unknown_rule_field_and_duplicate_ids() -> None:
    dup = RULES.replace("id: cpu-hint", "id: two-replicas").replace(
        "severity: warning", "severity: fatal"
    )
    problems = _problems(_policies(dup))
    assert any("rules[1].severity" in p for p in problems)
    problems = _problems(_policies(RULES.replace("id: cpu-hint", "id: two-replicas")))
    assert any("already used at policies/rules.yaml:4" in p for p in problems)


# --- evaluation on a real repository ---------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "repo"
    base = make_repo(
        path,
        {
            "deployments/staging/fraud.yaml": deployment_yaml(),
            "deployments/staging/churn.yaml": deployment_yaml("churn", model="models:/churn/1"),
        },
    )
    head = commit(
        path,
        {"deployments/staging/fraud.yaml": deployment_yaml(model="models:/fraud/2")},
        "fraud v2",
    )
    return path, base, head


def test_only_changed_deployments_are_checked_and_lines_are_real(
    repo: tuple[Path, str, str],
) -> None:
    path, base, head = repo
    result = check_revisions(path, head, base, policies=PoliciesGiven(_policies()), now=NOW)
    v = result.verdict
    assert [s.key for s in result.subjects] == ["staging/fraud"]
    assert result.subjects[0].kind == "updated"
    assert result.subjects[0].fields == ("spec.model",)
    assert not v.allowed
    [error] = v.errors
    assert error.rule == "two-replicas"
    assert error.message == "only 1 replica"
    text = deployment_yaml(model="models:/fraud/2").splitlines()
    assert text[error.location.line - 1].strip() == "replicas: 1"  # type: ignore[operator]
    [warning] = v.warnings
    assert text[warning.location.line - 1].strip() == "num_cpus: 0.25"  # type: ignore[operator]
    everything = check_revisions(
        path, head, base, policies=PoliciesGiven(_policies()), now=NOW, include_unchanged=True
    )
    assert everything.verdict.deployments == 2


def test_active_waiver_excuses_and_is_tallied(repo: tuple[Path, str, str]) -> None:
    path, base, head = repo
    files = _policies(waivers=_waiver("two-replicas", "2026-02-01"))
    v = check_revisions(path, head, base, policies=PoliciesGiven(files), now=NOW).verdict
    assert v.allowed
    assert [f.rule for f in v.waived] == ["two-replicas"]
    assert len(v.waivers.applied) == 1
    assert not v.waivers.expired
    doc = json.loads(as_json(v))
    assert doc["allowed"] is True
    assert doc["counts"]["waived"] == 1
    assert doc["waivers"]["applied"][0]["owner"] == "risk-team"


def test_expired_waiver_stops_waiving_and_is_reported(repo: tuple[Path, str, str]) -> None:
    path, base, head = repo
    files = _policies(waivers=_waiver("two-replicas", "2026-01-31"))
    v = check_revisions(path, head, base, policies=PoliciesGiven(files), now=NOW).verdict
    assert not v.allowed
    [error] = v.errors
    assert error.expired_waiver is not None
    assert len(v.waivers.expired) == 1
    assert "expired waiver" in as_github(v)
    assert "waiver expired on 2026-01-31" in refusal(v)


def test_waiver_globs_and_other_deployments(repo: tuple[Path, str, str]) -> None:
    path, base, head = repo
    files = _policies(waivers=_waiver("two-replicas", "2030-01-01", "['staging/ch*']"))
    v = check_revisions(path, head, base, policies=PoliciesGiven(files), now=NOW).verdict
    assert not v.allowed  # the waiver covers churn, not fraud
    assert len(v.waivers.unused) == 1


def test_outputs_github_sarif_junit(repo: tuple[Path, str, str]) -> None:
    path, base, head = repo
    result = check_revisions(path, head, base, policies=PoliciesGiven(_policies()), now=NOW)
    v = result.verdict
    line = v.errors[0].location.line
    github = as_github(v)
    assert (
        f"::error file=deployments/staging/fraud.yaml,line={line},title=two-replicas::only 1 replica"
        in github
    )
    sarif = json.loads(as_sarif(v, result.policies))
    res = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in res} == {"two-replicas", "cpu-hint"}
    assert res[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == line
    junit = ET.fromstring(as_junit(v))
    assert junit.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]
    assert "❌" in markdown_summary(v)


def test_registry_record_and_simulation_reach_rules(repo: tuple[Path, str, str]) -> None:
    path, base, head = repo
    rules = textwrap.dedent(
        """\
        apiVersion: serveops.dev/v1alpha1
        kind: PolicyRules
        rules:
          - id: quality
            description: accuracy at least 0.9
            matchConditions: [{name: changed, expression: change.modelChanged}]
            validations:
              - expression: model.run.metrics['accuracy'] >= 0.9
                field: spec.model
              - expression: simulation.passed
          - id: creation-time
            description: model created before the request
            validations:
              - expression: model.creation_time < request.time && 'champion' in model.aliases
        """
    )
    record = ModelVersionRecord(
        "fraud",
        "2",
        aliases=["champion"],
        run_metrics={"accuracy": 0.8},
        creation_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    registry = FixedRegistry(
        {"fraud": {"1": "1", "2": "2", "@champion": "2"}}, records={("fraud", "2"): record}
    )
    v = check_revisions(
        path,
        head,
        base,
        policies=PoliciesGiven({"policies/r.yaml": rules}),
        registry=registry,
        simulation={"deployments": {"staging/fraud": {"passed": False}}},
        now=NOW,
    ).verdict
    assert sorted(f.message for f in v.errors) == ["accuracy at least 0.9"] * 2
    assert [o.status for o in v.outcomes if o.rule == "creation-time"] == ["pass"]


def test_gate_checks_every_deployment_of_the_environment(repo: tuple[Path, str, str]) -> None:
    path, _, _ = repo
    (path / "policies").mkdir()
    commit(path, {"policies/rules.yaml": RULES}, "policies")
    v = gate(path, "HEAD", "staging", registry=None, now=NOW)
    assert v.deployments == 2
    assert {f.deployment for f in v.errors} == {"staging/fraud", "staging/churn"}
    assert refusal(v).startswith("policy check failed: 2 error(s)")


def test_invalid_deployment_at_head_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    base = make_repo(path, {"deployments/staging/fraud.yaml": deployment_yaml()})
    head = commit(path, {"deployments/staging/fraud.yaml": "spec: [\n"}, "broken")
    with pytest.raises(BadInput):
        check_revisions(path, head, base, policies=PoliciesGiven(_policies()), now=NOW)


# --- the starter library ---------------------------------------------------------------------


def test_starter_library_tests_pass_and_cover_every_rule() -> None:
    policies = load_policies(read_policy_files(REPO_ROOT / "policies"), with_tests=True)
    results = run_tests(policies)
    assert results
    assert all(r.passed for r in results), [r.failures for r in results]
    tested = {
        rid
        for _, t in policies.tests
        for c in t.cases
        for rid in (*c.expect.fail, *c.expect.pass_, *c.expect.skip)
    }
    assert tested == {r.id for r in policies.rules}


def test_example_deployments_pass_the_starter_rules(tmp_path: Path) -> None:
    files = {
        p.relative_to(REPO_ROOT).as_posix(): p.read_text()
        for p in (REPO_ROOT / "deployments").rglob("*.yaml")
    }
    path = tmp_path / "repo"
    make_repo(path, files)
    policy_files = read_policy_files(REPO_ROOT / "policies")
    v = check_revisions(
        path, "HEAD", "HEAD", include_unchanged=True, policies=PoliciesGiven(policy_files), now=NOW
    ).verdict
    assert v.allowed, refusal(v)
    assert not v.warnings
