"""Pre- and post-rollout hooks gating rollouts: FakeServe, real Git and SQLite, real commands
(subprocesses), and smoke requests answered by a fake router (httpx.MockTransport) that pins
versions the way the real one does (`controller.serving.pinning`)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.cluster.status import deployment_statuses
from controller.errors import ValidationFailed
from controller.gitops.reconciler import Controller
from controller.rollout.hooks import HookContext, HookRunner, Hooks
from controller.serving.pinning import PIN_HEADER, PinSigner, awaits_status, pinned
from controller.serving.protocol import VERSION_HEADER, RouterConfig, Target
from controller.spec.manifest import load_manifests
from controller.spec.models import Hook
from tests.support import FakeServe, World, deployment_yaml
from tests.unit.test_rollout_controller import apps


class FakeRouter:
    """Answers requests the way the router would, from FakeServe's live router config: a pinned
    request goes to its version; others follow the weights (the heaviest, here)."""

    def __init__(self, serve: FakeServe) -> None:
        self.serve = serve
        self.status = {"1": 200, "2": 200}  # what each version answers
        self.seen: list[tuple[str, str | None, dict[str, float]]] = []  # path, pin, weights

    def __call__(self, request: httpx.Request) -> httpx.Response:
        config = RouterConfig.model_validate(
            self.serve.apps["fraud"]["deployments"][0]["user_config"]
        )
        running = {n for n, s in self.serve.status.items() if s == "RUNNING"}
        weights = {t.version: t.weight for t in config.targets}
        self.seen.append((request.url.path, request.headers.get(PIN_HEADER), weights))
        target = pinned(config, running, request.headers) or max(
            config.targets, key=lambda t: t.weight
        )
        body = {"predictions": [0]} if self.status[target.version] == 200 else {"error": "boom"}
        return httpx.Response(
            self.status[target.version], json=body, headers={VERSION_HEADER: target.version}
        )


def rollout_block(tmp_path: Path, strategy: str = "canary") -> str:
    """Smoke requests before, a command after; the command exits with the number in `rc`."""
    (tmp_path / "rc").write_text("0")
    script = (
        "import json, os, sys; "
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('SERVEOPS_')}}, "
        f"open({str(tmp_path / 'env.json')!r}, 'w')); "
        f"sys.exit(int(open({str(tmp_path / 'rc')!r}).read()))"
    )
    shape = (
        "steps:\n  - weight: 50\n    pause: 30s\n"
        if strategy == "canary"
        else "scale_down_delay: 2m\n"
    )
    return (
        f"rollout:\n  strategy: {strategy}\n"
        + textwrap.indent(shape, "  ")
        + textwrap.indent(
            textwrap.dedent(
                f"""\
                hooks:
                  pre_rollout:
                    - name: smoke
                      smoke:
                        - body: {{inputs: [[1.0, 2.0]]}}
                        - path: /invocations
                          body: {{inputs: [[3.0, 4.0]]}}
                  post_rollout:
                    - name: check
                      command: [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]
                      timeout: 20s
                """
            ),
            "  ",
        )
    )


class HookedWorld(World):
    def __init__(self, tmp_path: Path, strategy: str = "canary") -> None:
        self.tmp = tmp_path
        super().__init__(tmp_path, rollout=rollout_block(tmp_path, strategy))
        self.router_fake = FakeRouter(self.serve)
        assert self.sync().outcome == "applied"  # v1

    def controller(self, *, hooks: HookRunner | None = None, **options: object) -> Controller:
        smoke = Hooks(
            transport=httpx.MockTransport(self.router_fake), allowed=frozenset({sys.executable})
        )
        return super().controller(hooks=hooks or smoke, **options)  # type: ignore[arg-type]

    def command_exits(self, code: int) -> None:
        (self.tmp / "rc").write_text(str(code))

    def events(self) -> list[tuple[str, float]]:
        return [(e.action, e.weight) for e in reversed(self.ctl.store.rollout_events("staging"))]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[HookedWorld]:
    w = HookedWorld(tmp_path)
    yield w
    w.close()


def test_pre_rollout_smoke_reaches_the_candidate_before_it_has_traffic(world: HookedWorld) -> None:
    world.push("2")
    world.pass_()  # the candidate starts
    assert world.router_fake.seen == []  # not ready yet: no hook ran
    moved = world.pass_()
    assert moved.outcome == "progressing"
    assert "pre-rollout hooks passed: smoke (2/2 requests answered as expected)" in moved.message
    assert world.router_fake.seen == [
        ("/fraud", "2", {"1": 100, "2": 0}),  # pinned to v2, which had no share yet
        ("/fraud/invocations", "2", {"1": 100, "2": 0}),
    ]
    assert world.weights() == {"1": 50, "2": 50}


def test_failing_pre_rollout_smoke_aborts_before_any_traffic_moves(world: HookedWorld) -> None:
    world.router_fake.status["2"] = 500
    world.push("2")
    world.pass_()
    aborted = world.pass_()
    assert aborted.outcome == "aborted"
    assert aborted.exit_code == 1
    assert (
        "pre-rollout hooks failed: smoke: request 1/2: POST /fraud got HTTP 500, expected 200"
        in aborted.message
    )
    assert world.weights() == {"1": 100}
    world.sync()
    assert apps(world.serve) == {"fraud", "fraud--v1"}
    assert world.events() == [("start", 0), ("abort", 0)]  # the candidate never had a share
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert row.health == "Degraded"
    assert "pre-rollout hooks failed" in row.message


def test_post_rollout_hook_runs_at_100_percent_with_the_stable_version_kept(
    world: HookedWorld,
) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    verifying = world.pass_(30)  # the step is over: 100% to v2, v1 kept until the hook passes
    assert "kept until the post-rollout hooks pass" in verifying.message
    assert world.weights() == {"1": 0, "2": 100}
    assert apps(world.serve) == {"fraud", "fraud--v1", "fraud--v2"}
    assert not (world.tmp / "env.json").exists()  # runs at the next pass, once 100% is written

    done = world.pass_()
    assert "post-rollout hooks passed: check (exit 0)" in done.message
    world.sync()
    assert world.weights() == {"2": 100}
    assert apps(world.serve) == {"fraud", "fraud--v2"}
    env = json.loads((world.tmp / "env.json").read_text())
    assert env == {
        "SERVEOPS_ENVIRONMENT": "staging",
        "SERVEOPS_DEPLOYMENT": "fraud",
        "SERVEOPS_STAGE": "post_rollout",
        "SERVEOPS_CANDIDATE_VERSION": "2",
        "SERVEOPS_STABLE_VERSION": "1",
        "SERVEOPS_COMMIT": env["SERVEOPS_COMMIT"],
        "SERVEOPS_URL": "http://fake-ray:8000/fraud",
    }
    assert len(env["SERVEOPS_COMMIT"]) == 40
    assert world.events()[-2:] == [("set_weight", 100), ("complete", 100)]


def test_failing_post_rollout_hook_rolls_back_to_stable(world: HookedWorld) -> None:
    world.command_exits(3)
    world.push("2")
    world.pass_()
    world.pass_()
    world.pass_(30)
    assert world.weights() == {"1": 0, "2": 100}
    aborted = world.pass_()
    assert aborted.outcome == "aborted"
    assert "post-rollout hooks failed: check: " in aborted.message
    assert "exited 3" in aborted.message
    assert world.weights() == {"1": 100}
    world.sync()
    assert apps(world.serve) == {"fraud", "fraud--v1"}
    assert world.pass_(60).outcome == "aborted"  # held on v1, not retried


def test_blue_green_post_rollout_hook_failing_after_the_switch_switches_back(
    tmp_path: Path,
) -> None:
    w = HookedWorld(tmp_path, "blue_green")
    w.command_exits(1)
    w.push("2")
    w.pass_()
    assert "pre-rollout hooks passed" in w.pass_().message  # previewing
    switched = w.pass_()  # no analysis: switched at once
    assert "switched to fraud--v2" in switched.message
    assert switched.requeue_after <= 1
    assert w.weights() == {"1": 0, "2": 100}
    aborted = w.pass_(1)
    assert "post-rollout hooks failed: check" in aborted.message
    assert w.weights() == {"1": 100}
    w.close()


def test_a_missing_or_slow_command_fails_its_hook() -> None:
    hooks = Hooks(allowed=frozenset({"/no/such/tool", sys.executable}))
    ctx = HookContext("staging", "fraud", "/fraud", "2", "1", "c" * 40, "http://x:8000")
    result = hooks.run("pre_rollout", [Hook(name="gone", command=["/no/such/tool"])], ctx)
    assert not result.passed
    assert result.summary == "gone: command not found: /no/such/tool"
    slow = Hook(name="slow", command=[sys.executable, "-c", "import time; time.sleep(5)"])
    result = hooks.run("pre_rollout", [slow.model_copy(update={"timeout": "1s"})], ctx)
    assert not result.passed
    assert "did not finish within 1s" in result.summary


def test_a_command_hook_runs_only_allowed_programs_in_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVEOPS_WEBHOOK_SECRET", "s3cr3t-of-the-controller")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    ctx = HookContext("staging", "fraud", "/fraud", "2", "1", "c" * 40, "http://x:8000")
    seen = tmp_path / "env.json"
    dump = f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    hook = Hook(name="peek", command=[sys.executable, "-c", dump])

    refused = Hooks().run("pre_rollout", [hook], ctx)  # the controller allows no program
    assert not refused.passed
    assert not seen.exists()
    assert "is not a program this controller allows hooks to run" in refused.summary
    assert "--allow-hook-command" in refused.summary

    assert Hooks(allowed=frozenset({sys.executable})).run("pre_rollout", [hook], ctx).passed
    env = json.loads(seen.read_text())
    assert set(env) - {"PATH", "LANG", "LC_CTYPE", "HOME", "LC_ALL", "TZ", "TMPDIR"} == {
        "SERVEOPS_ENVIRONMENT",
        "SERVEOPS_DEPLOYMENT",
        "SERVEOPS_STAGE",
        "SERVEOPS_CANDIDATE_VERSION",
        "SERVEOPS_STABLE_VERSION",
        "SERVEOPS_COMMIT",
        "SERVEOPS_URL",
    }
    assert "hunter2" not in seen.read_text()
    assert "s3cr3t" not in seen.read_text()


SIGNER = PinSigner.generate()


def pin(version: str) -> dict[str, str]:
    return SIGNER.headers("fraud", version, ttl_s=60)


def test_pinning_reaches_only_versions_the_router_knows_and_runs() -> None:
    v1 = Target(app="fraud--v1", version="1", weight=100)
    v2 = Target(app="fraud--v2", version="2", weight=0)
    v3 = Target(app="fraud--v3", version="3", weight=100)
    config = RouterConfig(
        deployment="fraud",
        targets=[v1, v2],
        shadow=[v3],
        timeout_s=1,
        pin_keys=[SIGNER.public_key],
    )
    running = {"fraud--v1", "fraud--v2", "fraud--v3"}
    assert pinned(config, running, pin("2")) == v2  # 0% and still reachable
    assert pinned(config, running, pin("3")) == v3  # mirrored only (a preview)
    assert pinned(config, running, pin("9")) is None  # unknown: routed as usual
    assert pinned(config, {"fraud--v1"}, pin("2")) is None  # not running
    assert pinned(config, running, {}) is None


def test_the_router_rereads_status_only_for_a_pin_it_routes_but_has_not_seen_running() -> None:
    v1 = Target(app="fraud--v1", version="1", weight=100)
    v2 = Target(app="fraud--v2", version="2", weight=0)
    config = RouterConfig(
        deployment="fraud", targets=[v1, v2], timeout_s=1, pin_keys=[SIGNER.public_key]
    )
    assert awaits_status(config, {"fraud--v1"}, pin("2"))  # its poll may be behind
    assert not awaits_status(config, {"fraud--v1", "fraud--v2"}, pin("2"))
    assert not awaits_status(config, {"fraud--v1"}, pin("9"))  # not one of its versions
    assert not awaits_status(config, {"fraud--v1"}, {})
    assert not awaits_status(config, {"fraud--v1"}, {PIN_HEADER: "2"})  # not the controller's


class LateRouter:
    """A router that answers from the stable version until it has seen `late` requests: one
    whose config push or status poll trails the controller's view of the candidate."""

    def __init__(self, late: int) -> None:
        self.late, self.seen = late, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        version = "1" if self.seen <= self.late else request.headers[PIN_HEADER]
        return httpx.Response(200, json={"predictions": [0]}, headers={VERSION_HEADER: version})


def test_a_smoke_request_waits_for_a_router_that_does_not_know_the_candidate_yet() -> None:
    ctx = HookContext("staging", "fraud", "/fraud", "2", "1", "c" * 40, "http://x:8000")
    smoke = Hook(name="smoke", smoke=[{"body": {"inputs": [[1.0]]}}])
    late = LateRouter(late=2)
    result = Hooks(transport=httpx.MockTransport(late), pin_settle_s=5).run(
        "pre_rollout", [smoke], ctx
    )
    assert result.passed, result.summary
    assert late.seen == 3  # twice from v1, sent again, then the candidate answered

    never = LateRouter(late=10**6)
    result = Hooks(transport=httpx.MockTransport(never), pin_settle_s=0.6).run(
        "pre_rollout", [smoke], ctx
    )
    assert not result.passed
    assert never.seen >= 2
    assert result.summary.startswith(
        "smoke: request 1/1: POST /fraud was answered by v1, not the candidate v2 (HTTP 200) ("
    )
    assert result.summary.endswith(" tries over 0.6s)")


def test_hook_spec_errors_name_file_line_and_field(tmp_path: Path) -> None:
    both = deployment_yaml(
        extra_spec="""\
        rollout:
          strategy: canary
          steps: [{weight: 10}]
          hooks:
            pre_rollout:
              - name: two
                command: ["true"]
                smoke: [{body: {inputs: [[1]]}}]
        """
    )
    immediate = deployment_yaml(
        name="churn",
        extra_spec="""\
        rollout:
          hooks:
            post_rollout: [{name: check, command: ["true"]}]
        """,
    )
    with pytest.raises(ValidationFailed) as err:
        load_manifests(
            {"deployments/staging/fraud.yaml": both, "deployments/staging/churn.yaml": immediate}
        )
    text = err.value.message
    assert "deployments/staging/fraud.yaml:18: spec.rollout.hooks.pre_rollout[0]" in text
    assert "exactly one" in text
    assert "deployments/staging/churn.yaml:13: spec.rollout: " in text
    assert "'hooks' apply to canary, blue_green and shadow, not 'immediate'" in text


def test_engine_hooks_due_and_promote_full_still_verifies() -> None:
    import dataclasses
    import datetime as dt

    from controller.rollout.engine import decide, hooks_due
    from controller.rollout.state import HookResult, start, with_command
    from controller.spec.models import Rollout

    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    spec = Rollout.model_validate(
        {
            "strategy": "canary",
            "steps": [{"weight": 10, "pause": "indefinite"}, {"weight": 50}],
            "hooks": {
                "pre_rollout": [{"name": "smoke", "command": ["true"]}],
                "post_rollout": [{"name": "check", "command": ["true"]}],
            },
        }
    )
    state = start(
        "canary", "fraud", stable=("f--v1", "1"), candidate=("f--v2", "2"), key="k",
        commit="c", now=t0,
    )  # fmt: skip
    assert hooks_due(spec, state, "starting") is None  # only once the candidate runs
    assert hooks_due(spec, state, "ready") == "pre_rollout"
    held = decide(spec, state, t0, candidate="ready")  # hooks not run: no traffic moves
    assert held.action == "wait"
    assert held.state.weight == 0
    ok = HookResult("pre_rollout", True, "smoke (exit 0)")
    first = decide(spec, state, t0, candidate="ready", hooks=ok).state
    assert first.phase == "steps"
    assert first.weight == 10
    assert hooks_due(spec, first, "ready") is None

    promoted = decide(spec, with_command(first, "promote_full"), t0, candidate="ready")
    assert promoted.state.phase == "verifying"
    assert promoted.state.weight == 100
    assert hooks_due(spec, promoted.state, "ready") == "post_rollout"
    passed = HookResult("post_rollout", True, "check (exit 0)")
    done = decide(spec, promoted.state, t0, candidate="ready", hooks=passed)
    assert done.action == "complete"
    assert "post-rollout hooks passed" in done.state.message

    failed = HookResult("post_rollout", False, "check: false exited 1")
    back = decide(spec, promoted.state, t0, candidate="ready", hooks=failed)
    assert back.action == "abort"
    assert back.state.weight == 0
    aborted_by_hand = dataclasses.replace(promoted.state, abort="carol")
    assert hooks_due(spec, aborted_by_hand, "ready") is None  # an abort needs no hooks
