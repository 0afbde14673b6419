"""Model versions the controller proposed through Git (`model_proposals`): one row per
(environment, deployment, proposed model), so a version is proposed once however many passes
see it; one whose push or pull request failed is tried again at the next scan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import iso

ProposalStatus = Literal["proposed", "failed"]
KEEP_PROPOSALS = 50  # per deployment

_COLUMNS = (
    "environment, deployment, proposed, branch, commit_sha, pull_request, status, message, at"
)


@dataclass(frozen=True)
class ModelProposal:
    environment: str
    deployment: str
    proposed: str  # the model URI proposed
    branch: str
    commit: str  # the proposal's commit ('' when writing it failed)
    pull_request: str  # its URL ('' without a forge)
    status: ProposalStatus
    message: str  # what happened, or why it failed (redacted)
    at: dt.datetime


def _proposal(row: tuple[object, ...]) -> ModelProposal:
    env, dep, proposed, branch, sha, pull, status, message, at = row
    return ModelProposal(
        str(env),
        str(dep),
        str(proposed),
        str(branch),
        str(sha or ""),
        str(pull or ""),
        status,  # type: ignore[arg-type]
        str(message or ""),
        dt.datetime.fromisoformat(str(at)),
    )


class ModelProposals(StoreBase):
    def record_proposal(self, p: ModelProposal) -> None:
        """Store (or replace) the proposal of `p.proposed`; the newest KEEP_PROPOSALS kept."""
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO model_proposals ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.environment,
                    p.deployment,
                    p.proposed,
                    p.branch,
                    p.commit,
                    p.pull_request,
                    p.status,
                    p.message,
                    iso(p.at),
                ),
            )
            db.execute(
                "DELETE FROM model_proposals WHERE environment = ? AND deployment = ? AND "
                "rowid <= (SELECT rowid FROM model_proposals WHERE environment = ? AND "
                "deployment = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (p.environment, p.deployment, p.environment, p.deployment, KEEP_PROPOSALS),
            )

    def proposal(self, environment: str, deployment: str, proposed: str) -> ModelProposal | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM model_proposals WHERE environment = ? AND deployment = ? "
            "AND proposed = ?",
            (environment, deployment, proposed),
        )
        return _proposal(rows[0]) if rows else None

    def proposals(
        self, environment: str, deployment: str | None = None, limit: int = 20
    ) -> list[ModelProposal]:
        """Newest first (of one deployment, or all)."""
        where, params = "environment = ?", [environment]
        if deployment is not None:
            where += " AND deployment = ?"
            params.append(deployment)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM model_proposals WHERE {where} ORDER BY rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [_proposal(r) for r in rows]
