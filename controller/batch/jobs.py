"""The Ray Jobs REST API on the dashboard (`/api/jobs/`), behind a small interface: RayJobs in
production, a fake in tests. Every call has a timeout; logs are read no further than a limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from controller.errors import ServeopsError, Unreachable

JOBS_PATH = "/api/jobs/"
MAX_LOG_BYTES = 4 * 1024 * 1024
JobStatus = Literal["PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED", "UNKNOWN"]
TERMINAL: frozenset[str] = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: JobStatus
    message: str = ""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class JobSpec:
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    entrypoint_num_cpus: float = 0.0


class JobsAPI(Protocol):
    address: str

    def submit(self, job: JobSpec) -> bool:
        """Submit; False when a job with this submission id exists already (not an error:
        it is the same run, submitted before)."""
        ...

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's status; None when Ray knows no such job."""
        ...

    def logs(self, submission_id: str) -> str:
        """The job's log, at most MAX_LOG_BYTES of its end."""
        ...

    def stop(self, submission_id: str) -> None: ...


class RayJobs:
    """The dashboard at `address` (the one serveops already talks Serve to)."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self._client = httpx.Client(
            base_url=self.address,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RayJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            return self._client.request(method, path, json=body)
        except httpx.TransportError as err:
            raise Unreachable(
                f"cannot reach the Ray dashboard at {self.address} ({type(err).__name__}: {err})"
            ) from None

    def submit(self, job: JobSpec) -> bool:
        body = {
            "entrypoint": job.entrypoint,
            "submission_id": job.submission_id,
            "runtime_env": job.runtime_env,
            "metadata": job.metadata,
            "entrypoint_num_cpus": job.entrypoint_num_cpus,
        }
        response = self._request("POST", JOBS_PATH, body)
        if response.status_code >= 400:
            if "already exists" in response.text:
                return False
            raise ServeopsError(
                f"Ray refused job {job.submission_id} (HTTP {response.status_code}): "
                f"{response.text.strip()[:1000]}"
            )
        return True

    def info(self, submission_id: str) -> JobInfo | None:
        response = self._request("GET", f"{JOBS_PATH}{submission_id}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise ServeopsError(
                f"Ray answered HTTP {response.status_code} for job {submission_id}: "
                f"{response.text.strip()[:1000]}"
            )
        data = response.json()
        status = str(data.get("status", "UNKNOWN"))
        known = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
        return JobInfo(
            submission_id,
            status if status in known else "UNKNOWN",  # type: ignore[arg-type]
            str(data.get("message") or "")[:2000],
        )

    def logs(self, submission_id: str) -> str:
        """Streamed and cut: a job that logs gigabytes costs the controller MAX_LOG_BYTES."""
        chunks: list[bytes] = []
        size = 0
        try:
            with self._client.stream("GET", f"{JOBS_PATH}{submission_id}/logs") as response:
                if response.status_code >= 400:
                    return ""
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    while size - len(chunks[0]) > MAX_LOG_BYTES:  # keep the tail
                        size -= len(chunks.pop(0))
        except httpx.TransportError as err:
            raise Unreachable(f"cannot read the log of job {submission_id}: {err}") from None
        text = b"".join(chunks)[-MAX_LOG_BYTES:].decode("utf-8", "replace")
        # The body is JSON ({"logs": "..."}); a cut one is read as plain text.
        import json

        try:
            return str(json.loads(text).get("logs", ""))
        except ValueError:
            return text.replace("\\n", "\n")

    def stop(self, submission_id: str) -> None:
        self._request("POST", f"{JOBS_PATH}{submission_id}/stop")
