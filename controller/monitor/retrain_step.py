"""Retraining requests in the controller pass: queued when a drift episode opens, sent, and
retried with backoff (1 min doubling to 1 h, at most MAX_ATTEMPTS) until one goes through.

The queue is the state store's `monitor_triggers`, so a request goes out once per episode
whatever restarts or controllers, and a failing target costs each pass at most
MAX_SENDS_PER_PASS bounded calls: it never blocks or fails the pass.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable

from controller.gitops.context import PassContext
from controller.gitops.notify import Event
from controller.gitops.state import Trigger
from controller.monitor.drift_report import DriftReport
from controller.monitor.retrain import RetrainFailed, retrain_payload, send_retrain
from controller.redact import redact
from controller.spec.models import ModelDeployment

log = logging.getLogger("serveops.controller")

FIRST_BACKOFF_S = 60.0
MAX_BACKOFF_S = 3600.0
MAX_ATTEMPTS = 8
MAX_SENDS_PER_PASS = 5


def backoff(attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failure: 1 min, 2, 4, ... at most 1 h."""
    return dt.timedelta(seconds=min(FIRST_BACKOFF_S * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


def unknown_targets(ctx: PassContext, spec: ModelDeployment) -> list[str]:
    """Retrain targets the deployment names that this controller does not configure."""
    mon = spec.spec.monitoring
    return ctx.settings.retrain.unknown(mon.actions.retrain) if mon is not None else []


def queue_retraining(ctx: PassContext, spec: ModelDeployment, report: DriftReport) -> int:
    """A request per configured target for the episode `report` opened; how many were new."""
    mon = spec.spec.monitoring
    if mon is None or not mon.actions.retrain:
        return 0
    payload = json.dumps(retrain_payload(report))
    added = 0
    for name in mon.actions.retrain:
        if ctx.settings.retrain.target(name) is None:
            continue  # said in the report's problems and the log (step.py)
        if ctx.store.add_trigger(
            report.environment, report.deployment, name, report.window_end, payload
        ):
            added += 1
    return added


def send_due(
    ctx: PassContext, notify: Callable[[Event, str], None] | None = None
) -> list[tuple[Trigger, str]]:
    """Send the environment's due requests; (trigger, outcome) for each one tried. `notify`
    (event, deployment) hears of a request given up on; default: the controller's notifier."""
    store, env, config = ctx.store, ctx.environment, ctx.settings.retrain
    done: list[tuple[Trigger, str]] = []
    # The step's budget again for sending: what does not fit waits for the next pass.
    deadline = time.monotonic() + ctx.settings.monitor_budget_s
    for trigger in store.due_triggers(env, MAX_SENDS_PER_PASS):
        if time.monotonic() >= deadline:
            break
        target = config.target(trigger.target)
        try:
            if target is None:
                raise RetrainFailed(
                    f"retrain target {trigger.target!r} is no longer configured (--retrain-target)"
                )
            said = send_retrain(target, json.loads(trigger.payload_json), config)
        except RetrainFailed as err:
            error = redact(str(err))
        except Exception as err:  # a bug must not stop the pass
            log.exception("%s: retraining request to %r failed", env, trigger.target)
            error = redact(f"{type(err).__name__}: {err}")
        else:
            store.record_trigger_attempt(trigger, status="sent")
            log.info("%s: retraining of %s requested (%s)", env, trigger.deployment, said)
            done.append((trigger, f"sent: {said}"))
            continue
        attempts = trigger.attempts + 1
        if attempts >= MAX_ATTEMPTS or target is None:
            store.record_trigger_attempt(trigger, status="failed", error=error)
            message = (
                f"retraining request for {trigger.deployment} to {trigger.target!r} given up "
                f"after {attempts} attempt(s): {error}"
            )
            log.error("%s: %s", env, message)
            event = Event("retrain_failed", env, None, message, store.now(), ctx.source.display)
            try:
                (notify or (lambda e, _d: ctx.notifier.notify(e)))(event, trigger.deployment)
            except Exception:
                log.exception("%s: notifying retrain_failed failed", env)
            done.append((trigger, f"failed: {error}"))
        else:
            wait = backoff(attempts)
            store.record_trigger_attempt(
                trigger, status="pending", error=error, next_attempt=store.now() + wait
            )
            log.warning(
                "%s: retraining request for %s to %r failed (attempt %d, next in %s): %s",
                env,
                trigger.deployment,
                trigger.target,
                attempts,
                wait,
                error,
            )
            done.append((trigger, f"retry: {error}"))
    return done
