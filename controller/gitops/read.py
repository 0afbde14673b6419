"""Step 1 of a pass, read: everything the pass decides on, and nothing written.

The branch head and the desired state it renders (files validated, models resolved), the
environment's durable state (what was admitted, an apply in progress, failures), live Serve.
A head that cannot be fetched or read is an observation too: the pass then keeps driving what
was admitted before.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from controller.cluster.live import LiveState
from controller.errors import ServeopsError
from controller.gitops.context import PassContext
from controller.gitops.state import DesiredRevision, EnvironmentState, PassStart
from controller.registry.mlflow import Registry
from controller.rollout.hooks import pin_key_of
from controller.sync.read import Revision, read_desired


@dataclass(frozen=True)
class Observation:
    start: PassStart  # for the audit log: repo, branch, head commit, actor, trigger
    started: dt.datetime
    state: EnvironmentState
    registry: Registry
    live: LiveState | None  # None when Serve could not be read (then `error` says why)
    head: str | None = None  # the branch head's commit, when Git could be read
    desired: DesiredRevision | None = None  # the head's desired state, when it could be read
    error: ServeopsError | None = None  # why the head (or Serve) could not be read
    skipped: bool = False  # the head failed before and is not attempted again

    @property
    def environment(self) -> str:
        return self.start.environment


def read(ctx: PassContext, state: EnvironmentState, *, trigger: str, retry: bool) -> Observation:
    """What the pass sees; `state` is the environment's durable state, read under the lease."""
    env = ctx.environment
    started = ctx.store.now()
    start = PassStart(env, ctx.source.display, ctx.source.followed, None, ctx.actor, trigger)
    registry = ctx.registry()
    try:
        live = ctx.client.get()
    except ServeopsError as err:
        return Observation(start, started, state, registry, None, error=err)
    try:
        head = ctx.source.head()
    except ServeopsError as err:
        return Observation(start, started, state, registry, live, error=err)
    start = PassStart(env, start.repo, start.rev, head, start.actor, trigger)
    if state.last_failed_commit == head and not retry:
        return Observation(start, started, state, registry, live, head=head, skipped=True)
    admitted = state.admitted
    try:
        got = read_desired(
            Revision(str(ctx.source.path), head, env),
            registry,
            serving_code=ctx.settings.serving_code,
            pin_key=pin_key_of(ctx.hooks),
        )
    except ServeopsError as err:
        return Observation(start, started, state, registry, live, head=head, error=err)
    if admitted is not None and (admitted.commit, admitted.digest) == (got.commit, got.digest):
        revision = admitted  # the same desired state: keep the admitted record as it is
    else:
        revision = DesiredRevision(got.commit, got.digest, got.desired, got.specs, started)
    return Observation(start, started, state, registry, live, head=head, desired=revision)
