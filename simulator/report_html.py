"""report.html: a self-contained page, the markdown's facts plus plots as embedded PNGs
(matplotlib is imported only here, and only when a page is drawn)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from simulator.checks import Side
from simulator.report import SimulationReport
from simulator.report_markdown import ICON, threshold_rows


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def to_html(report: SimulationReport, sides: dict[str, Side] | None = None) -> str:
    """A self-contained page: the markdown's facts plus plots as embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: list[tuple[str, str]] = []
    if sides:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, s in sides.items():
            x = np.sort(s.latency_ms)
            ax.plot(x, np.arange(1, x.size + 1) / max(x.size, 1), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency from intended send time (ms)")
        ax.set_ylabel("share of requests")
        ax.legend()
        ax.grid(alpha=0.3)
        images.append(("Latency CDF", _png(fig)))
        plt.close(fig)
    for c in report.checks:
        if c.name == "agreement" and c.figures.get("flip_matrix"):
            labels = c.figures["labels"]
            m = np.array([[c.figures["flip_matrix"][f"{a}->{b}"] for b in labels] for a in labels])
            fig, ax = plt.subplots(figsize=(3.5, 3))
            ax.imshow(m, cmap="Blues")
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, str(m[i, j]), ha="center", va="center")
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_xlabel("candidate")
            ax.set_ylabel("baseline")
            images.append(("Agreement (flip matrix)", _png(fig)))
            plt.close(fig)
        if c.name == "input_drift" and c.figures.get("features"):
            feats = c.figures["features"]
            names = sorted(feats, key=lambda k: feats[k]["psi"], reverse=True)[:15]
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.barh(names[::-1], [feats[k]["psi"] for k in names[::-1]])
            ax.set_xlabel("PSI vs reference")
            images.append(("Input drift per feature", _png(fig)))
            plt.close(fig)
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{ICON[c.status]} {c.status}</td>"
        f"<td>{'yes' if c.gating else 'no'}</td><td>{html.escape(c.reason)}</td></tr>"
        for c in report.checks
    )
    imgs = "".join(
        f'<h3>{html.escape(t)}</h3><img src="data:image/png;base64,{b64}" alt="{html.escape(t)}">'
        for t, b64 in images
    )
    thresholds = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(src)}</td></tr>"
        for n, v, src in threshold_rows(report)
    )
    attribution = "".join(
        f"<p><small>Traffic: {html.escape(a)}</small></p>"
        for a in report.meta.get("attribution") or []
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>serveops simulation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{border:1px solid #ccc;padding:4px 8px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>Simulation: {ICON[report.verdict]} {report.verdict}</h1>"
        f"<p>{html.escape(report.reason)}</p><table><tr><th>check</th><th>status</th>"
        f"<th>gating</th><th>reason</th></tr>{rows}</table>{imgs}"
        "<h3>Thresholds</h3><table><tr><th>threshold</th><th>value</th><th>from</th></tr>"
        f"{thresholds}</table>"
        f"<h3>report.json</h3><pre>{html.escape(report.model_dump_json(indent=2)[:20000])}</pre>"
        f"{attribution}</body></html>"
    )
