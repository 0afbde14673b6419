"""Notifications, delivered over real HTTP to local receivers (http.server in a thread): every
kind, to a generic JSON webhook and to a Slack-format one. The controller runs on FakeServe."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.gitops.notify import EVENT_KINDS, Event, WebhookNotifier
from controller.gitops.reconciler import Controller, ControllerSettings
from controller.gitops.state import StateStore
from controller.registry.mlflow import FixedRegistry
from controller.source.repository import RepoSource
from tests.support import FakeServe, World, commit, deployment_yaml, make_repo
from tests.unit.test_rollout_controller import CANARY

AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Receiver:
    """An HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.bodies.append(json.loads(self.rfile.read(length)))
                received.paths.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/secret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    generic, slack = Receiver(), Receiver()
    yield generic, slack
    generic.close()
    slack.close()


@pytest.fixture
def notifier(receivers: tuple[Receiver, Receiver]) -> Iterator[WebhookNotifier]:
    generic, slack = receivers
    n = WebhookNotifier([generic.url], [slack.url])
    yield n
    n.close()


def kinds(generic: Receiver) -> list[str]:
    return [b["event"] for b in generic.bodies]


def test_every_kind_reaches_both_webhooks_in_their_format(
    receivers: tuple[Receiver, Receiver], notifier: WebhookNotifier
) -> None:
    generic, slack = receivers
    assert set(EVENT_KINDS) == {
        "deployed",
        "degraded",
        "sync_failed",
        "rollout_aborted",
        "drift_detected",
        "model_drift",
        "model_drift_resolved",
        "model_quality_low",
        "model_quality_recovered",
        "retrain_failed",
        "batch_failed",
        "model_proposed",
    }
    for kind in EVENT_KINDS:
        notifier.notify(Event(kind, "staging", "a" * 40, f"what {kind} says", AT, "repo"))

    assert kinds(generic) == list(EVENT_KINDS)
    assert generic.bodies[3] == {
        "source": "serveops",
        "event": "rollout_aborted",
        "environment": "staging",
        "commit": "a" * 40,
        "repo": "repo",
        "message": "what rollout_aborted says",
        "at": AT.isoformat(),
    }
    assert len(slack.bodies) == len(EVENT_KINDS)
    for kind, body in zip(EVENT_KINDS, slack.bodies, strict=True):
        assert set(body) == {"text"}  # a Slack incoming-webhook message
        head, text = body["text"].split("\n")
        assert f"*{kind.replace('_', ' ')}* in `staging` at `aaaaaaaaaaaa`" in head
        assert text == f"what {kind} says"


def test_a_receiver_that_fails_or_is_gone_never_raises(
    receivers: tuple[Receiver, Receiver],
) -> None:
    failing = Receiver(status=500)
    gone = Receiver()
    gone.close()
    n = WebhookNotifier([failing.url, gone.url], [receivers[1].url], timeout_s=2)
    n.notify(Event("degraded", "staging", None, "fraud is Degraded", AT))
    n.close()
    failing.close()
    assert len(failing.bodies) == 1
    assert len(receivers[1].bodies) == 1


def notified_world(tmp_path: Path, notifier: WebhookNotifier) -> World:
    """The rollout test world (FakeServe, real Git and SQLite), notifying over HTTP; v1 applied."""
    w = World(tmp_path, rollout=CANARY)
    w.notifier = notifier
    assert w.sync().outcome == "applied"
    return w


def test_the_controller_sends_every_kind_when_it_happens(
    tmp_path: Path, receivers: tuple[Receiver, Receiver], notifier: WebhookNotifier
) -> None:
    generic, slack = receivers
    w = notified_world(tmp_path, notifier)  # v1 applied: deployed
    assert kinds(generic) == ["deployed"]

    w.push("2")
    w.pass_()  # the canary starts: v2 next to v1, no traffic
    w.pass_()  # 25% to v2
    seen = len(generic.bodies)
    w.traffic(30, errors_v2=10)
    assert w.pass_().outcome == "aborted"
    assert kinds(generic)[seen:] == ["rollout_aborted", "degraded"]
    aborted, degraded = generic.bodies[seen:]
    assert aborted["message"].startswith("rollout of fraud to v2 aborted: analysis failed")
    assert degraded["message"].startswith("fraud is Degraded: rollout of fraud to v2 aborted")
    assert aborted["commit"] == w.ctl.store.rollouts("staging")["fraud"].state.commit

    w.pass_(60)
    w.pass_(60)
    assert kinds(generic)[seen:] == ["rollout_aborted", "degraded"]  # each sent once

    router = w.serve.apps["fraud"]["deployments"][0]
    router["num_replicas"] = 3  # changed by hand
    assert w.pass_().outcome == "drift"
    assert kinds(generic)[-1] == "drift_detected"

    commit(w.repo, {"deployments/staging/fraud.yaml": "spec: [broken"}, "broken")
    assert w.pass_().outcome == "failed"
    assert kinds(generic)[-1] == "sync_failed"
    assert "deployments/staging/fraud.yaml" in generic.bodies[-1]["message"]

    assert [b["text"].split("*")[1] for b in slack.bodies] == [
        k.replace("_", " ") for k in kinds(generic)
    ]
    w.close()


def test_degraded_is_sent_when_a_deployment_enters_the_state_once(
    tmp_path: Path, receivers: tuple[Receiver, Receiver], notifier: WebhookNotifier
) -> None:
    generic, _ = receivers
    repo = tmp_path / "repo"
    first = make_repo(repo, {"deployments/staging/fraud.yaml": deployment_yaml()})
    serve = FakeServe()
    with StateStore(tmp_path / "state.db") as store:
        ctl = Controller(
            RepoSource(str(repo), branch="main"),
            serve,
            store,
            lambda: FixedRegistry({"fraud": {"1": "1"}}),
            ControllerSettings("staging", actor="tester", bootstrap_policies=first),
            notifier=notifier,
            metrics=None,
        )
        assert ctl.reconcile_once().outcome == "applied"
        serve.status["fraud--v1"] = "UNHEALTHY"  # a replica died after the apply
        ctl.reconcile_once()
        ctl.reconcile_once()
        assert kinds(generic) == ["deployed", "degraded"]
        assert generic.bodies[-1]["message"] == "fraud is Degraded: fraud--v1: UNHEALTHY"
        serve.status["fraud--v1"] = "RUNNING"  # recovered
        ctl.reconcile_once()
        assert store.degraded("staging") == {}
        serve.status["fraud--v1"] = "UNHEALTHY"  # and down again: a new notification
        ctl.reconcile_once()
        assert kinds(generic) == ["deployed", "degraded", "degraded"]
