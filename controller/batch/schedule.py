"""Cron schedules: when runs of a batch deployment fall due. Pure; cronsim parses and iterates
(DST-aware, strict about bad fields)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from cronsim import CronSim, CronSimError

# A cron expression that never matches (`0 0 30 2 *`) would make cronsim search for years.
MAX_LOOKAHEAD = dt.timedelta(days=366 * 5)


def check_cron(expr: str) -> None:
    """Raise ValueError naming what is wrong with a five-field cron expression."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    try:
        it = CronSim(expr, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        first = next(it)
    except (CronSimError, StopIteration) as err:
        raise ValueError(f"invalid cron expression {expr!r}: {err or 'never matches'}") from None
    if first - dt.datetime(2000, 1, 1, tzinfo=dt.UTC) > MAX_LOOKAHEAD:
        raise ValueError(f"cron expression {expr!r} falls due less than once in five years")


def next_after(expr: str, timezone: str, moment: dt.datetime) -> dt.datetime:
    """The first time strictly after `moment` the schedule falls due, in UTC."""
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
    return next(CronSim(expr, local)).astimezone(dt.UTC)


def last_at_or_before(expr: str, timezone: str, moment: dt.datetime) -> dt.datetime:
    """The latest time at or before `moment` the schedule fell due, in UTC."""
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone)) + dt.timedelta(seconds=1)
    return next(CronSim(expr, local, reverse=True)).astimezone(dt.UTC)
