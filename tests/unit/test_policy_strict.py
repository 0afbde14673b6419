"""Issue 15's defects, each pinned: exact lines, strict policy files, outputs that agree."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from controller.policy.docs import DOC_PATH, reference_text
from controller.policy.formats import as_junit, as_sarif
from controller.policy.gate import check_revisions
from controller.policy.loader import PolicyInvalid, load_policies, read_policy_files
from controller.policy.report import DOCS_URL, as_github
from controller.policy.source import PoliciesGiven
from tests.sarif import check_sarif
from tests.support import commit, deployment_yaml, make_repo

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
RULE = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyRules
    rules:
      - id: r
        description: d
        match: {environments: [staging]}
        validations:
          - expression: >-
              object.spec.replicas != null &&
                object.spec.replicas >=
            field: spec.replicas
    """
)


def _problems(files: dict[str, str], environments: set[str] | None = None) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_policies(files, environments=environments)
    return [str(p) for p in info.value.problems]


def test_the_field_reference_in_docs_is_generated_from_the_models() -> None:
    assert reference_text() in (ROOT / DOC_PATH).read_text(), "run `serveops schema`"


def test_a_syntax_error_in_a_folded_expression_is_on_its_own_line() -> None:
    [problem] = _problems({"policies/r.yaml": RULE})
    # the end of the folded block's second line: line 10, after `>=`
    assert problem.startswith("policies/r.yaml:10: rules[0].validations[0].expression:")
    assert problem.endswith("(column 36)")


def test_a_field_the_schema_lacks_an_unknown_environment_and_a_non_bool_are_errors() -> None:
    bad = textwrap.dedent(
        """\
        apiVersion: serveops.dev/v1alpha1
        kind: PolicyRules
        rules:
          - id: r
            description: d
            match: {environments: [prodcution]}
            validations:
              - expression: object.spec.replicas
                field: spec.replica
        """
    )
    problems = _problems({"policies/r.yaml": bad}, {"staging", "production"})
    assert any("match.environments[0]: no environment 'prodcution'" in p for p in problems)
    assert any(
        "validations[0].field: the deployment schema has no field 'replica'" in p for p in problems
    )
    assert any("validations[0].expression: returns a int, not a bool" in p for p in problems)


def test_a_non_string_message_and_a_list_file_are_clear_errors() -> None:
    good = RULE.replace(" &&\n          object.spec.replicas >=", "")
    [problem] = _problems({"policies/r.yaml": good.replace("field: spec.replicas", "message: 42")})
    assert "validations[0].message: Input should be a valid string" in problem
    [problem] = _problems({"policies/r.yaml": "- a\n- b\n"})
    assert problem == (
        "policies/r.yaml:1: a policy file is a mapping with `apiVersion` and `kind` "
        "(PolicyRules, PolicyWaivers or PolicyTest), not a list"
    )


def test_one_unreadable_rules_file_is_one_error_not_a_cascade() -> None:
    files = {
        str(Path(k).relative_to(ROOT)): v
        for k, v in read_policy_files(ROOT / "policies").items()
        if "/tests/" not in k
    }
    files["policies/production.yaml"] = files["policies/production.yaml"].replace(
        "\nrules:\n", "\nrules: [\n", 1
    )
    problems = _problems(files)
    assert len(problems) == 1
    assert problems[0].startswith("policies/production.yaml:")


@pytest.fixture
def result(tmp_path: Path) -> object:
    repo = tmp_path / "repo"
    base = make_repo(
        repo,
        {
            "deployments/production/fraud.yaml": deployment_yaml(
                environment="production", model="models:/fraud/1"
            )
        },
    )
    spec = """\
        autoscaling: {min_replicas: 1, max_replicas: 2}
        server:
          pip: [mlplatform-serving==1.0, requests>=2]
        """
    text = deployment_yaml(environment="production", model="models:/fraud/2", extra_spec=spec)
    text = text.replace("  replicas: 1\n", "").replace(
        "  owner: risk-team\n", "  owner: risk-team\n  labels: {db-password: x}\n"
    )
    head = commit(repo, {"deployments/production/fraud.yaml": text}, "bad")
    waiver = "apiVersion: serveops.dev/v1alpha1\nkind: PolicyWaivers\nwaivers:\n  - {rule: production-deletion, deployments: [production/x], owner: me, reason: r, expires: 2026-01-01}\n"
    files = {
        k: v
        for k, v in read_policy_files(ROOT / "policies").items()
        if "/tests/" not in k and not k.endswith("waivers.yaml")
    }
    files["policies/waivers.yaml"] = waiver
    return check_revisions(repo, head, base, policies=PoliciesGiven(files), now=NOW), text


def test_findings_are_on_the_offending_entry_line(result: object) -> None:
    checked, text = result  # type: ignore[misc]
    lines = text.splitlines()
    by_rule = {f.rule: f for f in checked.verdict.findings}
    where = {r: lines[f.location.line - 1].strip() for r, f in by_rule.items()}
    assert where["production-min-replicas"].startswith("autoscaling: {min_replicas: 1")
    assert by_rule["production-min-replicas"].location.field == "spec.autoscaling.min_replicas"
    assert where["no-literal-secrets"] == "labels: {db-password: x}"
    assert "metadata.labels.db-password" in by_rule["no-literal-secrets"].message
    assert where["allowed-serving-code"].startswith("pip:")
    pip = [f.location.field for f in checked.verdict.findings if f.rule == "allowed-serving-code"]
    assert "spec.server.pip[1]" in pip  # the unpinned entry, not the list


def test_outputs_agree_junit_counts_sarif_tally_and_schema(result: object) -> None:
    checked, _ = result  # type: ignore[misc]
    v = checked.verdict
    suite = ET.fromstring(as_junit(v)).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "")) == len(cases) == v.deployments * v.rules
    assert int(suite.get("failures", "")) == sum(1 for c in cases if c.find("failure") is not None)
    assert int(suite.get("skipped", "")) == sum(1 for c in cases if c.find("skipped") is not None)
    assert all(len(c.findall("failure")) <= 1 for c in cases)
    sarif = json.loads(as_sarif(v, checked.policies))
    check_sarif(sarif)
    run = sarif["runs"][0]
    assert run["tool"]["driver"]["informationUri"] == DOCS_URL
    assert all(r.get("help", {}).get("text") for r in run["tool"]["driver"]["rules"])
    assert run["properties"]["waivers"] == {"applied": 0, "unused": 0, "expired": 1}
    assert "serveops-expired-waiver" in {r["ruleId"] for r in run["results"]}
    assert "expired waiver" in as_github(v)
