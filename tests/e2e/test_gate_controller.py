"""The gate holds in the controller: attacks by a commit with merge rights, each refused with
nothing of it run or stored. Real Git repositories, a real local Ray Serve and MLflow store,
`serveops sync` run as a process (a controller pass), policies in a platform directory."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from controller.dev.demo import MODEL_NAME
from controller.gitops.state import StateStore
from tests.e2e.conftest import Cluster, Registry
from tests.support import commit, git, make_repo

NAME = "gated"
SPEC = f"deployments/staging/{NAME}.yaml"

RULES = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyRules
    rules:
      - id: team-label
        description: every deployment names its team
        match: {environments: [staging]}
        validations:
          - expression: "'team' in object.metadata.labels"
            message: label the deployment with its team
            field: metadata.labels
      - id: new-needs-review
        description: a new deployment carries the reviewed label
        match: {environments: [staging], changes: [created]}
        validations:
          - expression: "'reviewed' in object.metadata.labels"
            message: a new deployment needs the reviewed label
            field: metadata.labels
    """
)
WAIVER = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyWaivers
    waivers:
      - rule: team-label
        deployments: [gated]
        environments: [staging]
        owner: mallory
        reason: trust me
        expires: "2099-01-01"
    """
)


def spec(version: str, labels: dict[str, str], extra: str = "") -> str:
    label_lines = "".join(f'    {k}: "{v}"\n' for k, v in labels.items())
    return (
        "apiVersion: serveops.dev/v1alpha1\n"
        "kind: ModelDeployment\n"
        "metadata:\n"
        f"  name: {NAME}\n"
        "  environment: staging\n"
        "  owner: ml-platform\n"
        f"  labels:\n{label_lines}"
        "spec:\n"
        f"  route: /{NAME}\n"
        f"  model: models:/{MODEL_NAME}/{version}\n"
        "  replicas: 1\n"
        "  resources:\n"
        "    num_cpus: 0.2\n" + extra
    )


class Sync:
    """`serveops sync` against the test cluster, with the platform's policies."""

    def __init__(self, serveops: Any, repo: Path, root: Path) -> None:
        self.serveops, self.repo, self.root = serveops, repo, root
        self.platform = root / "platform"
        self.platform.mkdir()
        (self.platform / "rules.yaml").write_text(RULES)
        self.state = root / "state" / "state.db"

    def __call__(self) -> dict[str, Any]:
        done = self.serveops(
            "sync", "--repo", str(self.repo), "--env", "staging", "--state", str(self.state),
            "--policies", str(self.platform), "--timeout", "240s", "-o", "json",
        )  # fmt: skip
        assert done.returncode in (0, 1, 2), done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        result["returncode"] = done.returncode
        return result

    def admitted(self) -> str | None:
        with StateStore(self.state) as store:
            admitted = store.environment("staging").admitted
            return admitted.commit if admitted else None


def serving_apps(cluster: Cluster) -> set[str]:
    return {n for n in cluster.client().get().apps if n == NAME or n.startswith(f"{NAME}--")}


@pytest.fixture
def world(serveops: Any, registry: Registry, tmp_path: Path) -> Any:
    repo = tmp_path / "repo"
    make_repo(repo, {SPEC: spec(registry.versions[0], {"team": "risk", "reviewed": "yes"})})
    return Sync(serveops, repo, tmp_path)


def test_attacks_on_the_gate_are_refused_and_nothing_of_them_runs(
    world: Sync, cluster: Cluster, registry: Registry, tmp_path: Path
) -> None:
    v1, v2 = registry.versions
    first = world()
    assert first["outcome"] == "applied", first["message"]
    assert first["returncode"] == 0
    admitted = world.admitted()
    apps = serving_apps(cluster)
    assert apps == {NAME, f"{NAME}--v{v1}"}

    def refused(message: str, files: dict[str, str | None], expect: str) -> None:
        head = commit(world.repo, files, message)
        before = world.admitted()
        result = world()
        assert result["outcome"] == "refused", result["message"]
        assert result["returncode"] == 1
        assert expect in result["message"], result["message"]
        assert result["commit"] == head
        assert world.admitted() == before  # nothing of the refused commit stored
        assert serving_apps(cluster) == apps  # nor applied
        git(world.repo, "reset", "-q", "--hard", "HEAD~1")  # the next attack starts clean

    # 1. A self-waiver: the change breaks a rule and brings its own waiver.
    refused(
        "v2 without a team, waived by itself",
        {SPEC: spec(v2, {"reviewed": "yes"}), "policies/waivers.yaml": WAIVER},
        "label the deployment with its team",
    )
    # 2. The rule deleted in the same change (the repository's policies/ judge nothing).
    refused(
        "delete the rule and break it",
        {SPEC: spec(v2, {"reviewed": "yes"}), "policies/rules.yaml": "rules: []\n"},
        "label the deployment with its team",
    )
    # 3. A change Serve never sees (rollout settings only) is gated all the same.
    canary = "  rollout:\n    strategy: canary\n    steps:\n      - weight: 50\n        pause: 1s\n"
    refused(
        "canary settings, and no team",
        {SPEC: spec(v1, {"reviewed": "yes"}, canary)},
        "label the deployment with its team",
    )
    # 4. A lost state file: the base is unknown, so every deployment counts as created and
    # the rule for new ones applies (an update of a known base would not be judged by it).
    kept = world.state
    world.state = tmp_path / "lost" / "state.db"
    refused("v2, unreviewed", {SPEC: spec(v2, {"team": "risk"})}, "needs the reviewed label")
    world.state = kept
    # 5. A force-push that drops what was admitted from the history: the same.
    git(world.repo, "checkout", "-q", "--orphan", "rewritten")
    commit(world.repo, {SPEC: spec(v2, {"team": "risk"})}, "history rewritten")
    git(world.repo, "branch", "-f", "main", "rewritten")
    git(world.repo, "checkout", "-q", "main")
    git(world.repo, "branch", "-q", "-D", "rewritten")
    git(world.repo, "reflog", "expire", "--expire=now", "--all")
    git(world.repo, "gc", "-q", "--prune=now")
    result = world()
    assert result["outcome"] == "refused"
    assert "needs the reviewed label" in result["message"]
    assert world.admitted() == admitted
    assert serving_apps(cluster) == apps

    # 6. A hook that would exfiltrate the controller's environment: the rules admit it (it
    # breaks none), but it never runs: the controller allows no program.
    leak = tmp_path / "leaked.json"
    dump = f"import json, os; json.dump(dict(os.environ), open({str(leak)!r}, 'w'))"
    hooked = (
        canary + "    hooks:\n      pre_rollout:\n        - name: exfiltrate\n"
        f"          command: [{json.dumps(sys.executable)}, '-c', {json.dumps(dump)}]\n"
    )
    commit(world.repo, {SPEC: spec(v2, {"team": "risk", "reviewed": "yes"}, hooked)}, "hook")
    for _ in range(90):  # the candidate starts, then its pre-rollout hook is due
        result = world()
        if result["outcome"] == "aborted":
            break
    assert result["outcome"] == "aborted", result["message"]
    assert "is not a program this controller allows hooks to run" in result["message"]
    assert not leak.exists()
    with StateStore(world.state) as store:
        events = [(e.action, e.weight) for e in store.rollout_events("staging", NAME)]
    assert ("set_weight", 50) not in events  # no traffic ever moved to v2
