"""Rollouts driven by the controller's passes: FakeServe, real Git and SQLite, fake metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cluster.status import deployment_statuses
from controller.rollout.preview import path
from controller.rollout.state import RolloutState
from controller.spec.models import ModelDeployment
from tests.support import FakeServe, World, commit, deployment_yaml

CANARY = """\
rollout:
  strategy: canary
  steps:
    - weight: 25
      pause: 1m
    - weight: 60
      pause: 1m
  analysis:
    interval: 30s
    min_requests: 20
    max_error_rate_increase: 1
    failure_limit: 1
"""

BLUE_GREEN = """\
rollout:
  strategy: blue_green
  scale_down_delay: 2m
  analysis:
    interval: 30s
    min_requests: 20
"""


def serving(tmp_path: Path, rollout: str = CANARY) -> World:
    """v1 applied (a first deploy is immediate whatever the strategy)."""
    w = World(tmp_path, rollout=rollout)
    assert w.sync().outcome == "applied"
    return w


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = serving(tmp_path)
    yield w
    w.close()


def apps(serve: FakeServe) -> set[str]:
    return set(serve.apps)


def test_canary_moves_step_by_step_to_100_and_records_every_step(world: World) -> None:
    world.push("2")
    started = world.pass_()
    # A rollout in flight is progressing, never "in sync" or "applied".
    assert started.outcome == "progressing"
    assert started.exit_code == 0
    assert "canary rollout from fraud--v1" in started.message
    assert apps(world.serve) == {"fraud", "fraud--v1", "fraud--v2"}
    assert world.weights() == {"1": 100, "2": 0}  # the candidate starts with no traffic
    assert started.requeue_after < 10  # looks again soon while the candidate loads

    assert world.pass_().outcome == "progressing"
    assert world.weights() == {"1": 75, "2": 25}
    [row] = [r for r in deployment_statuses(world.serve.get(), "staging")]
    assert row.health == "Progressing"
    assert "canary rollout to v2" in row.message

    world.traffic(30)
    waiting = world.pass_()  # analysis passed, the 1m pause is not over
    assert waiting.outcome == "progressing"
    assert "step 1/2 at 25% to v2; waiting for the end of the pause" in waiting.message
    world.traffic(30)
    assert world.pass_().outcome == "progressing"
    assert world.weights() == {"1": 40, "2": 60}
    world.traffic(30)
    world.pass_()
    world.traffic(30)
    finishing = world.pass_()
    assert "completed" in finishing.message
    done = world.sync()  # the clean phase, once routers have seen the switch
    assert done.outcome == "applied"
    assert apps(world.serve) == {"fraud", "fraud--v2"}
    assert world.weights() == {"2": 100}
    assert world.router().rollout is None  # back to Git's steady state
    assert world.pass_().outcome == "in_sync"

    events = world.ctl.store.rollout_events("staging", "fraud")
    assert [(e.action, e.weight) for e in reversed(events)] == [
        ("start", 0),
        ("set_weight", 25),
        ("set_weight", 60),
        ("complete", 100),
    ]


def test_failed_analysis_aborts_at_once_marks_degraded_and_is_not_retried(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}
    world.traffic(30, errors_v2=10)  # 10 of 30 candidate requests fail
    aborted = world.pass_()
    assert aborted.outcome == "aborted"
    assert aborted.exit_code == 1
    assert aborted.message.startswith("rollout of fraud to v2 aborted: analysis failed")
    assert world.weights() == {"1": 100}
    world.sync()
    assert apps(world.serve) == {"fraud", "fraud--v1"}
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert row.health == "Degraded"
    assert "error rate" in row.message
    audit = world.ctl.store.history("staging")[0]
    assert audit.result == "aborted", audit
    assert "error rate" in audit.message

    puts = len(world.serve.puts)
    for _ in range(3):
        held = world.pass_(60)  # held on v1; v2 is not tried again, and every pass says so
        assert held.outcome == "aborted"
        assert held.exit_code == 1
        assert held.message.startswith("fraud is held on v1: rollout to v2 of ")
        assert "not attempted again until a commit changes the deployment" in held.message
    assert len(world.serve.puts) == puts
    assert world.ctl.store.history("staging")[0].id == audit.id  # holding writes no audit row

    world.push("3")  # a new commit that changes the deployment starts a new rollout
    again = world.pass_()
    assert again.outcome == "progressing"
    assert "canary rollout from fraud--v1 to fraud--v3" in again.message


def test_an_unrelated_commit_does_not_retry_an_aborted_rollout(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol")
    assert world.pass_().outcome == "aborted"
    world.sync()
    puts = len(world.serve.puts)
    commit(world.repo, {"README.md": "models\n"}, "docs only")  # a new commit, same deployment
    held = world.pass_()
    assert held.outcome == "aborted"
    assert "fraud is held on v1" in held.message
    assert len(world.serve.puts) == puts
    assert world.weights() == {"1": 100}


def test_sync_retry_starts_an_aborted_rollout_again(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol")
    world.sync()
    retried = world.ctl.reconcile_once(retry=True, trigger="sync")
    assert retried.outcome == "progressing"
    assert "canary rollout from fraud--v1 to fraud--v2" in retried.message
    assert apps(world.serve) == {"fraud", "fraud--v1", "fraud--v2"}


def test_a_restarted_controller_continues_from_the_step_it_stood_at(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}
    world.traffic(30)
    world.pass_()  # analysis passed in step 1

    world.ctl = world.controller()  # killed and started again: nothing kept in memory
    puts = len(world.serve.puts)
    assert world.pass_().outcome == "progressing"
    assert len(world.serve.puts) == puts
    world.traffic(30)
    assert world.pass_().outcome == "progressing"
    assert world.weights() == {"1": 40, "2": 60}
    actions = [e.action for e in world.ctl.store.rollout_events("staging")]
    assert actions.count("start") == 1
    assert actions.count("set_weight") == 2


def test_killed_between_deciding_and_applying_converges_without_skipping(world: World) -> None:
    world.push("2")
    world.pass_()

    class Boom(Exception):
        pass

    real_put = world.serve.put

    def dying_put(apps: list[dict[str, Any]], live: Any) -> None:
        raise Boom("killed")

    world.serve.put = dying_put  # type: ignore[method-assign]
    died = world.pass_()  # decided step 1 and saved it, died before writing Serve
    assert died.outcome == "failed"
    assert "Boom: killed" in died.message
    world.serve.put = real_put  # type: ignore[method-assign]
    assert world.weights() == {"1": 100, "2": 0}

    world.ctl = world.controller()
    assert world.pass_().outcome == "progressing"
    assert world.weights() == {"1": 75, "2": 25}  # step 1, not step 2
    assert [e.weight for e in world.ctl.store.rollout_events("staging")] == [25, 0]


def test_too_little_traffic_pauses_and_resume_and_promote_drive_it(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    for _ in range(3):
        world.metrics.serve("2", 2)
        world.pass_(30)
    state = world.ctl.store.rollouts("staging")["fraud"].state
    assert state.paused
    assert "inconclusive" in state.message
    world.traffic(60)
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}  # paused: time and traffic do not move it

    world.ctl.store.add_rollout_command("staging", "fraud", "promote", "alice")
    assert world.pass_().outcome == "progressing"
    assert world.weights() == {"1": 40, "2": 60}
    world.ctl.store.add_rollout_command("staging", "fraud", "pause", "bob")
    world.traffic(120)
    world.pass_()
    assert world.weights() == {"1": 40, "2": 60}
    world.ctl.store.add_rollout_command("staging", "fraud", "promote_full", "bob")
    world.pass_()
    assert world.weights() == {"2": 100}
    assert world.ctl.store.pending_rollout_commands("staging") == []


def test_operator_abort(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol: wrong model")
    result = world.pass_()
    assert "aborted by carol: wrong model" in result.message
    assert world.weights() == {"1": 100}


def test_a_revert_during_a_rollout_goes_straight_back(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.push("1")
    world.sync()
    assert world.weights() == {"1": 100}
    assert apps(world.serve) == {"fraud", "fraud--v1"}
    assert world.ctl.store.rollouts("staging")["fraud"].state.phase == "completed"


def test_the_candidate_failing_to_start_aborts_without_traffic(world: World) -> None:
    world.serve.failing.add("fraud--v2")
    world.push("2")
    first = world.pass_()
    assert first.outcome == "progressing"  # apply does not wait for a rollout's candidate
    aborted = world.pass_()
    assert "aborted: candidate fraud--v2 failed" in aborted.message
    assert world.weights() == {"1": 100}


def test_immediate_strategy_is_unchanged(tmp_path: Path) -> None:
    w = serving(tmp_path, rollout="")
    w.push("2")
    result = w.sync()
    assert result.outcome == "applied"
    assert "rollout" not in result.message
    assert w.weights() == {"2": 100}
    assert apps(w.serve) == {"fraud", "fraud--v2"}
    assert "rollout" not in w.serve.apps["fraud"]["deployments"][0]["user_config"]
    assert w.ctl.store.rollouts("staging") == {}
    w.close()


def test_blue_green_previews_with_mirrored_traffic_switches_in_one_write(tmp_path: Path) -> None:
    w = serving(tmp_path, rollout=BLUE_GREEN)
    w.push("2")
    w.pass_()
    w.pass_()
    router = w.router()
    assert w.weights() == {"1": 100, "2": 0}
    assert [(t.version, t.weight) for t in router.shadow] == [("2", 100)]
    w.traffic(30)
    puts = len(w.serve.puts)
    switched = w.pass_()
    assert "switched to fraud--v2" in switched.message
    assert len(w.serve.puts) == puts + 1  # one atomic write
    assert w.weights() == {"1": 0, "2": 100}
    assert not w.router().shadow
    assert apps(w.serve) == {"fraud", "fraud--v1", "fraud--v2"}  # v1 kept for rollback
    w.traffic(30)
    w.pass_()
    w.traffic(60)
    w.pass_()
    assert apps(w.serve) == {"fraud", "fraud--v1", "fraud--v2"}
    w.traffic(30)
    w.sync()
    assert apps(w.serve) == {"fraud", "fraud--v2"}
    assert w.weights() == {"2": 100}
    w.close()


def test_blue_green_rollback_after_the_switch_is_a_weight_change(tmp_path: Path) -> None:
    w = serving(tmp_path, rollout=BLUE_GREEN)
    w.push("2")
    w.pass_()
    w.pass_()
    w.traffic(30)
    w.pass_()
    assert w.weights() == {"1": 0, "2": 100}
    w.traffic(30, errors_v2=30)
    result = w.pass_()
    assert "aborted" in result.message
    assert w.weights() == {"1": 100}
    w.close()


def test_rollback_commit_after_an_abort_brings_git_and_serve_back_to_stable(world: World) -> None:
    from controller.source.rollback import plan_rollback, write_rollback

    world.push("2")
    world.pass_()
    world.pass_()
    world.traffic(30, errors_v2=10)
    assert world.pass_().outcome == "aborted"
    world.sync()
    write_rollback(plan_rollback(world.repo, "staging", "fraud"), "v2 errors")
    result = world.sync()
    assert result.outcome == "applied"  # Git says v1 again: no longer held, no new rollout
    assert world.weights() == {"1": 100}
    assert world.router().rollout is None
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert row.health == "Healthy"
    assert world.pass_().outcome == "in_sync"


def test_a_thin_window_stays_open_until_it_holds_min_requests(world: World) -> None:
    """12 candidate requests an interval where 20 are needed (a slow or lightly loaded
    service): the first analysis is inconclusive and keeps its window open, the next one judges
    all 24 and passes. A conclusive window closes: the next step's starts afresh."""
    world.push("2")
    world.pass_()
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}

    def analysed() -> Any:
        return world.ctl.store.rollouts("staging")["fraud"].state.last_analysis

    world.metrics.serve("1", 36)
    world.metrics.serve("2", 12)
    world.pass_(30)
    assert (analysed().verdict, analysed().candidate.requests) == ("inconclusive", 12)
    world.metrics.serve("1", 36)
    world.metrics.serve("2", 12)
    world.pass_(30)
    assert analysed().verdict == "pass"
    assert (analysed().candidate.requests, analysed().stable.requests) == (24, 72)
    assert world.weights() == {"1": 40, "2": 60}  # step 1 held its minute and passed
    world.metrics.serve("2", 12)
    world.pass_(30)
    assert (analysed().verdict, analysed().candidate.requests) == ("inconclusive", 12)


PREVIEW_QUARTER = """\
rollout:
  strategy: blue_green
  shadow_percent: 25
  scale_down_delay: 2m
  analysis:
    interval: 30s
    min_requests: 5
"""


def four_replicas(text: str) -> str:
    return text.replace("replicas: 1\n", "replicas: 4\n")


class FourReplicas(World):
    def spec(self, version: str, extra: str = "") -> str:
        return four_replicas(super().spec(version, extra))


def candidate_replicas(serve: FakeServe) -> int:
    [model] = [d for d in serve.apps["fraud--v2"]["deployments"] if d["name"] == "ModelServer"]
    return int(model["num_replicas"])


def previewing(tmp_path: Path, rollout: str, replicas: int) -> FourReplicas:
    """v2 previewing beside v1 (4 replicas) with `replicas` of its own, a passing window's
    traffic served."""
    w = FourReplicas(tmp_path, rollout=rollout)
    assert w.sync().outcome == "applied"
    w.push("2")
    w.pass_()
    w.pass_()
    assert candidate_replicas(w.serve) == replicas
    w.traffic(30)
    return w


def previewing_a_quarter(tmp_path: Path) -> FourReplicas:
    """25% of the requests mirrored: 1 of 4 replicas."""
    return previewing(tmp_path, PREVIEW_QUARTER, 1)


def test_a_quarter_preview_runs_one_replica_and_scales_to_four_before_the_switch(
    tmp_path: Path,
) -> None:
    w = previewing_a_quarter(tmp_path)
    assert [(t.version, t.weight) for t in w.router().shadow] == [("2", 25)]
    w.serve.latency = 6  # from now on Serve takes a few reads to run what is written
    scaling = w.pass_()
    assert "scaling fraud--v2 to full size" in scaling.message
    assert w.weights() == {"1": 100, "2": 0}  # still previewing: no client traffic
    assert candidate_replicas(w.serve) == 4
    waiting = w.pass_(1)  # Serve still deploying the three new replicas
    assert w.weights() == {"1": 100, "2": 0}
    stored = w.store().rollouts(w.env)["fraud"].state
    assert stored.scaling
    assert stored.waiting == "fraud--v2 at its full size (scaled for the switch)"
    assert "switched" not in waiting.message
    for _ in range(6):
        switched = w.pass_(1)
        if "switched" in switched.message:
            break
    assert "switched to fraud--v2" in switched.message
    assert w.weights() == {"1": 0, "2": 100}
    assert candidate_replicas(w.serve) == 4
    w.close()


def test_every_request_mirrored_previews_at_full_size(tmp_path: Path) -> None:
    w = previewing(tmp_path, BLUE_GREEN, 4)
    assert "switched to fraud--v2" in w.pass_().message  # no scaling step
    w.close()


def test_the_plan_shows_the_preview_size_and_the_scaling_step() -> None:
    text = deployment_yaml(model="models:/fraud/2", extra_spec=PREVIEW_QUARTER)
    spec = ModelDeployment.model_validate(yaml.safe_load(four_replicas(text)))
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    state = RolloutState(
        "fraud", "blue_green", "fraud--v1", "1", "fraud--v2", "2", "k", "c", "loading", now, now
    )
    steps = path(state, spec).steps
    assert "preview: 25% of requests mirrored to v2 at 1 of 4 replicas" in steps[1]
    assert steps[2] == "scale v2 to 4 replicas, until they run"
    assert steps[3].startswith("switch: 100% to v2 in one write")


def test_a_candidate_that_never_runs_at_full_size_is_rolled_back_at_the_deadline(
    tmp_path: Path,
) -> None:
    w = previewing_a_quarter(tmp_path)
    w.serve.latency = 10_000  # Serve never finishes deploying what is written next
    assert "scaling fraud--v2" in w.pass_().message
    held = w.pass_(60)  # the World's progress deadline is 120 s
    assert w.weights() == {"1": 100, "2": 0}, held.message
    aborted = w.pass_(61)
    assert "did not run at its full size within the progress deadline of 120s" in aborted.message
    assert w.weights() == {"1": 100}
    w.close()
