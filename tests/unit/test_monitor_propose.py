"""`serveops propose` and `serveops monitor`: a new MLflow version becomes a commit on a branch
with the drift evidence, never a change of the checked-out branch, the work tree or Serve (a
real Git repository and a real MLflow SQLite store)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.gitops.state import StateStore
from controller.monitor.drift_report import DriftReport, FeatureDrift
from tests.support import deployment_yaml, git, make_repo

PATH = "deployments/staging/fraud.yaml"
WINDOW = dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `fraud`: versions 1, 2 (tagged validated=yes, alias challenger), 3, 4 (deleted);
    their training runs logged auc 0.80, 0.93, 0.88, 0.99."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("training", artifact_location=str(root / "artifacts"))
    runs = []
    for auc in (0.80, 0.93, 0.88, 0.99):
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "auc", auc)
        runs.append(run)
    client.create_registered_model("fraud")
    client.create_model_version("fraud", "file:///m/1", run_id=runs[0])
    client.create_model_version("fraud", "file:///m/2", run_id=runs[1], tags={"validated": "yes"})
    client.create_model_version("fraud", "file:///m/3", run_id=runs[2])
    client.create_model_version("fraud", "file:///m/4", run_id=runs[3])
    client.set_registered_model_alias("fraud", "challenger", "2")
    client.delete_model_version("fraud", "4")
    return uri


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    text = deployment_yaml().replace("model: models:/fraud/1", "model: models:/fraud/1  # pinned")
    make_repo(path, {PATH: text})
    return path


def drift_state(tmp_path: Path) -> Path:
    state = tmp_path / "state.db"
    nan = float("nan")
    with StateStore(state) as store:
        store.record_drift(
            DriftReport(
                "staging",
                "fraud",
                "1",
                "c" * 40,
                WINDOW,
                WINDOW + dt.timedelta(hours=1),
                "drift",
                "3 of 5 features drifted",
                1000,
                (
                    FeatureDrift("amount", 1000, 0.31, 0.2, 1e-12, True, 0.0, 0.5),
                    FeatureDrift("age", 0, nan, nan, nan, False, 40.0, nan),  # never sent
                ),
            )
        )
    return state


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_newest_version_is_proposed_on_a_branch_with_the_drift_evidence(
    registry: str, repo: Path, tmp_path: Path
) -> None:
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    code, output = invoke(
        "propose",
        "fraud",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--registry-uri",
        registry,
        "--state",
        str(drift_state(tmp_path)),
        "-o",
        "json",
    )
    assert code == 0, output
    body = json.loads(output)
    assert body["branch"] == "serveops/propose/staging/fraud-v3"  # 4 is deleted
    assert body["to"] == "models:/fraud/3"
    branch = body["branch"]
    assert git(repo, "rev-parse", branch) == body["commit"]
    assert git(repo, "rev-parse", f"{branch}~1") == head  # one commit on top of the base
    assert git(repo, "rev-parse", "HEAD") == head  # the checked-out branch did not move
    assert git(repo, "status", "--porcelain") == status  # nor did the work tree or index
    assert git(repo, "diff", "--name-only", head, branch) == PATH
    proposed = git(repo, "show", f"{branch}:{PATH}")
    assert "  model: models:/fraud/3  # pinned" in proposed.splitlines()
    message = git(repo, "log", "-1", "--format=%B", branch)
    assert message.startswith("staging/fraud: propose model v3 (serving v1)")
    assert (
        "staging/fraud v1: drift (1000 rows, 2026-03-01 11:00-12:00 UTC): amount PSI 0.310"
        in message
    )
    assert "Serveops-Proposed-Model: models:/fraud/3" in message
    assert "Serveops-Drift-Window: 2026-03-01T11:00:00+00:00/2026-03-01T12:00:00+00:00" in message
    assert git(repo, "log", "-1", "--format=%an <%ae>", branch) == "serveops <serveops@localhost>"

    again = invoke(
        "propose",
        "fraud",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--registry-uri",
        registry,
        "--state",
        str(tmp_path / "state.db"),
        "-o",
        "json",
    )
    assert again[0] == 0, again[1]
    assert json.loads(again[1])["commit"] == body["commit"]  # proposed once, found again


@pytest.mark.parametrize(
    ("rule", "version"), [(("--alias", "challenger"), "2"), (("--tag", "validated=yes"), "2")]
)
def test_alias_and_tag_rules_select_their_version(
    registry: str, repo: Path, rule: tuple[str, str], version: str
) -> None:
    code, output = invoke(
        "propose",
        "fraud",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--registry-uri",
        registry,
        *rule,
        "--dry-run",
        "-o",
        "json",
    )
    assert code == 0, output
    body = json.loads(output)
    assert body["to"] == f"models:/fraud/{version}"
    assert body["commit"] is None
    assert "No drift evidence was given" in body["message"]
    assert git(repo, "branch", "--list", "serveops/*") == ""  # a dry run writes nothing


@pytest.mark.parametrize(
    ("expression", "version", "value"),
    [("auc>=0.9", "2", "0.93"), ("auc > 0.85", "3", "0.88"), ("auc<0.85", "1", "0.8")],
)
def test_metric_rule_selects_the_newest_version_whose_run_meets_it(
    registry: str, tmp_path: Path, expression: str, version: str, value: str
) -> None:
    repo = tmp_path / "repo0"  # serving v0: every version is newer
    make_repo(repo, {PATH: deployment_yaml(model="models:/fraud/0")})
    code, output = invoke(
        "propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry,
        "--metric", expression, "--dry-run", "-o", "json",
    )  # fmt: skip
    assert code == 0, output
    body = json.loads(output)
    assert body["to"] == f"models:/fraud/{version}"  # v4 (auc 0.99) is deleted: never chosen
    assert f"(auc = {value})" in body["message"]  # the value found, in the commit message


def test_metric_rule_that_nothing_meets_or_that_is_malformed_is_refused(
    registry: str, repo: Path
) -> None:
    base = ("propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry)
    code, output = invoke(*base, "--metric", "auc>=0.95")
    assert code == 2
    assert "no registered version is the newest READY version whose run logged auc >= 0.95" in (
        " ".join(output.split())
    )
    code, output = invoke(*base, "--metric", "loss<0.1")  # no run logged `loss`
    assert code == 2
    assert "loss < 0.1" in output
    for bad in ("auc=0.9", "auc>=high", "auc>=nan", ">=0.9", "auc >= 0.9 or 1"):
        code, output = invoke(*base, "--metric", bad)
        assert code == 2, bad
        assert "metric rule" in output, bad
    code, output = invoke(*base, "--metric", "auc>=0.9", "--alias", "x")
    assert code == 2
    assert "at most one of" in output
    assert git(repo, "branch", "--list", "serveops/*") == ""


def test_nothing_newer_proposes_nothing(registry: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo3"
    make_repo(repo, {PATH: deployment_yaml(model="models:/fraud/3")})
    code, output = invoke(
        "propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry
    )
    assert code == 0
    assert "nothing to propose" in output
    assert git(repo, "branch", "--list", "serveops/*") == ""


def test_bad_requests_are_refused_with_a_reason(registry: str, repo: Path, tmp_path: Path) -> None:
    base = ("propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry)
    code, output = invoke(*base, "--version", "9")
    assert code == 2
    assert "no registered version is version 9" in output
    code, output = invoke(*base, "--alias", "x", "--tag", "a=b")
    assert code == 2
    assert "at most one of" in output
    code, output = invoke(
        "propose", "nope", "--env", "staging", "--repo", str(repo), "--registry-uri", registry
    )
    assert code == 2
    assert "no deployment named 'nope'" in output
    aliased = tmp_path / "aliased"
    make_repo(aliased, {PATH: deployment_yaml(model="models:/fraud@champion")})
    code, output = invoke(
        "propose", "fraud", "--env", "staging", "--repo", str(aliased), "--registry-uri", registry
    )
    assert code == 2
    assert "follows the alias @champion" in output


def test_an_existing_branch_with_other_content_is_not_overwritten(
    registry: str, repo: Path
) -> None:
    git(repo, "branch", "serveops/propose/staging/fraud-v3")
    code, output = invoke(
        "propose", "fraud", "--env", "staging", "--repo", str(repo), "--registry-uri", registry
    )
    assert code == 2
    assert "exists with other content" in output


def test_monitor_prints_the_latest_report_and_exits_1_on_drift(tmp_path: Path) -> None:
    state = drift_state(tmp_path)
    code, output = invoke("monitor", "--env", "staging", "--state", str(state))
    assert code == 1
    assert output.startswith("fraud  v1  drift")
    assert "amount PSI 0.310 KS p 1e-12 *" in output
    code, output = invoke("monitor", "--env", "staging", "--state", str(state), "-o", "json")
    assert code == 1
    body = json.loads(output)
    assert body["drifted"] == ["fraud"]
    assert body["deployments"]["fraud"][0]["features"][0]["name"] == "amount"
    assert body["deployments"]["fraud"][0]["features"][1]["psi"] is None  # strict JSON
    code, output = invoke("monitor", "--env", "production", "--state", str(state))
    assert code == 0
    assert "no monitoring report" in output


def test_monitor_check_judges_the_last_window_by_hand(tmp_path: Path) -> None:
    import time

    from tests.monitor_support import sample, write_recording, write_reference

    recordings, refs = tmp_path / "rec", tmp_path / "refs"
    write_reference(refs / "fraud.csv", sample(5000, seed=0))
    repo = tmp_path / "checked"
    extra = (
        f"recording: {{sample_rate: 1, dir: {recordings}}}\n"
        "monitoring:\n  reference: {kind: dataset, path: fraud.csv}\n  window: 1h\n"
    )
    make_repo(repo, {PATH: deployment_yaml(extra_spec=extra)})
    now = time.time()
    write_recording(recordings, "fraud", sample(1000, 1, 0.5, 3), now - 3000, now - 60, name="a")
    args = ("monitor", "--check", "--env", "staging", "--repo", str(repo))
    code, output = invoke(*args, "--monitor-reference-dir", str(refs))
    assert code == 1, output
    assert output.startswith("fraud  v1  drift")
    code, output = invoke(*args, "--monitor-reference-dir", str(refs), "--window", "30s")
    assert code == 0, output  # nothing recorded in the last 30 seconds
    assert "insufficient" in output
    code, output = invoke(*args)  # by hand, a reference that cannot be read is bad input
    assert code == 2, output
    assert "no reference directory (--monitor-reference-dir)" in output


def test_propose_pushes_its_branch_when_asked(registry: str, repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    code, output = invoke(
        "propose",
        "fraud",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--registry-uri",
        registry,
        "--push",
        "origin",
        "-o",
        "json",
    )
    assert code == 0, output
    body = json.loads(output)
    assert git(remote, "rev-parse", body["branch"]) == body["commit"]
    assert git(remote, "branch", "--list", "main") == ""  # only the proposal's branch


def test_a_failed_push_says_the_commit_is_there(registry: str, repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://user:s3cret@127.0.0.1:9/nowhere.git")
    code, output = invoke(
        "propose",
        "fraud",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--registry-uri",
        registry,
        "--push",
        "origin",
    )
    assert code == 1
    assert "is committed" in output
    assert "pushing it to 'origin' failed" in output
    assert "s3cret" not in output
    assert (
        git(repo, "branch", "--list", "serveops/*").strip() == "serveops/propose/staging/fraud-v3"
    )


def test_alert_target_options_are_name_equals_url() -> None:
    from controller.cli.gitops_options import alert_targets, target_urls
    from controller.errors import BadInput

    given = ["oncall=https://hooks.example/T/secret", "pager=http://127.0.0.1:9/x"]
    assert alert_targets(given) == (
        ("oncall", "https://hooks.example/T/secret"),
        ("pager", "http://127.0.0.1:9/x"),
    )
    assert target_urls(given) == ["https://hooks.example/T/secret", "http://127.0.0.1:9/x"]
    for bad in ("oncall", "=https://x", "oncall=file:///etc/passwd", "default=https://x"):
        with pytest.raises(BadInput, match="--alert-target"):
            alert_targets([bad])
