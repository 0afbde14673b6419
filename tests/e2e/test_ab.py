"""A/B variants on real parts: a local Ray Serve, an MLflow store and a Git repository.

Two variants (v1 and v2 of the model, 50/50) behind one route, sticky by `x-user-id`: the same
user always gets the same version, and both variants get users.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.dev.demo import MODEL_NAME
from controller.serving.protocol import VARIANT_HEADER, VERSION_HEADER
from tests.e2e.conftest import Cluster, Registry, post_until_ok
from tests.support import make_repo

pytestmark = pytest.mark.e2e
ENV = "abtest"
NAME = "ab-cancer"
USERS = [f"user-{i}" for i in range(12)]


def spec(control: str, treatment: str) -> str:
    return f"""\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {NAME}
  environment: {ENV}
  owner: e2e
spec:
  route: /{NAME}
  model: models:/{MODEL_NAME}/{control}
  replicas: 1
  resources:
    num_cpus: 0.2
  rollout:
    strategy: ab
    sticky_header: x-user-id
    variants:
      - name: control
        weight: 50
      - name: treatment
        model: models:/{MODEL_NAME}/{treatment}
        weight: 50
"""


@pytest.fixture
def deployed(cluster: Cluster, registry: Registry, serveops: Any, tmp_path: Path) -> Iterator[str]:
    """The A/B deployment applied from Git; its applications are removed afterwards."""
    repo = tmp_path / "repo"
    v1, v2 = registry.versions[:2]
    make_repo(repo, {f"deployments/{ENV}/{NAME}.yaml": spec(v1, v2)}, "A/B v1 vs v2")
    result = serveops("apply", "--repo", str(repo), "--env", ENV, "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield cluster.url(f"/{NAME}")
    finally:
        with cluster.client() as client:
            live = client.get()
            ours = {a.name for a in live.managed(ENV).values()}
            client.put([a.config for a in live.apps.values() if a.name not in ours], live)


def test_a_user_always_gets_the_same_variant_and_both_variants_get_users(
    deployed: str, registry: Registry
) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data.iloc[:2]
    body = {"dataframe_split": data.to_dict(orient="split")}
    assert post_until_ok(deployed, body).status_code == 200
    v1, v2 = registry.versions[:2]
    seen: dict[str, set[tuple[str, str]]] = {user: set() for user in USERS}
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            for user in USERS:
                r = client.post(deployed, json=body, headers={"x-user-id": user})
                assert r.status_code == 200, r.text
                seen[user].add((r.headers[VERSION_HEADER], r.headers[VARIANT_HEADER]))
        without_header = {
            client.post(deployed, json=body).headers[VERSION_HEADER] for _ in range(30)
        }
    assert all(len(pairs) == 1 for pairs in seen.values()), seen
    variants = {pairs.pop() for pairs in seen.values()}
    assert variants == {(v1, "control"), (v2, "treatment")}
    assert without_header == {v1, v2}  # weighted random without the header
