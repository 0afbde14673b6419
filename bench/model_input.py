"""The model server's request parsing: MLflow's `infer_and_parse_data` against serveops' fast
path (controller/serving/inputs.py), alone and followed by the model's predict, in one process.

The model is the demo's breast-cancer classifier (30 double columns) logged to a temporary
MLflow store; bodies are `dataframe_split` as clients send them. Both sides alternate within
each round and each figure is the median of the rounds. No Ray: what a model replica does per
request between receiving the body and answering.

    .venv/bin/python bench/model_input.py [--rounds 5] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.dev.demo import MODEL_NAME, sample_request, train_and_register
from controller.serving.inputs import InputParser


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    root = Path(tempfile.mkdtemp(prefix="serveops-bench-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = train_and_register(uri, root / "artifacts")[0]
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    schema = model.metadata.get_input_schema()
    parser = InputParser(schema)

    for rows in (1, 8):
        body = sample_request(rows)
        sides: dict[str, Callable[[], Any]] = {
            "mlflow parse": lambda b=body: infer_and_parse_data(b, schema),
            "fast parse": lambda b=body: parser.parse(b),
            "mlflow parse + predict": lambda b=body: model.predict(infer_and_parse_data(b, schema)),
            "fast parse + predict": lambda b=body: model.predict(parser.parse(b)),
        }
        results: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                results[name].append(
                    per_call_us(sides[name], args.calls // (4 if "+" in name else 1))
                )
        med = {name: statistics.median(v) for name, v in results.items()}
        print(f"{rows} row(s), {args.rounds} rounds, medians:")
        for name, value in med.items():
            print(f"  {name:24s} {value:8.0f} us per request")
        print(
            f"  parse: fast / mlflow {med['fast parse'] / med['mlflow parse']:.2f}; "
            f"parse + predict: fast / mlflow "
            f"{med['fast parse + predict'] / med['mlflow parse + predict']:.2f}"
        )


if __name__ == "__main__":
    main()
