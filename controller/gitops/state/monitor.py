"""Drift reports per deployment and window, and the drift episodes alerts are sent for.

A report is stored once per (environment, deployment, window end): a pass that judges the same
window again (a controller restarted mid-pass) replaces it rather than adding a row. An episode
is open from the first drifted window until the first healthy one, so an alert goes out once
when it opens and once when it closes, however many passes and windows it spans.
"""

from __future__ import annotations

import datetime as dt

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import iso
from controller.monitor.drift_report import DriftReport

KEEP_REPORTS = 1000  # per deployment: about six weeks of hourly windows


class MonitorReports(StoreBase):
    def record_drift(self, report: DriftReport) -> None:
        env, name = report.environment, report.deployment
        with self._transaction() as db:
            db.execute(
                "INSERT INTO monitor_reports (environment, deployment, window_end, status, "
                "report_json) VALUES (?, ?, ?, ?, ?) ON CONFLICT (environment, deployment, "
                "window_end) DO UPDATE SET status = excluded.status, "
                "report_json = excluded.report_json",
                (env, name, iso(report.window_end), report.status, report.to_json()),
            )
            db.execute(
                "DELETE FROM monitor_reports WHERE environment = ? AND deployment = ? AND id <= "
                "(SELECT id FROM monitor_reports WHERE environment = ? AND deployment = ? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (env, name, env, name, KEEP_REPORTS),
            )

    def last_drift_window(self, environment: str, deployment: str) -> dt.datetime | None:
        """The end of the newest window judged for the deployment."""
        rows = self._read(
            "SELECT MAX(window_end) FROM monitor_reports WHERE environment = ? AND deployment = ?",
            (environment, deployment),
        )
        return dt.datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def latest_drift(self, environment: str) -> dict[str, DriftReport]:
        """The newest report of each deployment of `environment`."""
        rows = self._read(
            "SELECT deployment, report_json FROM monitor_reports WHERE id IN (SELECT MAX(id) "
            "FROM monitor_reports WHERE environment = ? GROUP BY deployment) ORDER BY deployment",
            (environment,),
        )
        return {name: DriftReport.from_json(text) for name, text in rows}

    def drift_history(
        self, environment: str, deployment: str, limit: int = 50
    ) -> list[DriftReport]:
        """The deployment's reports, newest first."""
        rows = self._read(
            "SELECT report_json FROM monitor_reports WHERE environment = ? AND deployment = ? "
            "ORDER BY id DESC LIMIT ?",
            (environment, deployment, limit),
        )
        return [DriftReport.from_json(text) for (text,) in rows]

    def drift_episode(self, environment: str, deployment: str) -> dt.datetime | None:
        """Since when the deployment drifts (None: it does not)."""
        rows = self._read(
            "SELECT since FROM monitor_episodes WHERE environment = ? AND deployment = ?",
            (environment, deployment),
        )
        return dt.datetime.fromisoformat(rows[0][0]) if rows else None

    def set_drift_episode(
        self, environment: str, deployment: str, since: dt.datetime | None
    ) -> bool:
        """Open (`since`) or close (None) the episode; True when that changed anything, so
        of two controllers racing only one alerts."""
        with self._transaction() as db:
            if since is None:
                cur = db.execute(
                    "DELETE FROM monitor_episodes WHERE environment = ? AND deployment = ?",
                    (environment, deployment),
                )
            else:
                cur = db.execute(
                    "INSERT OR IGNORE INTO monitor_episodes (environment, deployment, since) "
                    "VALUES (?, ?, ?)",
                    (environment, deployment, iso(since)),
                )
            return cur.rowcount > 0
