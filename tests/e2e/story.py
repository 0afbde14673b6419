"""Rollouts under a steady open request loop, shared by tests/e2e/test_zero_downtime.py and
bench/zero_downtime.py: one deployment, the real controller, real Serve, real MLflow.

A `Story` commits a change to the deployment file, runs controller passes until the rollout
reaches a phase, and meanwhile checks that the replicas it was told to watch (the stable
version's, the router's) keep their processes: same Ray actor, same PID, at every pass.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from controller.cli.views import load_view
from controller.dev.demo import MODEL_NAME
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.state import StateStore, StoredRollout
from tests.support import commit

Processes = dict[str, set[tuple[str, int]]]  # application -> {(actor id, pid)} of its replicas
ENDED = ("completed", "aborted")  # a rollout in these phases moves no more

SLOW_MODEL = '''\
import time

import mlflow.pyfunc
from mlflow.models import set_model


class Slow(mlflow.pyfunc.PythonModel):
    """A candidate that answers correctly-shaped predictions, 1.2 s late: it must fail analysis."""

    def predict(self, context, model_input, params=None):
        time.sleep(1.2)
        return [0] * len(model_input)


set_model(Slow())
'''


def register_slow(tracking_uri: str, root: Path) -> str:
    """A version of the demo model that answers 1.2 s late (models-from-code, no pickling)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    mlflow.set_tracking_uri(tracking_uri)
    code = root / "slow_model.py"
    code.write_text(SLOW_MODEL)
    data = load_breast_cancer(as_frame=True).data
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            registered_model_name=MODEL_NAME,
            signature=infer_signature(data, [0] * len(data)),
        )
    return str(info.registered_model_version)


def processes(address: str, deployment: str) -> Processes:
    """(actor id, pid) of every RUNNING replica of this deployment's applications, from the
    dashboard's Serve API (what `serve status` reads)."""
    payload = httpx.get(f"{address}/api/serve/applications/", timeout=30).json()
    out: Processes = {}
    for app_name, app in (payload.get("applications") or {}).items():
        if app_name != deployment and not app_name.startswith(f"{deployment}--"):
            continue
        for dep in (app.get("deployments") or {}).values():
            for r in dep.get("replicas") or []:
                if r.get("state") == "RUNNING":
                    out.setdefault(app_name, set()).add((r["actor_id"], r["pid"]))
    return out


@dataclass
class Scenario:
    name: str
    started_at: float  # wall clock: the commit (or command) that started it
    ended_at: float
    events: list[str]
    messages: list[str]  # what each controller pass said
    # (wall clock, what the rollout waited for) after each pass
    waits: list[tuple[float, str]] = field(default_factory=list)
    promoted: bool = False  # its held start promoted by the story's operator

    def waited(self, words: str) -> float:
        """Seconds from the first to the last pass whose rollout waited for `words`."""
        times = [t for t, waiting in self.waits if words in waiting]
        return times[-1] - times[0] if times else 0.0

    @property
    def passes(self) -> int:
        return len(self.messages)


@dataclass
class Story:
    ctl: Controller
    store: StateStore
    repo: Path
    spec_path: str  # the deployment file, relative to the repo
    deployment: str
    address: str  # the Ray dashboard
    environment: str = "staging"
    settle_s: float = 3.0  # after the phase is reached: removals must not fail a request either
    watched: Processes = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)  # watched replicas that changed
    scenarios: list[Scenario] = field(default_factory=list)
    view_checks: int = 0  # passes whose views were checked against each other
    drive_timeout_s: float = 300.0  # a scenario's rollout must reach its phase within this
    waits: list[tuple[float, str]] = field(default_factory=list)  # the running scenario's
    # An operator's `serveops promote` for a start held this long for room (None: never), as
    # one who needs the change out in a busy hour would (bench/zero_downtime.py at 1.0).
    promote_held_after_s: float | None = None
    promoted: list[str] = field(default_factory=list)  # scenarios whose held start was promoted

    def processes(self) -> Processes:
        return processes(self.address, self.deployment)

    def watch(self, *apps: str) -> None:
        """From now on, these applications' replicas must keep their processes while they run."""
        now = self.processes()
        self.watched = {app: now[app] for app in apps}

    def check(self) -> None:
        now = self.processes()
        for app, procs in self.watched.items():
            if app in now and now[app] != procs:
                self.restarts.append(f"{app}: {sorted(procs)} -> {sorted(now[app])}")

    def rollout(self) -> StoredRollout | None:
        return self.store.rollouts(self.environment).get(self.deployment)

    def phase(self) -> str | None:
        stored = self.rollout()
        return stored.state.phase if stored else None

    def check_views(self, result: PassResult) -> None:
        """Every view says the same as the pass (issue 17): the view `status` and `rollouts`
        print, built from the state file and Serve, against the pass's own result and the
        router's live weights."""
        state = self.store.path
        view, problem = load_view(self.environment, state=state, address=self.address)
        assert problem is None, problem
        d = view.deployment(self.deployment)
        assert d is not None
        live = {v.version: v.weight for v in d.versions if v.role != "fallback"}
        if d.rollout is not None:
            assert live.get(d.rollout.candidate[1:], 0.0) == d.rollout.weight, (live, d.rollout)
            if result.outcome == "progressing" and "rollouts:" not in result.message:
                assert d.summary.split("; waiting")[0] in result.message, (d.summary, result)
            self.view_checks += 1

    def drive(self, until: str, since: dt.datetime, timeout_s: float = 300.0) -> list[str]:
        """Controller passes until the rollout reaches phase `until`; returns what each pass
        said. Fails at once when a rollout started after `since` ends in another phase."""
        deadline = time.monotonic() + timeout_s
        messages: list[str] = []
        self.waits = []
        while time.monotonic() < deadline:
            result = self.ctl.reconcile_once()
            messages.append(result.message)
            if result.outcome not in ("applied", "progressing", "in_sync", "aborted"):
                raise AssertionError(f"pass {result.outcome}: {result.message}")
            self.check()
            self.check_views(result)
            stored = self.rollout()
            self.waits.append((time.time(), stored.state.waiting if stored else ""))
            if stored and stored.state.held_for_room and self._promote_held(since):
                self.store.add_rollout_command(
                    self.environment, self.deployment, "promote", "bench operator"
                )
            phase = stored.state.phase if stored else None
            if phase == until:
                return messages
            if stored and phase in ENDED and stored.state.started_at >= since:
                # This story's rollout is over and will not move again: say how, now.
                events = self.store.rollout_events(self.environment, self.deployment)[:3]
                raise AssertionError(f"rollout ended {phase!r}, not {until!r}: {events}")
            time.sleep(min(result.requeue_after, 1.0))
        events = self.store.rollout_events(self.environment, self.deployment)
        raise AssertionError(f"rollout did not reach {until!r} in {timeout_s:.0f}s: {events}")

    def _promote_held(self, since: dt.datetime) -> bool:
        """Whether an operator promotes the held start now: held `promote_held_after_s` since
        the scenario began, and not promoted yet in it."""
        after, key = self.promote_held_after_s, since.isoformat()
        if after is None or key in self.promoted:
            return False
        if (dt.datetime.now(dt.UTC) - since).total_seconds() < after:
            return False
        self.promoted.append(key)
        return True

    def run(
        self,
        name: str,
        until: str,
        files: dict[str, str | None] | None = None,
        command: list[str] | None = None,
    ) -> Scenario:
        """Commit `files` (or run a serveops `command`), then drive the rollout to `until`."""
        started = time.time()
        since = dt.datetime.now(dt.UTC)
        if files is not None:
            commit(self.repo, files, name)
        if command is not None:
            serveops = str(Path(sys.executable).with_name("serveops"))
            done = subprocess.run([serveops, *command], capture_output=True, text=True)
            if done.returncode != 0:
                raise AssertionError(f"serveops {' '.join(command)}: {done.stderr}")
        messages = self.drive(until, since, self.drive_timeout_s)
        time.sleep(self.settle_s)
        self.check()
        events = [
            f"{e.at:%H:%M:%S} {e.action} {e.weight:g}%"
            for e in reversed(self.store.rollout_events(self.environment, self.deployment))
            if e.at >= since
        ]
        promoted = since.isoformat() in self.promoted
        scenario = Scenario(name, started, time.time(), events, messages, self.waits, promoted)
        self.scenarios.append(scenario)
        return scenario
