"""What a read of recordings keeps (`Selection`) and how far it may go (`ReadLimits`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Selection:
    """Which records a read keeps: timestamped in [start, end) epoch seconds when a window is
    given, answered by `version` when one is given. The default keeps every record."""

    start: float | None = None
    end: float | None = None
    version: str | None = None

    @property
    def window(self) -> tuple[float, float] | None:
        if self.start is None or self.end is None:
            return None
        return (self.start, self.end)

    def accepts(self, record: dict[str, Any]) -> bool:
        window = self.window
        if window is not None:
            ts = record.get("ts")
            kind = type(ts)  # type(), not isinstance: this runs for every record read
            if (kind is not float and kind is not int) or not window[0] <= ts < window[1]:  # type: ignore[operator]
                return False
        if self.version is None:
            return True
        response = record.get("response")
        answered = response.get("version") if isinstance(response, dict) else None
        return answered is not None and str(answered) == self.version


@dataclass(frozen=True)
class ReadLimits:
    max_line_bytes: int = 1 * MIB
    max_rows: int = 200_000
    max_bytes: int = 2048 * MIB
    max_files: int = 1000
    deadline_s: float = 30.0
