"""No credential reaches Serve's config, a plan, the state store, a log line, a notification or
an error message: canary secrets planted where operators keep them, a full controller run
against FakeServe (real Git over HTTP, real SQLite, real HTTP notifications), every output
scanned. tests/hostile/test_secrets_e2e.py does the same on a real Ray and MLflow server."""

from __future__ import annotations

import io
import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.gitops_options import guard_secrets, pass_hooks
from controller.gitops.notify import WebhookNotifier
from controller.gitops.reconciler import Controller, ControllerSettings, PassResult
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesInDirectory
from controller.redact import (
    MASK,
    forget_secrets,
    redact,
    redact_data,
    redact_logs,
    strip_userinfo,
)
from controller.registry.mlflow import FixedRegistry, MlflowRegistry, Registry
from controller.source.repository import RepoSource
from tests.hostile.canary import (
    HOOK_ENV_NAME,
    HOOK_SECRET,
    TRACKING_PASS,
    TRACKING_USER,
    WEBHOOK_SECRET,
    Sink,
    git_http,
    leaks,
    leaky_hook_command,
    publish,
    state_files,
)
from tests.support import FakeServe, commit, deployment_yaml, make_repo

FRAUD = "deployments/staging/fraud.yaml"
TRACKING_URI = f"http://{TRACKING_USER}:{TRACKING_PASS}@127.0.0.1:5999"
MODELS = {"fraud": {"1": "1", "2": "2", "3": "3"}}


def canary_spec(version: str) -> str:
    rollout = textwrap.dedent(
        f"""\
        rollout:
          strategy: canary
          steps: [{{weight: 50, pause: 1s}}]
          hooks:
            pre_rollout:
              - name: leaky
                command: {json.dumps(leaky_hook_command(sys.executable))}
        """
    )
    return deployment_yaml(model=f"models:/fraud/{version}", extra_spec=rollout)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The controller's environment as an operator sets it up."""
    monkeypatch.setenv("SERVEOPS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv(HOOK_ENV_NAME, HOOK_SECRET)
    monkeypatch.setenv("SERVEOPS_HOOK_ENV", HOOK_ENV_NAME)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", TRACKING_URI)
    yield
    forget_secrets()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Every log line of the run, through the filter the CLI installs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    redact_logs([handler])
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


class Registries:
    """The registry a pass sees: the real one at a URI with credentials, or (down) the same URI
    on a closed port, so its error message is what the user reads."""

    def __init__(self) -> None:
        self.down = False

    def __call__(self) -> Registry:
        if self.down:
            return MlflowRegistry(f"http://{TRACKING_USER}:{TRACKING_PASS}@127.0.0.1:9/")
        return FixedRegistry(MODELS, tracking_uri=TRACKING_URI)


def run_until(ctl: Controller, outcome: str, passes: int = 8) -> list[PassResult]:
    results = [ctl.reconcile_once()]
    while results[-1].outcome != outcome and len(results) < passes:
        results.append(ctl.reconcile_once())
    assert results[-1].outcome == outcome, [(r.outcome, r.message) for r in results]
    return results


def test_no_canary_secret_reaches_any_output(
    tmp_path: Path, secrets_env: None, log_text: io.StringIO
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {FRAUD: deployment_yaml()})
    state = tmp_path / "state" / "state.db"
    no_rules = tmp_path / "platform-policies"
    no_rules.mkdir()
    serve, registries = FakeServe(), Registries()
    results: list[PassResult] = []
    with git_http(repo, tmp_path) as url, Sink() as sink, StateStore(state) as store:
        guard_secrets(url, TRACKING_URI, webhooks=[sink.url])  # as `serveops controller`
        source = RepoSource(url, branch="main", cache_dir=tmp_path / "cache")
        ctl = Controller(
            source,
            serve,
            store,
            registries,
            ControllerSettings(
                "staging",
                actor="tester",
                apply_timeout_s=30,
                policies=PoliciesInDirectory(no_rules),  # no gate test: the operator's, empty
            ),
            notifier=WebhookNotifier([sink.url]),
            hooks=pass_hooks(source, state, frozenset({sys.executable})),
        )
        results += run_until(ctl, "applied")  # v1
        commit(repo, {FRAUD: canary_spec("2")}, "v2 with a leaky hook")
        publish(repo, tmp_path)
        results += run_until(ctl, "aborted")  # the hook prints its secrets and fails
        registries.down = True
        commit(repo, {FRAUD: deployment_yaml(model="models:/fraud/3")}, "v3")
        publish(repo, tmp_path)
        results += run_until(ctl, "failed")  # the registry is unreachable
        broken = RepoSource(url.replace("served.git", "gone.git"), branch="main")
        settings = ControllerSettings("staging", actor="tester")
        results.append(
            Controller(
                broken, serve, store, registries, settings, holder=ctl.holder
            ).reconcile_once()
        )  # Git is unreachable
        history = store.history("staging", limit=100)
    assert results[-1].outcome == "failed"
    assert "cannot clone" in results[-1].message

    outputs: dict[str, str | bytes] = {
        "logs": log_text.getvalue(),
        "notifications": "\n".join(sink.bodies),
        "serve config": json.dumps(serve.apps),
        "messages": "\n".join(r.message for r in results),
        "plans": "\n".join(r.plan.model_dump_json() for r in results if r.plan),
        "history": "\n".join(f"{h.repo} {h.message}" for h in history),
        **state_files(state),
    }
    assert leaks(outputs) == {}
    # ... and each path was taken: the secrets were there to leak.
    assert {e["event"] for e in sink.events()} >= {"deployed", "rollout_aborted", "sync_failed"}
    aborted = next(e for e in sink.events() if e["event"] == "rollout_aborted")
    assert f"hook sees {MASK} None None" in aborted["message"]
    assert f"MLflow registry at http://{MASK}@127.0.0.1:9/" in outputs["messages"]
    env_vars = serve.apps["fraud--v1"]["runtime_env"]["env_vars"]
    assert env_vars["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"


def test_replicas_get_credentials_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node variables named by the operator reach replicas as `${VAR}`, which Ray expands on
    the node: the config holds names, never values."""
    from controller.cluster.render import RenderSettings, render_environment
    from controller.spec.manifest import load_manifests

    monkeypatch.setenv(
        "SERVEOPS_REPLICA_CREDENTIAL_ENV",
        "MLFLOW_TRACKING_USERNAME=NODE_MLFLOW_USER,MLFLOW_TRACKING_PASSWORD=NODE_MLFLOW_PASS",
    )
    settings = RenderSettings(tracking_uri=TRACKING_URI)
    desired = render_environment(
        "staging", load_manifests({FRAUD: deployment_yaml()}), FixedRegistry(MODELS), settings
    )
    app = next(a for a in desired.apps if a["name"] == "fraud--v1")
    assert app["runtime_env"]["env_vars"] == {
        "MLFLOW_TRACKING_USERNAME": "${NODE_MLFLOW_USER}",
        "MLFLOW_TRACKING_PASSWORD": "${NODE_MLFLOW_PASS}",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://x-access-token:abc123@github.com/o/r", f"https://{MASK}@github.com/o/r"),
        ("GET /x?api_key=k1&user=bob&sig=zz", f"GET /x?api_key={MASK}&user=bob&sig={MASK}"),
        ('{"password": "p4ss", "n": 1}', f'{{"password": "{MASK}", "n": 1}}'),
        ('{"token": null}', '{"token": null}'),  # JSON stays JSON
        ("author: alice, tokenizer=bert", "author: alice, tokenizer=bert"),
        ("Authorization: Bearer abcdefghijkl", f"Authorization: Bearer {MASK}"),
        ("https://hooks.slack.com/services/T0/B0/XYZ", f"https://hooks.slack.com/services/{MASK}"),
        ("key id AKIAABCDEFGHIJKLMNOP", f"key id {MASK}"),
        (
            '{"MLFLOW_TRACKING_TOKEN": "${NODE_TOKEN}"}',
            '{"MLFLOW_TRACKING_TOKEN": "${NODE_TOKEN}"}',
        ),
    ],
)
def test_redaction_rules(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redacted_json_is_still_json() -> None:
    data = {"a": "https://u:p@h/x?token=t", "password": "pw", "nested": [{"api_key": "k"}]}
    assert json.loads(redact(json.dumps(data))) == {
        "a": f"https://{MASK}@h/x?token={MASK}",
        "password": MASK,
        "nested": [{"api_key": MASK}],
    }
    assert redact_data(data) == json.loads(redact(json.dumps(data)))
    assert strip_userinfo("https://u:p@host:5000/x?y=1") == "https://host:5000/x?y=1"
