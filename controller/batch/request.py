"""What the controller hands a run, and what the run answers: the contract between the
controller (controller/batch/step.py) and the program on the cluster (controller/batch/job.py).

The request travels as the job's one argument (URL-safe base64 of JSON: safe in a shell
entrypoint); the result comes back as the last `SERVEOPS_RESULT {json}` line of the job's log.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.spec.batch import BatchInput, BatchOutput, BatchResources, Promotion

RESULT_PREFIX = "SERVEOPS_RESULT "
# While it runs, the job prints `SERVEOPS_PROGRESS {"rows": n, "total": m}` now and then.
PROGRESS_PREFIX = "SERVEOPS_PROGRESS "
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESULT_BYTES = 16 * 1024
RunStatus = Literal["succeeded", "rejected", "failed"]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str
    deployment: str
    run_key: str = Field(description="The scheduled time (UTC, 20261202T020000Z) or manual-<t>.")
    attempt: int = 0
    commit: str
    model_uri: str = Field(description="models:/<name>/<version>: always pinned.")
    previous_model_uri: str | None = Field(
        default=None, description="The version that produced the last committed run, if other."
    )
    tracking_uri: str | None = None
    input: BatchInput
    output: BatchOutput
    resources: BatchResources
    promotion: Promotion

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode()

    @classmethod
    def decode(cls, text: str) -> RunRequest:
        if len(text) > MAX_REQUEST_BYTES:
            raise ValueError(f"request larger than {MAX_REQUEST_BYTES} bytes")
        return cls.model_validate_json(base64.urlsafe_b64decode(text.encode()))


class RunResult(BaseModel):
    # Fields this controller does not know are ignored: the job on the cluster may run a newer
    # serveops than the controller reading its result (seen: a field added to the result made
    # an older reader count a run that succeeded as failed).
    model_config = ConfigDict(extra="ignore")

    status: RunStatus
    message: str = ""
    rows: int | None = None
    output: str | None = None  # the committed run's folder
    agreement: float | None = None  # the promotion sample's, when the version changed
    duration_s: float | None = None
    # The promotion sample's comparison (the simulator's output checks and per-row latency),
    # left out of the line when it would not fit; the manifest keeps it whole.
    comparison: dict[str, Any] | None = None

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The comparison's output checks (none when it was left out or did not run)."""
        return list((self.comparison or {}).get("checks", []))

    def line(self) -> str:
        text = RESULT_PREFIX + self.model_dump_json()
        if len(text) > MAX_RESULT_BYTES - 1 and self.comparison is not None:
            return self.model_copy(update={"comparison": None}).line()
        return text


def parse_result(logs: str) -> RunResult | None:
    """The last result line of a job's log; None when there is none (killed, crashed)."""
    at = logs.rfind(RESULT_PREFIX)
    if at < 0:
        return None
    line = logs[at + len(RESULT_PREFIX) :].split("\n", 1)[0]
    if len(line) > MAX_RESULT_BYTES:
        return None
    try:
        return RunResult.model_validate(json.loads(line))
    except ValueError:
        return None


class Progress(BaseModel):
    """Rows written to the run's staging folder so far, of the input's rows (None: unknown
    without reading the whole input, e.g. CSV)."""

    rows: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)

    def line(self) -> str:
        return PROGRESS_PREFIX + self.model_dump_json()


def parse_progress(logs: str) -> Progress | None:
    """The last progress line of a job's log, if any."""
    at = logs.rfind(PROGRESS_PREFIX)
    if at < 0:
        return None
    line = logs[at + len(PROGRESS_PREFIX) :].split("\n", 1)[0]
    if len(line) > 200:
        return None
    try:
        return Progress.model_validate(json.loads(line))
    except ValueError:
        return None
