"""Batch plan and schedule: pure functions, the clock pinned."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.batch.plan import plan_batches, run_key
from controller.batch.schedule import check_cron, last_at_or_before, next_after
from controller.gitops.state.batch import BatchRun
from controller.spec.batch import BatchInference

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 2, 2, 1, tzinfo=UTC)  # one minute after a 02:00 run fell due


def batch(
    name: str = "nightly",
    cron: str | None = "0 2 * * *",
    missed: str = "run_once",
    on_model_change: bool = False,
) -> BatchInference:
    spec: dict[str, object] = {
        "model": "models:/fraud@champion",
        "input": {"uri": "/data/in", "format": "csv"},
        "output": {"uri": f"/data/out/{name}"},
        "on_model_change": on_model_change,
    }
    if cron is not None:
        spec["schedule"] = {"cron": cron, "missed": missed}
    return BatchInference.model_validate(
        {
            "apiVersion": "serveops.dev/v1alpha1",
            "kind": "BatchInference",
            "metadata": {"name": name, "environment": "staging", "owner": "ml"},
            "spec": spec,
        }
    )


def stored(name: str, at: dt.datetime, status: str = "succeeded") -> BatchRun:
    return BatchRun(
        "staging", name, run_key(at), "schedule", at, "c0", "models:/fraud/1", None, 0,
        status, None, "", None, None, None, at, at, at, "{}",  # type: ignore[arg-type]
    )  # fmt: skip


def plan(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "now": NOW,
        "since": {"nightly": NOW - dt.timedelta(days=1)},
        "latest": {},
        "active": [],
        "promoted": {},
    }
    args.update(kw)
    batches = args.pop("batches", [batch()])
    return plan_batches("staging", batches, **args)  # type: ignore[arg-type]


def test_schedule_in_a_time_zone_honours_daylight_saving() -> None:
    summer = dt.datetime(2026, 7, 1, 12, tzinfo=UTC)
    winter = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert next_after("0 2 * * *", "Europe/Paris", summer) == dt.datetime(2026, 7, 2, 0, tzinfo=UTC)
    assert next_after("0 2 * * *", "Europe/Paris", winter) == dt.datetime(
        2026, 12, 2, 1, tzinfo=UTC
    )
    assert last_at_or_before("0 2 * * *", "UTC", NOW) == dt.datetime(2026, 12, 2, 2, tzinfo=UTC)
    at = dt.datetime(2026, 12, 2, 2, tzinfo=UTC)
    assert last_at_or_before("0 2 * * *", "UTC", at) == at  # at the very second: due


@pytest.mark.parametrize(("expr", "words"), [("0 0 30 2 *", "day-of-month"), ("* *", "5 fields")])
def test_cron_that_cannot_run_is_refused(expr: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_cron(expr)


def test_a_due_run_is_planned_once_with_its_scheduled_time() -> None:
    [item] = plan().due
    assert item.due == dt.datetime(2026, 12, 2, 2, tzinfo=UTC)
    assert item.key == "20261202T020000Z"
    assert item.changes == ("new",)
    done = plan(latest={"nightly": stored("nightly", item.due)})
    assert done.due == []
    assert done.items[0].action == "wait"


def test_a_new_deployment_never_runs_for_the_past() -> None:
    p = plan(since={"nightly": NOW - dt.timedelta(seconds=30)})
    assert p.due == []
    assert p.items[0].reason.startswith("new: first run at 2026-12-03 02:00")


def test_missed_runs_run_once_or_are_skipped_as_declared() -> None:
    late = NOW + dt.timedelta(hours=5)
    once = plan(now=late)
    assert [i.due for i in once.due] == [dt.datetime(2026, 12, 2, 2, tzinfo=UTC)]
    assert "missed" in once.due[0].reason
    skip = plan(now=late, batches=[batch(missed="skip")])
    assert skip.due == []
    assert skip.items[0].action == "skip"


def test_one_run_at_a_time_and_a_requeue_for_the_next_time() -> None:
    running = stored("nightly", NOW - dt.timedelta(days=1), status="running")
    p = plan(active=[running])
    assert p.items[0].action == "running"
    assert p.due == []
    assert p.requeue_after(7.0) == 7.0
    idle = plan(latest={"nightly": stored("nightly", dt.datetime(2026, 12, 2, 2, tzinfo=UTC))})
    assert idle.requeue_after(7.0) == pytest.approx(
        (dt.timedelta(days=1, minutes=-1)).total_seconds()
    )


def test_a_model_version_change_is_shown_with_its_sample_check() -> None:
    p = plan(promoted={"nightly": "models:/fraud/1"}, resolved={"nightly": "models:/fraud/2"})
    assert p.items[0].changes == ("model models:/fraud/1 -> models:/fraud/2 (sample check first)",)


def test_a_followed_model_runs_once_per_new_version() -> None:
    followed = [batch(cron=None, on_model_change=True)]
    moved = {"nightly": "models:/fraud/2"}
    [item] = plan(batches=followed, promoted={"nightly": "models:/fraud/1"}, resolved=moved).items
    assert (item.action, item.trigger, item.due) == ("run", "model-change", NOW)
    assert item.key == f"model-{run_key(NOW)}"
    assert item.reason == "model changed: models:/fraud/1 -> models:/fraud/2 (sample check first)"
    # The version it runs already: nothing more.
    same = plan(batches=followed, promoted={"nightly": "models:/fraud/2"}, resolved=moved)
    assert same.items[0].action == "manual"
    # Its run was rejected (or failed): that version is not tried again by itself.
    rejected = stored("nightly", NOW, "rejected")
    rejected = BatchRun(**{**vars(rejected), "model_uri": "models:/fraud/2"})
    again = plan(
        batches=followed,
        promoted={"nightly": "models:/fraud/1"},
        resolved=moved,
        last={"nightly": rejected},
    )
    assert again.items[0].action == "manual"
    assert "models:/fraud/2 ran already" in again.items[0].reason
    # Never run yet: once, for the version it resolves to.
    first = plan(batches=followed, resolved=moved).items[0]
    assert (first.action, first.reason) == ("run", "model-change: first run, for models:/fraud/2")


def test_without_on_model_change_a_moved_alias_waits_for_the_schedule() -> None:
    [item] = plan(
        batches=[batch(cron="0 3 * * *")],
        latest={"nightly": stored("nightly", NOW - dt.timedelta(hours=23))},
        promoted={"nightly": "models:/fraud/1"},
        resolved={"nightly": "models:/fraud/2"},
    ).items
    assert item.action == "wait"


def test_manual_only_deployments_and_deleted_ones() -> None:
    p = plan(batches=[batch(cron=None)], latest={"gone": stored("gone", NOW)})
    assert p.items[0].action == "manual"
    assert p.deleted == ["gone"]
    assert p.requeue_after(5.0) is None


def test_a_thousand_deployments_plan_without_a_cluster() -> None:
    batches = [batch(f"b{i}") for i in range(1000)]
    p = plan(batches=batches, since={f"b{i}": NOW - dt.timedelta(days=1) for i in range(1000)})
    assert len(p.due) == 1000
