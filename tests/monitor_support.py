"""Recordings and references for monitoring tests, generated with fixed seeds."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("f0", "f1", "f2", "f3", "f4")


def sample(n: int, seed: int, shift: float = 0.0, shifted: int = 0) -> np.ndarray:
    """`n` rows of independent standard normals; the first `shifted` columns moved by `shift`."""
    x = np.random.default_rng(seed).standard_normal((n, len(FEATURES)))
    x[:, :shifted] += shift
    return x


def write_reference(path: Path, rows: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FEATURES)
        w.writerows(rows.tolist())
    return path


def write_recording(
    directory: Path,
    deployment: str,
    rows: np.ndarray,
    start: float,
    end: float,
    *,
    version: str = "1",
    name: str = "0001",
    per_request: int = 1,
    outputs: Sequence[Any] | None = None,
    request_ids: Sequence[str] | None = None,
) -> Path:
    """A router recording: requests of `per_request` rows spread evenly over [start, end);
    with `outputs`, request i answered `{"predictions": outputs[i]}`; with `request_ids`,
    request i carries `request_id` request_ids[i]."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{deployment}--20260301T000000Z-test-{name}.jsonl"
    chunks = [rows[i : i + per_request] for i in range(0, len(rows), per_request)]
    step = (end - start) / max(len(chunks), 1)
    with path.open("w") as f:
        f.write(json.dumps({"kind": "header", "format": "serveops-traffic/v1"}) + "\n")
        for i, chunk in enumerate(chunks):
            record = {
                "id": f"t-{i}",
                "ts": start + i * step,
                "route": f"/{deployment}",
                "method": "POST",
                "headers": {},
                "body": {"dataframe_split": {"columns": list(FEATURES), "data": chunk.tolist()}},
                "response": {"status": 200, "latency_ms": 1.0, "version": version},
            }
            if outputs is not None:
                record["response"]["body"] = {"predictions": outputs[i]}
            if request_ids is not None:
                record["request_id"] = request_ids[i]
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path
