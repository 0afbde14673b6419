"""Logs of long-running commands: quiet and useful by default, JSON for log shippers.

serveops' own loggers (`serveops.*`) log one line per decision at INFO; libraries (httpx,
httpcore, git, urllib3) only warn, so no line is written per HTTP call. `-v` raises serveops'
own level to DEBUG and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from controller.errors import BadInput
from controller.redact import redact_logs

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    if fmt not in LOG_FORMATS:
        raise BadInput(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    redact_logs([handler])  # every line, GitPython's and MLflow's too
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("serveops").setLevel(logging.DEBUG if verbose else logging.INFO)
