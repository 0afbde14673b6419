"""`make demo`: the whole story on this machine, step by step (issue 16).

1. v1 through `serveops controller` (a process of its own, following a local Git repository,
   trusting a platform policies directory), under a small load whose requests the router records.
2. A pull request breaking a production rule: `serveops check` refuses it.
3. A pull request for v2: `serveops simulate` replays the recording against v1 and v2 (v2 fails
   agreement) and writes its HTML report.
4. A v3 that agrees with v1, registered and merged: the controller's canary with analysis under
   the load, shown step by step (`serveops rollouts`), no request failed.
5. `serveops rollback`: a revert commit; the controller moves Serve back to v1.
6. Monitoring: inputs drift, `serveops monitor --check` flags it, `serveops propose` writes a
   newer version as a branch with the drift evidence. Batch inference: a batch
   deployment following an alias is merged; the controller runs it on Ray Data, and again when
   the alias moves to v3 (after its sample check against v1).
7. Stop everything the tour started; the repository, store and reports stay.

Every step prints its duration. A failing step stops the tour, naming the step, after
everything started is stopped. `serveops demo --quick` runs the short tour (controller/dev/demo).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from controller.cli.views import load_view
from controller.dev import tour_repo as files
from controller.dev import tour_step6
from controller.dev import tour_support as support
from controller.dev import tour_watch as watch
from controller.dev.demo import MODEL_NAME, register_model, sample_request, train_and_register
from controller.dev.load import Load
from controller.dev.localray import LocalRay, free_port
from controller.dev.tour_support import Background, StepFailed, serveops_bin
from controller.gitops.view import DeploymentView

ENV = "staging"
# `serveops check` evaluates the policies as of this time: production's year-end freeze
# (policies/production.yaml) would otherwise refuse the pull request of step 2 for the wrong
# reason in late December, and the waiver in policies/waivers.yaml expires. The controller
# judges staging only, where no rule reads the clock.
DEMO_NOW = "2026-06-15T12:00:00Z"
LOAD_RATE = 20.0  # requests per second through the route, for the whole tour
RECORDED = 400  # requests the router must have recorded before step 3 replays them


class StepSkipped(Exception):
    """A step the tour cannot run here; its note says why."""


@dataclass
class Timing:
    number: int
    title: str
    seconds: float = 0.0
    outcome: str = "ok"  # ok, skipped, failed


def _say(text: str) -> None:
    print(f"\n\033[1;36m==> {text}\033[0m", flush=True)


def _note(text: str) -> None:
    print(f"  {text}", flush=True)


@dataclass
class Tour:
    """The tour in `workdir` (made afresh). With `address`, on that Ray cluster (its Serve on
    `http_port`): the tour then removes its applications at the end instead of stopping Ray."""

    workdir: Path
    num_cpus: int = 2
    address: str | None = None
    http_port: int | None = None
    timings: list[Timing] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.repo = self.workdir / "repo"
        self.state = self.workdir / "state.db"
        self.recordings = self.workdir / "recordings"
        self.references = self.workdir / "references"  # the operator's monitoring references
        self.reports = self.workdir / "reports"
        self.controller_log = self.workdir / "controller.log"
        self.tracking_uri = f"sqlite:///{self.workdir / 'mlflow.db'}"
        self.versions: list[str] = []
        self._ray: LocalRay | None = None
        self._controller: Background | None = None
        self._load: Load | None = None
        self._deployed = False

    # -- the tour ---------------------------------------------------------------------------

    def run(self) -> list[Timing]:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        began = time.monotonic()
        finished = False
        try:
            with self.step(0, "set up: Ray, MLflow, the team's repository"):
                self.set_up()
            with self.step(1, "v1 through the controller, under load"):
                self.deploy_v1()
            with self.step(2, "a pull request breaking a production rule"):
                self.refused_by_policy()
            with self.step(3, "a pull request for v2, simulated on recorded traffic"):
                self.simulate_v2()
            with self.step(4, "v3 merged: a canary with analysis under load"):
                self.canary_v3()
            with self.step(5, "serveops rollback: a revert commit, Serve back to v1"):
                self.roll_back()
            self.later_steps()
            finished = True
        finally:
            with self.step(7, "stop everything the tour started", reraise=False):
                self.stop()
            self.report(time.monotonic() - began, finished)
        return self.timings

    @contextlib.contextmanager
    def step(self, number: int, title: str, *, reraise: bool = True) -> Iterator[Timing]:
        timing = Timing(number, title)
        self.timings.append(timing)
        _say(f"Step {number}: {title}" if number else title[0].upper() + title[1:])
        began = time.monotonic()
        try:
            yield timing
        except StepSkipped as why:
            timing.outcome = "skipped"
            timing.seconds = time.monotonic() - began
            _note(f"skipped: {why}")
            print(f"  ({timing.seconds:.1f}s, skipped)", flush=True)
            return
        except BaseException as err:
            timing.outcome = "failed"
            timing.seconds = time.monotonic() - began
            message = getattr(err, "message", None) or str(err) or err.__class__.__name__
            print(
                f"\n\033[1;31mdemo: step {number} ({title}) failed after "
                f"{timing.seconds:.0f}s: {message}\033[0m",
                flush=True,
            )
            self._controller_tail()
            if reraise:
                raise StepFailed(f"step {number} ({title}) failed: {message}") from err
            return
        timing.seconds = time.monotonic() - began
        print(f"  ({timing.seconds:.1f}s)", flush=True)

    def set_up(self) -> None:
        if self.address is None:
            self._ray = LocalRay(
                self.num_cpus,
                # Router metrics reach Ray's export within 1 s, not 10: the canary's analysis
                # windows can be seconds long.
                env={"RAY_metrics_report_interval_ms": "1000"},
            )
            _note(f"starting a local Ray head with --num-cpus {self.num_cpus}")
            self._ray.start(timeout_s=300)  # a busy 2-core machine can take minutes
            self.address, self.http_port = self._ray.address, free_port()
        self.http_port = self.http_port or free_port()
        _note(f"Ray dashboard {self.address}, Serve HTTP on 127.0.0.1:{self.http_port}")
        _note(f"MLflow registry {self.tracking_uri}: training and registering v1 and v2")
        self.versions = train_and_register(self.tracking_uri, self.workdir / "artifacts")
        _note(f"registered {MODEL_NAME} versions {', '.join(self.versions)}")
        files.make_repo(self.repo, self._staging(self.versions[0]))
        files.platform_policies(self.workdir / "platform-policies")
        files.write_reference(self.references)
        _note(f"the team's repository: {self.repo} (branch main)")
        print(files.git(self.repo, "log", "--stat", "--format=  %h %s", "-1"))

    def deploy_v1(self) -> None:
        self._start_controller()
        v1 = self.versions[0]
        self.wait(lambda d: watch.serves(d, v1), 240, f"v{v1} to serve {self.url}")
        if not support.post_until_ok(self.url, sample_request(1), 60):
            raise StepFailed(f"{self.url} did not answer 200 in 60s")
        self._load = Load(self.url, rate=LOAD_RATE).start()
        _note(f"load: {LOAD_RATE:g} requests/s through {self.url}, one data set row each")
        watch.wait_recorded(self, RECORDED, 120)
        self.serveops("status", "--env", ENV, "--repo", str(self.repo), "--rev", "main")
        _note("load so far: " + self._load.window(self._load.started_at).line())

    def refused_by_policy(self) -> None:
        text = files.faster_production((self.repo / files.PRODUCTION).read_text())
        name = "pr/faster-production-rollout"
        files.branch(self.repo, name, files.PRODUCTION, text, "Production: canary from 50%")
        _note(f"pull request {name}: {files.PRODUCTION} starts its canary at 50%")
        args = ("--repo", str(self.repo), "--base", "main", "--head", name, "--now", DEMO_NOW)
        # Text: `file:line: field: error [rule] message`, what a review annotation says
        # (`-o github` makes them annotations in a workflow, `-o sarif` code scanning alerts).
        code = self.serveops("check", *args, ok=(0, 1))
        if code != 1:
            raise StepFailed(f"serveops check let {name} through")
        _note(f"refused ({files.RULE_BROKEN}): the pull request cannot merge; nothing deployed")

    def simulate_v2(self) -> None:
        v1, v2 = self.versions[:2]
        name = "pr/v2"
        text = files.with_version(self._staging(v1), v1, v2)
        files.branch(self.repo, name, files.STAGING, text, f"{MODEL_NAME} v2 (C=0.001)")
        _note(f"pull request {name}: {files.STAGING} moves to v{v2}")
        out = self.reports / "simulate-v2"
        traffic = self.workdir / "traffic"
        records = support.snapshot_recordings(self.recordings, traffic)
        _note(f"{records} recorded requests copied to {traffic}")
        code = self.serveops(
            "simulate", "--repo", str(self.repo), "--base", "main", "--head", name,
            "--env", ENV, "--traffic", str(traffic), "--speed", "2",
            "--out", str(out), ok=(0, 1),
        )  # fmt: skip
        if code != 1 or not (out / "report.html").exists():
            raise StepFailed(f"serveops simulate did not fail v{v2} (exit {code})")
        _note(f"v{v2} fails the simulation: the pull request stays open. Open {out}/report.html")

    def canary_v3(self) -> None:
        v1 = self.versions[0]
        _note("training v3: the same model as v1 with another solver (it agrees with v1)")
        v3 = register_model(
            self.tracking_uri, self.workdir / "artifacts", c=1.0, solver="newton-cg"
        )
        self.versions.append(v3)
        name = "pr/v3"
        text = files.with_version(self._staging(v1), v1, v3)
        files.branch(self.repo, name, files.STAGING, text, f"{MODEL_NAME} v3 (newton-cg)")
        since = time.time()
        files.git(self.repo, "merge", "-q", "--no-ff", name, "-m", f"Merge {name}")
        _note(f"merged {name} into main: {files.git(self.repo, 'rev-parse', '--short', 'main')}")
        watch.follow_rollout(self, v3, since)

    def roll_back(self) -> None:
        v1, v3 = self.versions[0], self.versions[-1]
        since = time.time()
        self.serveops(
            "rollback", "--env", ENV, "--repo", str(self.repo), "--deployment", MODEL_NAME,
            "--reason", "demo: back to the version that served before",
        )  # fmt: skip
        print(files.git(self.repo, "log", "-1", "--format=%h %s%n%n%b"))
        _note("(no push here: the controller follows this local repository's main itself)")
        _note(f"the controller moves Serve back from v{v3} to v{v1}")
        watch.follow_rollout(self, v1, since)

    def later_steps(self) -> None:
        """Step 6 (controller/dev/tour_step6.py): monitoring and batch inference, run when this
        serveops has their commands."""
        from controller.cli.main import app

        commands = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
        commands |= {g.name or "" for g in app.registered_groups}
        steps = [
            ("monitor", "one drift alert (live model monitoring, issue 12)", self.drift_alert),
            ("batch", "one batch run (batch inference on Ray Data, issue 13)", self.batch_run),
        ]
        for command, title, run in steps:
            with self.step(6, title):
                if command not in commands:
                    raise StepSkipped(f"this serveops has no `serveops {command}` yet")
                run()

    def drift_alert(self) -> None:
        tour_step6.drift_alert(self)

    def batch_run(self) -> None:
        tour_step6.batch_run(self)

    def stop(self) -> None:
        """Stop the load, the controller and Ray (or remove the tour's applications), each
        even when stopping an earlier one failed; the first failure is raised at the end."""
        with contextlib.ExitStack() as stack:  # runs in reverse: load first, Ray last
            stack.callback(self._stop_cluster)
            stack.callback(self._stop_controller)
            stack.callback(self._stop_load)

    def _stop_load(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            load.stop()
            _note("load, whole tour: " + load.window(load.started_at).line())

    def _stop_controller(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            _note(f"stopping the controller (pid {controller.pid})")
            controller.stop()

    def _stop_cluster(self) -> None:
        if self._ray is not None:
            ray, self._ray = self._ray, None
            _note("stopping the local Ray we started")
            ray.stop()
        elif self.address is not None and self._deployed:
            _note(f"removing the tour's applications from {self.address}")
            support.remove_applications(self.address, self.http_port or 8000, MODEL_NAME)

    def report(self, seconds: float, finished: bool) -> None:
        _say(f"Done in {seconds:.0f}s" if finished else f"Stopped after {seconds:.0f}s")
        for t in self.timings:
            print(f"  step {t.number}  {t.seconds:6.1f}s  {t.outcome:8s} {t.title}")
        if self.repo.exists():
            print(support.left_to_look_at(self.workdir, self.tracking_uri, ENV), flush=True)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def load(self) -> Load | None:
        """The tour's load, while it runs (steps 1 to 6)."""
        return self._load

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/{MODEL_NAME}"

    def _staging(self, version: str) -> str:
        return files.staging_spec(version, self.recordings, sample_request(1))

    def env(self) -> dict[str, str]:
        assert self.address is not None
        return {
            **os.environ,
            "SERVEOPS_ADDRESS": self.address,
            "SERVEOPS_HTTP_PORT": str(self.http_port),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "SERVEOPS_STATE": str(self.state),
        }

    def serveops(self, *args: str, ok: tuple[int, ...] = (0,)) -> int:
        """Run a serveops command as a user would, printing what it prints."""
        print("$ serveops " + " ".join(args), flush=True)
        cmd = [serveops_bin(), *args]
        code = subprocess.run(cmd, env=self.env(), check=False, timeout=600).returncode
        if code not in ok:
            raise StepFailed(f"`serveops {args[0]}` exited {code}")
        return code

    def _start_controller(self) -> None:
        args = [
            "controller", "--env", ENV, "--repo", str(self.repo), "--branch", "main",
            "--interval", "2s", "--timeout", "180s",
            "--policies", str(self.workdir / "platform-policies"),
            "--monitor-reference-dir", str(self.references),
        ]  # fmt: skip
        print("$ serveops " + " ".join(args) + f"  > {self.controller_log} &", flush=True)
        self._controller = Background(args, self.env(), self.controller_log)
        self._deployed = True

    def _controller_tail(self, lines: int = 15) -> None:
        if self.controller_log.exists():
            tail = self.controller_log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"  last lines of {self.controller_log}:")
                print("\n".join(f"    {line}" for line in tail), flush=True)

    def view(self) -> DeploymentView | None:
        """The tour's deployment, as `serveops status` shows it."""
        view, _problem = load_view(
            ENV, state=self.state, address=self.address, http_port=self.http_port
        )
        return view.deployment(MODEL_NAME)

    def wait(
        self, done: Callable[[DeploymentView], bool], timeout_s: float, what: str
    ) -> DeploymentView:
        """Until `done` holds for the deployment (StepFailed after `timeout_s`, or when the
        controller exited)."""
        deadline = time.monotonic() + timeout_s
        d = None
        while time.monotonic() < deadline:
            if self._controller is not None and self._controller.exited() is not None:
                raise StepFailed(f"the controller exited ({self._controller.exited()})")
            d = self.view()
            if d is not None and done(d):
                return d
            time.sleep(1)
        last = d.summary if d is not None else "no such deployment yet"
        raise StepFailed(f"waited {timeout_s:.0f}s for {what}; last: {last}")


def run_tour(
    workdir: Path,
    num_cpus: int = 2,
    *,
    address: str | None = None,
    http_port: int | None = None,
) -> list[Timing]:
    """The full tour; raises StepFailed naming the step that failed (after stopping all)."""
    return Tour(workdir, num_cpus, address, http_port).run()
