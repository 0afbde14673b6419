"""The gate judges BatchInference files too: rules with match.kind: BatchInference, typed and
field-checked against the batch schema, on real Git revisions."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from controller.policy import check_revisions, gate
from controller.policy.loader import PolicyInvalid, load_policies, read_policy_files
from controller.policy.source import PoliciesGiven
from tests.support import commit, deployment_yaml, make_repo

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.UTC)


def batch_yaml(env: str = "production", model: str = "models:/fraud/1", cpus: float = 0.5) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: BatchInference
        metadata: {{name: nightly, environment: {env}, owner: risk}}
        spec:
          model: {model}
          input: {{uri: /data/in}}
          output: {{uri: /data/out}}
          resources:
            num_cpus: {cpus}
          promotion: {{sample_rows: 1000, min_agreement: 0.95}}
        """
    )


def starter() -> PoliciesGiven:
    files = read_policy_files(ROOT / "policies")
    return PoliciesGiven({p: t for p, t in files.items() if p.endswith("batch.yaml")})


def test_a_batch_change_is_judged_at_its_own_lines(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    base = make_repo(repo, {"deployments/production/nightly.yaml": batch_yaml()})
    head = commit(
        repo,
        {"deployments/production/nightly.yaml": batch_yaml(model="models:/fraud@champion", cpus=6)},
        "alias and big actors",
    )
    result = check_revisions(repo, head, base, policies=starter(), now=NOW)
    [subject] = result.subjects
    assert (subject.key, subject.document_kind, subject.kind) == (
        "production/nightly",
        "BatchInference",
        "updated",
    )
    assert set(subject.fields) == {"spec.model", "spec.resources.num_cpus"}
    errors = {f.rule: f for f in result.verdict.errors}
    assert set(errors) == {
        "batch-production-pinned-version",
        "batch-resource-limits",
        "batch-production-comparison-passed",  # a model change with no comparison evidence
    }
    for rule in ("batch-production-pinned-version", "batch-production-comparison-passed"):
        assert str(errors[rule].location) == "deployments/production/nightly.yaml:5: spec.model"
    assert (
        str(errors["batch-resource-limits"].location)
        == "deployments/production/nightly.yaml:9: spec.resources.num_cpus"
    )


def test_the_controllers_gate_refuses_a_batch_file_it_cannot_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"deployments/production/nightly.yaml": batch_yaml()})
    commit(
        repo,
        {
            "deployments/staging/nightly.yaml": batch_yaml(env="staging").replace(
                "num_cpus: 0.5", "num_cpus: -1"
            )
        },
        "bad",
    )
    from controller.errors import BadInput

    with pytest.raises(BadInput, match=r"nightly.yaml:9: spec.resources.num_cpus"):
        gate(repo, "HEAD", "staging", registry=None, now=NOW, policies=starter())


def test_endpoint_rules_leave_batch_files_alone_and_batch_rules_endpoints(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(
        repo,
        {
            "deployments/staging/fraud.yaml": deployment_yaml(),
            "deployments/staging/nightly.yaml": batch_yaml(env="staging", cpus=6),
            "deployments/production/nightly.yaml": batch_yaml(),
        },
    )
    policies = PoliciesGiven(read_policy_files(ROOT / "policies"))
    verdict = gate(repo, "HEAD", "staging", registry=None, now=NOW, policies=policies)
    by_rule = {(f.rule, f.deployment) for f in verdict.errors}
    assert ("batch-resource-limits", "staging/nightly") in by_rule
    assert all(not r.startswith("batch-") for r, d in by_rule if d == "staging/fraud")
    assert all(r.startswith("batch-") for r, d in by_rule if d == "staging/nightly")


def test_a_batch_rule_naming_an_endpoint_field_is_refused_at_its_line() -> None:
    rules = textwrap.dedent(
        """\
        apiVersion: serveops.dev/v1alpha1
        kind: PolicyRules
        rules:
          - id: batch-route
            description: batch files have no route
            match: {kind: BatchInference}
            validations:
              - expression: object.spec.route != ''
                field: spec.route
        """
    )
    with pytest.raises(PolicyInvalid) as caught:
        load_policies({"policies/batch.yaml": rules})
    found = [str(p) for p in caught.value.problems]
    assert any("batch.yaml:8:" in p and "route" in p for p in found), found


def test_policy_changes_lists_model_changes_by_kind(tmp_path: Path) -> None:
    """What the simulate workflow asks: endpoints to replay, batch deployments to compare."""
    from typer.testing import CliRunner

    from controller.cli.main import app

    endpoint = "deployments/production/fraud.yaml"
    batch = "deployments/staging/nightly.yaml"
    files = {endpoint: deployment_yaml(environment="production"), batch: batch_yaml("staging")}
    base = make_repo(tmp_path, files)
    commit(
        tmp_path,
        {
            endpoint: deployment_yaml(environment="production", model="models:/fraud/2"),
            batch: batch_yaml("staging", model="models:/fraud/2"),
        },
        "both models move",
    )

    def changes(*extra: str) -> tuple[int, list[str]]:
        args = ["policy", "changes", "--repo", str(tmp_path), "--base", base, "--models"]
        result = CliRunner().invoke(app, [*args, *extra])
        return result.exit_code, result.output.split()

    assert changes() == (0, ["production/fraud", "staging/nightly"])
    assert changes("--kind", "ModelDeployment") == (0, ["production/fraud"])
    assert changes("--kind", "BatchInference", "--environments") == (0, ["staging"])
    code, said = changes("--kind", "Batch")
    assert code == 2
    assert "--kind must be ModelDeployment or BatchInference" in " ".join(said)
