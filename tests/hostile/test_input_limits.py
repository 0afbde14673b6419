"""Deployment, policy, waiver and plan files from a pull request: every limit is a located
refusal (exit 2, file:line, no traceback), never minutes of CPU, gigabytes or a crash."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from controller.errors import ValidationFailed
from controller.gitops.reconciler import Controller, ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.loader import PolicyInvalid, load_policies, read_policy_files
from controller.policy.source import PoliciesInDirectory
from controller.registry.mlflow import FixedRegistry
from controller.source.git import read_snapshot
from controller.source.repository import RepoSource
from controller.spec.manifest import load_manifests
from tests.hostile.conftest import bounded_call, run_bounded
from tests.support import FakeServe, deployment_yaml, git, make_repo

STAGING = "deployments/staging"


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """Billion laughs: each level is `width` aliases of the one before (9**8 leaves)."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels + "\n"


def validate(tmp_path: Path, name: str, content: str | bytes) -> tuple[int, str]:
    folder = tmp_path / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    done = run_bounded("validate", "deployments/", cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


def assert_refused(code: int, output: str, where: str, why: str) -> None:
    assert "Traceback" not in output, output[-2000:]
    assert code == 2, output[-2000:]
    assert where in output, output[-2000:]
    assert why in output, output[-2000:]


def test_alias_bomb_is_refused_at_its_line(tmp_path: Path) -> None:
    code, output = validate(tmp_path, "bomb.yaml", alias_bomb())
    assert_refused(code, output, f"{STAGING}/bomb.yaml:", "aliases are expanded")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    code, output = validate(tmp_path, "loop.yaml", "a: &x [1, *x]\n")
    assert_refused(code, output, f"{STAGING}/loop.yaml:1", "refers to itself")


@pytest.mark.parametrize("levels", [5_000, 100_000])
def test_deep_nesting_is_refused_before_the_composer(tmp_path: Path, levels: int) -> None:
    code, output = validate(tmp_path, "deep.yaml", nested(levels))
    assert_refused(code, output, f"{STAGING}/deep.yaml:1", "nested deeper than 64 levels")


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    text = "".join("  " * i + "a:\n" for i in range(500)) + "  " * 500 + "1\n"
    code, output = validate(tmp_path, "block.yaml", text)
    assert_refused(code, output, f"{STAGING}/block.yaml:", "nested deeper than 64 levels")


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    text = deployment_yaml() + "# " + "x" * (20 * 1024 * 1024) + "\n"
    code, output = validate(tmp_path, "huge.yaml", text)
    assert_refused(code, output, f"{STAGING}/huge.yaml:1", "more than the limit of 1,048,576")


def test_latin1_file_names_the_byte_offset(tmp_path: Path) -> None:
    text = deployment_yaml().replace("owner: risk-team", "owner: équipe").encode("latin-1")
    offset = text.index(b"\xe9")
    code, output = validate(tmp_path, "latin1.yaml", text)
    assert_refused(
        code, output, f"{STAGING}/latin1.yaml:6", f"not UTF-8: byte 0xe9 at offset {offset}"
    )


def test_long_labels_and_names_are_refused_at_their_line(tmp_path: Path) -> None:
    text = deployment_yaml().replace(
        "  owner: risk-team\n",
        f"  owner: {'o' * 5000}\n  labels:\n    team: {'t' * 100_000}\n",
    )
    code, output = validate(tmp_path, "long.yaml", text)
    assert_refused(code, output, f"{STAGING}/long.yaml:6: metadata.owner", "at most 100")
    assert f"{STAGING}/long.yaml:8: metadata.labels.team" in output
    assert "t" * 1000 not in output  # the error quotes the start of a long value, not all of it


def test_policy_and_waiver_files_have_the_same_limits(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "waivers.yaml").write_text("kind: PolicyWaivers\n" + alias_bomb())
    (policies / "rules.yaml").write_text("kind: PolicyRules\nrules: " + nested(100_000))
    (policies / "latin1.yaml").write_bytes(b"kind: PolicyRules\n# caf\xe9\n")
    with pytest.raises(PolicyInvalid) as raised:
        bounded_call(lambda: read_policy_files(policies))
    assert f"{policies.as_posix()}/latin1.yaml:2: not UTF-8: byte 0xe9 at offset 23" in str(
        raised.value
    )
    (policies / "latin1.yaml").unlink()
    with pytest.raises(PolicyInvalid) as raised:
        bounded_call(lambda: load_policies(read_policy_files(policies)))
    text = str(raised.value)
    assert "waivers.yaml:" in text
    assert "aliases are expanded" in text
    assert "rules.yaml:2: refused: nested deeper than 64 levels" in text


def test_plan_file_limits(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"pad": "x" * (40 * 1024 * 1024)}))
    done = run_bounded("apply", "--plan", str(huge))
    assert_refused(done.returncode, done.stdout + done.stderr, "huge.json:1", "more than the limit")
    latin = tmp_path / "latin1.json"
    latin.write_bytes(b'{"environment": "caf\xe9"}')
    done = run_bounded("apply", "--plan", str(latin))
    assert_refused(done.returncode, done.stdout + done.stderr, "latin1.json:1", "offset 20")
    deep = tmp_path / "deep.json"
    deep.write_text('{"desired": ' + "[" * 100_000 + "]" * 100_000 + "}")
    done = run_bounded("apply", "--plan", str(deep))
    assert_refused(done.returncode, done.stdout + done.stderr, "deep.json", "recursion limit")


def broken_staging_repo(tmp_path: Path) -> Path:
    """production is valid; staging holds one file of each kind an attacker could commit."""
    repo = tmp_path / "repo"
    make_repo(
        repo,
        {
            "deployments/production/fraud.yaml": deployment_yaml(environment="production"),
            f"{STAGING}/bomb.yaml": alias_bomb(),
            f"{STAGING}/deep.yaml": nested(100_000),
        },
    )
    (repo / STAGING / "latin1.yaml").write_bytes(b"metadata:\n  owner: caf\xe9\n")
    (repo / STAGING / "huge.yaml").write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-m", "broken staging")
    return repo


def one_pass(repo: Path, tmp_path: Path, environment: str) -> tuple[str, str, list[str]]:
    """One controller pass on `environment` against FakeServe: outcome, message, apps."""
    serve = FakeServe()
    no_rules = tmp_path / "platform-policies"  # this is no gate test: the operator's, empty
    no_rules.mkdir(exist_ok=True)
    with StateStore(tmp_path / "state.db") as store:
        controller = Controller(
            RepoSource(str(repo), branch="main"),
            serve,
            store,
            lambda: FixedRegistry({"fraud": {"1": "1"}}),
            ControllerSettings(environment, actor="tester", policies=PoliciesInDirectory(no_rules)),
        )
        result = controller.reconcile_once()
    return result.outcome, result.message, sorted(serve.apps)


def test_another_environments_broken_files_do_not_stop_a_controller(tmp_path: Path) -> None:
    repo = broken_staging_repo(tmp_path)
    outcome, message, apps = bounded_call(lambda: one_pass(repo, tmp_path, "production"))
    assert outcome == "applied", message
    assert apps == ["fraud", "fraud--v1"]
    # staging's own controller is told exactly what is wrong, file by file.
    with pytest.raises(ValidationFailed) as raised:
        bounded_call(lambda: load_manifests(read_snapshot(repo, "HEAD").files, "staging"))
    text = str(raised.value)
    assert f"{STAGING}/latin1.yaml:2: not UTF-8: byte 0xe9" in text
    assert f"{STAGING}/huge.yaml:1: file is 2,097,155 bytes" in text


def test_staging_controller_reports_broken_files_as_a_failed_pass(tmp_path: Path) -> None:
    repo = broken_staging_repo(tmp_path)
    (repo / STAGING / "latin1.yaml").unlink()
    (repo / STAGING / "huge.yaml").unlink()
    git(repo, "commit", "-am", "only YAML bombs left")
    outcome, message, apps = bounded_call(lambda: one_pass(repo, tmp_path, "staging"))
    assert (outcome, apps) == ("failed", [])
    assert f"{STAGING}/bomb.yaml:" in message
    assert f"{STAGING}/deep.yaml:1: refused: nested deeper than 64 levels" in message
    with StateStore(tmp_path / "state.db") as store:
        assert [p.result for p in store.history("staging")] == ["failed"]


def test_block_style_policy_test_anchors_stay_usable() -> None:
    """The alias budget keeps what real files do: policy tests reuse objects by anchor."""
    text = textwrap.dedent(
        """\
        kind: PolicyTest
        cases:
          - name: a
            object: &good {metadata: {name: fraud}}
          - name: b
            object: *good
        """
    )
    from controller.spec.yamldoc import load_yaml

    doc, problems = load_yaml("policies/tests/t.yaml", text)
    assert problems == []
    assert doc is not None
    assert doc.data["cases"][1]["object"] == {"metadata": {"name": "fraud"}}
