"""The rate tests' last look: spend at the replay's maximum the alpha the earlier looks left.

The mixture SPRT (`confseq.rate_above` / `rate_below`) keeps alpha however often it is looked
at, so on the judge's grid of looks (every 100 pairs) and truncated at a maximum it spends much
less: for a 1% limit, 19 looks up to 2,000 rows cross its fail boundary with probability 1.4%,
not 5%, and a candidate at twice the limit reaches the maximum undecided in about 9% of runs.
A group sequential design closes instead with a final critical value that spends the remainder
(the idea of alpha spending, Lan and DeMets, Biometrika 1983): the exact probability that the
earlier boundaries are crossed at the limit p0 comes from the recursion of Armitage, McPherson
and Rowe ("Repeated significance tests on accumulating data", JRSS A 1969), which for a count
of Bernoulli rows is a sum of binomial convolutions (Jennison and Turnbull, "Group Sequential
Methods with Applications to Clinical Trials", 2000, ch. 12 and 19). The last look fails the
rate at the smallest count whose probability, jointly with not having failed earlier, is within
alpha minus what the earlier looks spent; and passes it likewise on the other side.

Why the error stays at most alpha for every rate on the null's side, however the run stops:
- each side's region is an upper (fail) or lower (pass) set of count paths, so its probability
  grows (shrinks) with the true rate and is largest at p0 itself (a coupling of the rows);
- the rows compared at each look are set by errors and output sizes, not by which rows differ,
  so the computation conditions on them;
- a run stopped earlier (another check failing, all passing, the live watcher) only removes
  chances to reject; the last look is taken only at the replay's maximum.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from simulator.confseq import FloatArray, rate_above, rate_below

# Binomial mass below this at either end of a step, or of the running distribution, is dropped
# and counted as if it had crossed (conservative): it keeps the vectors about +-10 sd wide.
_TAIL = 1e-18


@dataclass(frozen=True)
class FinalLook:
    """Critical counts at the last look, and the exact error rates of the whole design at p0."""

    fail_at: int  # fail when at least this many rows differ at the last look
    pass_at: int  # pass when at most this many do (-1: never)
    fail_level: float  # P(fail at any look, the last included | rate exactly p0)
    pass_level: float  # P(pass at any look, the last included | rate exactly p0)


def first_above(r: int, p0: float, alpha: float, width: float = 1.0) -> int:
    """The fewest rows of r whose mixture SPRT says 'above p0' (r + 1: none). The likelihood
    ratio grows with the count and is at most 1 at or below p0 r, so the search starts there."""
    if r <= 0 or not rate_above(r, r, p0, alpha, width):
        return r + 1
    lo = math.floor(p0 * r)  # known not to reject
    step = max(1, math.ceil(math.sqrt(r * p0 * (1 - p0))))
    hi = min(r, lo + step)
    while not rate_above(hi, r, p0, alpha, width):  # gallop: stay near the mode, where it's cheap
        lo, step = hi, 2 * step
        hi = min(r, lo + step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if rate_above(mid, r, p0, alpha, width) else (mid, hi)
    return hi


def last_below(r: int, p0: float, alpha: float) -> int:
    """The most rows of r whose mixture SPRT says 'below p0' (-1: none)."""
    if r <= 0 or not rate_below(0, r, p0, alpha):
        return -1
    hi = math.ceil(p0 * r)  # known not to accept
    step = max(1, math.ceil(math.sqrt(r * p0 * (1 - p0))))
    lo = max(0, hi - step)
    while not rate_below(lo, r, p0, alpha):
        hi, step = lo, 2 * step
        lo = max(0, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if rate_below(mid, r, p0, alpha) else (lo, mid)
    return lo


class _Counts:
    """The sub-distribution of the count of differing rows over paths still alive on one side,
    as a vector from `offset`; `spent` is the mass that left it (crossed, or dropped as tiny)."""

    def __init__(self) -> None:
        self.offset, self.mass, self.spent = 0, np.ones(1), 0.0

    def add_rows(self, step: int, p0: float) -> None:
        if step <= 0:
            return
        lo, hi = int(stats.binom.ppf(_TAIL, step, p0)), int(stats.binom.isf(_TAIL, step, p0))
        lo, hi = max(lo - 1, 0), min(hi + 1, step)
        pmf: FloatArray = stats.binom.pmf(np.arange(lo, hi + 1), step, p0)
        self.spent += float(self.mass.sum()) * max(0.0, 1.0 - float(pmf.sum()))
        self.mass, self.offset = np.convolve(self.mass, pmf), self.offset + lo
        keep = np.nonzero(self.mass > _TAIL)[0]
        if keep.size == 0:
            self.spent += float(self.mass.sum())
            self.mass = np.zeros(1)
            return
        a, b = int(keep[0]), int(keep[-1]) + 1
        self.spent += float(self.mass[:a].sum() + self.mass[b:].sum())
        self.mass, self.offset = self.mass[a:b], self.offset + a

    def absorb_from(self, k: int) -> None:
        """Paths with at least k rows cross the fail boundary."""
        i = max(0, k - self.offset)
        self.spent += float(self.mass[i:].sum())
        self.mass[i:] = 0.0

    def absorb_to(self, k: int) -> None:
        """Paths with at most k rows cross the pass boundary."""
        i = min(self.mass.size, max(0, k + 1 - self.offset))
        self.spent += float(self.mass[:i].sum())
        self.mass[:i] = 0.0


@functools.lru_cache(maxsize=256)
def _final_look(rows: tuple[int, ...], p0: float, alpha: float, width: float) -> FinalLook:
    up, down = _Counts(), _Counts()
    prev = 0
    for j, r in enumerate(rows):
        up.add_rows(r - prev, p0)
        down.add_rows(r - prev, p0)
        prev = r
        if j == len(rows) - 1:
            break
        up.absorb_from(first_above(r, p0, alpha, width))
        down.absorb_to(last_below(r, p0, alpha))
    r = rows[-1]
    # fail_at: the smallest c with P(not failed before, count >= c) <= what is left
    # Counts beyond the vectors have no mass left alive (it crossed, or was dropped as spent).
    tail = np.cumsum(up.mass[::-1])[::-1]  # tail[i] = P(alive, count >= offset + i)
    ok = np.nonzero(tail <= alpha - up.spent)[0]
    fail_at = up.offset + (int(ok[0]) if ok.size else up.mass.size)
    # never stricter than the mSPRT itself (Ville: it alone keeps alpha, on any grid)
    fail_at = min(fail_at, first_above(r, p0, alpha, width))
    head = np.cumsum(down.mass)  # head[i] = P(alive, count <= offset + i)
    ok = np.nonzero(head <= alpha - down.spent)[0]
    pass_at = min(r, down.offset + (int(ok[-1]) if ok.size else -1))
    pass_at = max(pass_at, last_below(r, p0, alpha))
    fail_level = up.spent + float(up.mass[max(0, fail_at - up.offset) :].sum())
    pass_level = down.spent + float(down.mass[: max(0, pass_at + 1 - down.offset)].sum())
    return FinalLook(fail_at, pass_at, fail_level, pass_level)


def final_look(rows: Sequence[int], p0: float, alpha: float, width: float = 1.0) -> FinalLook:
    """Critical counts for the last of the looks at `rows` (cumulative rows compared at each
    look, the last at the replay's maximum), after mixture SPRTs at all the earlier ones.

    Fail at the last look when the count is at least `fail_at`, pass when at most `pass_at`;
    with the earlier looks' mSPRTs, each side errs with probability at most alpha at p0
    (`fail_level`, `pass_level`: the exact figures for this grid)."""
    if not 0 < p0 < 1:
        raise ValueError("p0 must lie strictly between 0 and 1")
    grid = tuple(int(r) for r in rows)
    if not grid or any(b < a for a, b in itertools.pairwise(grid)) or grid[0] < 0:
        raise ValueError("rows must be a nonempty, nondecreasing list of counts")
    return _final_look(grid, float(p0), float(alpha), float(width))
