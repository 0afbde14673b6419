"""Test helpers shared by unit and e2e tests: deployment files, Git repositories, and the
fakes unit tests run the controller against (FakeServe, FakeClock, a World of them)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from controller.cluster.live import LiveState
from controller.cluster.serving_code import ServingCode
from controller.errors import ServeopsError, Unreachable
from controller.gitops.notify import Event, Notifier
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesInDirectory
from controller.registry.mlflow import FixedRegistry, Registry
from controller.rollout.hooks import HookRunner
from controller.rollout.router_metrics import Counts, Snapshot
from controller.serving.protocol import LATENCY_BOUNDARIES_MS, MARKER_KEY, RouterConfig
from controller.source.repository import RepoSource


def deployment_yaml(
    name: str = "fraud",
    environment: str = "staging",
    route: str | None = None,
    model: str = "models:/fraud/1",
    extra_spec: str = "",
) -> str:
    """A valid deployment file; `extra_spec` is appended (indented) under spec:."""
    text = textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata:
          name: {name}
          environment: {environment}
          owner: risk-team
        spec:
          route: {route or "/" + name}
          model: {model}
          replicas: 1
          resources:
            num_cpus: 0.25
        """
    )
    if extra_spec:
        text += textwrap.indent(textwrap.dedent(extra_spec), "  ")
    return text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str], message: str = "initial") -> str:
    """A real Git repository with `files` committed; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return commit(path, files, message)


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    """Write (or, with None, delete) files and commit them; returns the new sha."""
    for rel, text in files.items():
        target = repo / rel
        if text is None:
            git(repo, "rm", "-q", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(repo, "add", rel)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


class FakeServe:
    """An in-memory Serve REST API behind the same interface as ServeClient (unit tests only).

    PUT replaces the config like Ray does. New or changed apps are DEPLOYING and apps left out
    are DELETING for `latency` reads (GETs) after the write, then RUNNING or gone; `latency=0`
    (the default) makes every write take effect at once. Apps named in `failing` end
    DEPLOY_FAILED; those in `unschedulable` stay DEPLOYING with Serve's slow-scheduling message.
    `down` makes every call raise Unreachable, as a dashboard that does not answer. A config
    giving two applications one route is refused, as Serve refuses it.
    """

    def __init__(self, address: str = "http://fake-ray:8265", latency: int = 0) -> None:
        self.address = address
        self.latency = latency
        self.apps: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self.failing: set[str] = set()
        self.unschedulable: set[str] = set()
        self.puts: list[list[dict[str, Any]]] = []
        self.down = False
        self.cpus: float | None = None  # the cluster's CPUs; None: unknown, as a dashboard
        self._settling: dict[str, int] = {}  # app -> reads left before its status settles
        self._deleting: dict[str, int] = {}  # app -> reads left while it shows DELETING

    def seed(self, *apps: dict[str, Any]) -> None:
        for app in apps:
            self.apps[app["name"]] = copy.deepcopy(app)
            self.status[app["name"]] = "RUNNING"

    def _check_up(self) -> None:
        if self.down:
            raise Unreachable(f"cannot reach the Ray dashboard at {self.address}: refused")

    def _tick(self) -> None:
        for name in list(self._settling):
            self._settling[name] -= 1
            if self._settling[name] <= 0:
                del self._settling[name]
                if self.status.get(name) == "DEPLOYING" and name not in self.unschedulable:
                    self.status[name] = "DEPLOY_FAILED" if name in self.failing else "RUNNING"
        for name, left in list(self._deleting.items()):
            if left <= 1:
                del self._deleting[name]
            else:
                self._deleting[name] = left - 1

    def get(self) -> LiveState:
        self._check_up()
        self._tick()
        payload: dict[str, Any] = {"applications": {}}
        for name, config in self.apps.items():
            status = self.status[name]
            message = ""
            if name in self.unschedulable:
                message = (
                    "Deployment 'ModelServer' has 1 replicas that have taken more than 2s to be "
                    'scheduled. Resources required for each replica: {"CPU": 1.9}, total '
                    'resources available: {"CPU": 1.5}. Use `ray status` for more details.'
                )
            payload["applications"][name] = {
                "status": status,
                "message": "failed to load model" if status == "DEPLOY_FAILED" else "",
                "deployed_app_config": copy.deepcopy(config),
                "deployments": {"ModelServer": {"status": "UPDATING", "message": message}},
            }
        for name in self._deleting:
            payload["applications"][name] = {
                "status": "DELETING",
                "message": "",
                "deployed_app_config": None,  # Serve drops a deleted app's config at once
                "deployments": {},
            }
        return LiveState.from_api(payload, self.cpus)

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        self._check_up()
        routes = [a["route_prefix"] for a in apps if a.get("route_prefix")]
        if len(routes) != len(set(routes)):  # Serve refuses such a config (HTTP 400)
            raise ServeopsError(f"Ray rejected PUT: two applications share a route: {routes}")
        self.puts.append(copy.deepcopy(apps))
        new = {a["name"]: copy.deepcopy(a) for a in apps}
        for name, config in new.items():
            if self.apps.get(name) == config:
                continue
            if name in self.unschedulable or self.latency:
                self.status[name] = "DEPLOYING"
                self._settling[name] = self.latency
            else:
                self.status[name] = "DEPLOY_FAILED" if name in self.failing else "RUNNING"
        if self.latency:
            for name in self.apps.keys() - new.keys():
                self._deleting[name] = self.latency
        self.apps = new
        self.status = {n: s for n, s in self.status.items() if n in new}


class FakeClock:
    """A settable clock: wall time for the state store and policies, monotonic time and a
    sleep that only moves them forward (no test waits for real)."""

    def __init__(self, start: dt.datetime = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)) -> None:
        self.current = start
        self.slept = 0.0

    def __call__(self) -> dt.datetime:
        return self.current

    def now(self) -> dt.datetime:
        return self.current

    def monotonic(self) -> float:
        return self.current.timestamp()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        self.slept += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=max(0.0, seconds))


class Notes:
    """A notifier that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


class FakeRouterMetrics:
    """Cumulative per-version router counters, as a scrape of Ray's metrics export sums them."""

    def __init__(self, deployment: str = "fraud") -> None:
        self.deployment = deployment
        self.counts: Snapshot = {}
        self.scrapes = 0

    def serve(
        self,
        version: str,
        requests: int,
        errors: int = 0,
        latency_ms: float = 5,
        queue_wait_s: float = 0.0,
        own_ms: float | None = None,
    ) -> None:
        """`requests` answered in `latency_ms`, of which `own_ms` their version's own time (slot
        to answer; None: not counted, as by a router older than that histogram)."""
        c = self.counts.setdefault(self.deployment, {}).setdefault(version, Counts())
        c.requests += requests
        c.errors += errors
        c.queue_wait_s += queue_wait_s
        for le in [*LATENCY_BOUNDARIES_MS, math.inf]:
            c.buckets[le] = c.buckets.get(le, 0) + (requests if le >= latency_ms else 0)
            if own_ms is not None:
                c.service_buckets[le] = c.service_buckets.get(le, 0) + (
                    requests if le >= own_ms else 0
                )

    def scrape(self) -> Snapshot:
        self.scrapes += 1
        return {
            d: {
                v: dataclasses.replace(
                    c, buckets=dict(c.buckets), service_buckets=dict(c.service_buckets)
                )
                for v, c in vs.items()
            }
            for d, vs in self.counts.items()
        }


class World:
    """One deployment in one environment of a real Git repository, a FakeServe cluster, a
    SQLite state file and a fake clock; controllers made on demand (each a new "process":
    its own store connection on the same file)."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        env: str = "staging",
        name: str = "fraud",
        rollout: str = "",
        version: str = "1",
        models: dict[str, dict[str, str]] | None = None,
        latency: int = 0,
    ) -> None:
        self.env, self.name, self.rollout = env, name, rollout
        self.path = f"deployments/{env}/{name}.yaml"
        self.repo = tmp_path / "repo"
        self.head = make_repo(self.repo, {self.path: self.spec(version)})
        self.serve = FakeServe(latency=latency)
        self.state = tmp_path / "state" / "state.db"
        self.clock = FakeClock()
        self.models = models or {name: {"1": "1", "2": "2", "3": "3", "@champion": "1"}}
        self.notes = Notes()
        self.notifier: Notifier = self.notes  # where controllers send notifications
        self.metrics = FakeRouterMetrics(name)
        self.stores: list[StateStore] = []
        self._ctl: Controller | None = None
        # The platform team's policies, outside the repository the controller judges.
        self.platform = tmp_path / "platform-policies"
        self.platform.mkdir(parents=True, exist_ok=True)

    def spec(self, version: str, extra: str = "") -> str:
        return deployment_yaml(
            name=self.name,
            environment=self.env,
            model=f"models:/{self.name}/{version}",
            extra_spec=self.rollout + extra,
        )

    def registry(self) -> Registry:
        return FixedRegistry(self.models)

    def store(self) -> StateStore:
        store = StateStore(self.state, clock=self.clock)
        self.stores.append(store)
        return store

    def controller(
        self,
        *,
        holder: str = "ctl",
        hooks: HookRunner | None = None,
        serving_code: ServingCode | None = None,
        **settings: Any,
    ) -> Controller:
        options: dict[str, Any] = {
            "interval_s": 10,
            "actor": "tester",
            "apply_timeout_s": 120,
            "policies": PoliciesInDirectory(self.platform),
        }
        options.update(settings)
        if serving_code is not None:
            options["serving_code"] = serving_code
        return Controller(
            RepoSource(str(self.repo), branch="main"),
            self.serve,
            self.store(),
            self.registry,
            ControllerSettings(self.env, **options),
            notifier=self.notifier,
            holder=holder,
            hooks=hooks,
            metrics=self.metrics,
        )

    @property
    def ctl(self) -> Controller:
        """The default controller, made on first use."""
        if self._ctl is None:
            self._ctl = self.controller()
        return self._ctl

    @ctl.setter
    def ctl(self, controller: Controller) -> None:
        self._ctl = controller

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        self.head = commit(self.repo, files, message)
        return self.head

    def push(self, version: str, extra: str = "") -> str:
        return self.commit({self.path: self.spec(version, extra)}, f"v{version}")

    def pass_(
        self, seconds: float = 0, *, ctl: Controller | None = None, retry: bool = False
    ) -> PassResult:
        """Let `seconds` go by, then run one pass."""
        self.clock.advance(seconds)
        return (ctl or self.ctl).reconcile_once(retry=retry)

    def sync(self, *, ctl: Controller | None = None, retry: bool = False) -> PassResult:
        """Passes until no apply is under way (as `serveops sync` runs them), the fake clock
        moving by each pass's requeue_after. Returns the last pass."""
        result = self.pass_(ctl=ctl, retry=retry)
        for _ in range(50):
            if not result.applying:
                return result
            result = self.pass_(result.requeue_after, ctl=ctl)
        raise AssertionError(f"the apply did not settle in 50 passes: {result.message}")

    def router(self) -> RouterConfig:
        return RouterConfig.model_validate(
            self.serve.apps[self.name]["deployments"][0]["user_config"]
        )

    def weights(self) -> dict[str, float]:
        return {t.version: t.weight for t in self.router().targets}

    def traffic(self, seconds: float = 30, errors_v2: int = 0) -> None:
        """Steady client traffic split by the router's weights (4 requests a second), counted
        by the fake router metrics, while `seconds` go by."""
        for version, weight in self.weights().items():
            n = int(4 * seconds * weight / 100)
            self.metrics.serve(version, n, errors_v2 if version == "2" else 0)
        for t in self.router().shadow:
            self.metrics.serve(t.version, int(4 * seconds * t.weight / 100), errors_v2)
        self.clock.advance(seconds)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def unmanaged_app(name: str = "handmade", route: str = "/handmade") -> dict[str, Any]:
    return {
        "name": name,
        "route_prefix": route,
        "import_path": "somebody.else:app",
        "args": {},
        "deployments": [{"name": "Thing", "num_replicas": 1}],
    }


def is_managed(app: dict[str, Any]) -> bool:
    return MARKER_KEY in (app.get("args") or {})
