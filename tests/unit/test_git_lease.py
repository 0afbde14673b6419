"""The lease kept in the repository (`--lease-in-git`): real Git repositories in a temp dir, a
bare one as the remote; the controllers' Serve is the fake one. Two controllers with two state
files see each other's lease; the swap is atomic, so a race has one winner."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from controller.gitops.git_lease import RefLeases, lease_ref
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesInDirectory
from controller.source.repository import RepoSource
from tests.support import World, git, make_repo

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)


def leases(repo: Path) -> RefLeases:
    return RefLeases(RepoSource(str(repo), branch="main"))


def test_a_local_repository_holds_one_lease_per_environment(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"README": "x"})
    a, b = leases(repo), leases(repo)
    first = a.acquire("prod", "ctl-a", "1", 30, NOW)
    assert first.acquired
    assert first.lease.epoch == 1
    held = b.acquire("prod", "ctl-b", "7", 30, NOW + dt.timedelta(seconds=10))
    assert not held.acquired
    assert (held.lease.holder, held.lease.instance) == ("ctl-a", "1")
    assert b.acquire("staging", "ctl-b", "7", 30, NOW).acquired  # another environment
    renewed = a.acquire("prod", "ctl-a", "1", 30, NOW + dt.timedelta(seconds=20))
    assert renewed.lease.acquired_at == NOW  # renewed, not retaken
    later = NOW + dt.timedelta(seconds=60)  # a died: its lease ran out
    taken = b.acquire("prod", "ctl-b", "7", 30, later)
    assert taken.acquired
    assert taken.lease.epoch == 2
    a.release("prod", "ctl-a", "1")  # not a's any more: left alone
    assert b.read("prod")[1] is not None
    assert b.break_lease("prod") is not None
    assert b.read("prod") == (None, None)


def test_through_a_remote_the_second_swap_of_a_race_loses(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    make_repo(seed, {"README": "x"})
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    hosts = []
    for name in ("host-a", "host-b"):
        git(tmp_path, "clone", "-q", str(origin), str(tmp_path / name))
        hosts.append(leases(tmp_path / name))
    a, b = hosts
    sha_seen_by_b, _ = b.read("prod")  # no lease yet
    assert a.acquire("prod", "ctl-a", "1", 30, NOW).acquired
    # b read before a's swap: its swap, expecting no ref, is refused by the remote.
    assert not b._swap("prod", sha_seen_by_b, '{"serveops_lease": "prod"}')
    lost = b.acquire("prod", "ctl-b", "9", 30, NOW)
    assert not lost.acquired
    assert lost.lease.holder == "ctl-a"
    listed = git(origin, "for-each-ref", "--format=%(refname)", "refs/serveops/")
    assert listed == lease_ref("prod")


def test_a_ref_that_is_not_a_lease_counts_as_none(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    head = make_repo(repo, {"README": "x"})
    git(repo, "update-ref", lease_ref("prod"), head)  # a commit whose message is no lease
    assert leases(repo).read("prod")[1] is None
    assert leases(repo).acquire("prod", "ctl-a", "1", 30, NOW).acquired
    # A huge message is not read (anyone with push access writes this ref).
    big = git(repo, "commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-m", "x" * 100_000)
    git(repo, "update-ref", lease_ref("staging"), big)
    assert leases(repo).read("staging") == (big, None)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_controllers_with_two_state_files_see_each_others_lease(
    world: World, tmp_path: Path
) -> None:
    def controller(state: Path, holder: str) -> Controller:
        settings = ControllerSettings(
            world.env,
            interval_s=10,
            actor="tester",
            policies=PoliciesInDirectory(world.platform),
            lease_in_git=True,
        )
        return Controller(
            RepoSource(str(world.repo), branch="main"),
            world.serve,
            StateStore(state, clock=world.clock),
            world.registry,
            settings,
            notifier=world.notifier,
            holder=holder,
            metrics=world.metrics,
        )

    a = controller(tmp_path / "a" / "state.db", "host-a:/a/state.db")
    b = controller(tmp_path / "b" / "state.db", "host-b:/b/state.db")
    assert a.reconcile_once().outcome in ("applied", "progressing")
    puts = len(world.serve.puts)
    waiting = b.reconcile_once()
    assert waiting.outcome == "waiting"
    assert "held in Git (refs/serveops/leases/staging) by controller host-a:/a/state.db" in (
        waiting.message
    )
    assert len(world.serve.puts) == puts  # b wrote nothing
    a.release()  # a stops cleanly: its lease goes with it
    assert b.reconcile_once().outcome != "waiting"


def test_serveops_lease_in_git_shows_and_breaks_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from controller.cli.main import app

    repo = tmp_path / "repo"
    make_repo(repo, {"README": "x"})
    leases(repo).acquire("prod", "ctl-a", "1", 300, dt.datetime.now(dt.UTC))
    args = ["lease", "--env", "prod", "--in-git", "--repo", str(repo)]
    args += ["--state", str(tmp_path / "state.db")]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "prod: held by ctl-a (process 1, epoch 1)" in shown.output
    broken = CliRunner().invoke(app, [*args, "--break"])
    assert "prod: broke the lease of ctl-a" in broken.output
    assert leases(repo).read("prod") == (None, None)
    missing = CliRunner().invoke(app, ["lease", "--env", "prod", "--in-git"])
    assert missing.exit_code == 2
    assert "--in-git needs --repo" in missing.output
