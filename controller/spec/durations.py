"""Durations, one grammar for deployment files and the command line.

`500ms`, `10s`, `2m`, `1h`, compounds such as `1m30s`, decimals (`0.5s`), or a bare number of
seconds (`30`).
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^\s*(([0-9]+(\.[0-9]+)?(ms|s|m|h))+|[0-9]+(\.[0-9]+)?)\s*$"
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError when it is not a duration."""
    if not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 2m, 1h, 1m30s)")
    parts = _PART.findall(text)
    if not parts:
        return float(text)
    return sum(float(n) * _UNIT_S[u] for n, u in parts)
