"""The controller's second policy gate before apply (real Git repo, FakeServe, FixedRegistry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import Refused
from controller.registry.mlflow import FixedRegistry
from controller.sync.read import Revision, enforce_policies, plan_revision
from tests.support import FakeServe, commit, deployment_yaml, make_repo

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = FixedRegistry({"fraud": {"1": "1", "@champion": "1"}})
PROD = "deployments/production/fraud.yaml"


def prod_spec(model: str) -> str:
    return deployment_yaml(environment="production", model=model).replace(
        "  replicas: 1\n",
        "  replicas: 2\n  rollout:\n    strategy: canary\n    steps: [{weight: 10}]\n",
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    policies = {
        f"policies/{p.name}": p.read_text()
        for p in (ROOT / "policies").glob("*.yaml")
        if p.name not in ("registry.yaml", "waivers.yaml")  # registry rules need lineage tags
    }
    make_repo(tmp_path, {**policies, PROD: prod_spec("models:/fraud/1")})
    return tmp_path


def test_compliant_change_passes_the_gate(repo: Path) -> None:
    plan = plan_revision(Revision(str(repo), "HEAD", "production"), FakeServe(), REGISTRY)
    enforce_policies(plan, REGISTRY)  # does not raise


def test_change_that_skipped_ci_is_refused_before_apply(repo: Path) -> None:
    commit(repo, {PROD: prod_spec("models:/fraud@champion")}, "merged without CI")
    serve = FakeServe()
    plan = plan_revision(Revision(str(repo), "HEAD", "production"), serve, REGISTRY)
    with pytest.raises(Refused, match="production must pin an exact model version") as info:
        enforce_policies(plan, REGISTRY)
    assert f"{PROD}:9" in info.value.message  # the line of spec.model
    assert serve.puts == []
