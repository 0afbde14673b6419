"""A model replica's warm-up: predictions run while it loads, before Serve gives it traffic.

A model's first predictions are slower than the rest (lazy imports inside the flavour, the
signature's first enforcement, first-touch memory: 18 ms against 3 to 5 ms for the demo's
logistic regression; more for bigger models). Serve marks a replica RUNNING only once its
constructor returned, so predictions run there are paid before any user request reaches it: a
canary's first users, and the first users of a replica autoscaling adds, meet a warm model.
Like Triton's `model_warmup`, but with no sample to configure: the model's logged input
example, else one row of zeros shaped by its signature. A model that cannot be warmed (no
example, no column signature, a predict that raises on zeros) loads anyway; the replica's log
says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

DEFAULT_WARMUP_PREDICTIONS = 3
MAX_WARMUP_PREDICTIONS = 100

# MLflow column types a zero row can stand for (strings, bytes, datetimes: no neutral value).
_ZERO_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
}


@dataclass(frozen=True)
class Warmup:
    """What a replica's warm-up did, for its log."""

    predictions: int
    source: str  # "input example", "signature zeros", or why there was none
    first_ms: float = 0.0
    last_ms: float = 0.0
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"warm-up skipped after {self.predictions} predictions: {self.error}"
        if self.predictions == 0:
            return f"no warm-up ({self.source})"
        return (
            f"warmed with {self.predictions} predictions on the {self.source}: first "
            f"{self.first_ms:.1f} ms, last {self.last_ms:.1f} ms"
        )


def warmup_input(model: Any) -> tuple[Any, str]:
    """(input, where it came from) for `model.predict`, or (None, why not)."""
    try:
        example = model.input_example
    except Exception as err:  # a corrupt or unreadable example must not stop the load
        example, why = None, f"input example unreadable: {err.__class__.__name__}"
    else:
        why = "no input example"
    if example is not None:
        return example, "input example"
    schema = model.metadata.get_input_schema()
    if schema is None:
        return None, f"{why} and no signature"
    if schema.is_tensor_spec():
        return None, f"{why}; a tensor signature has no zero row"
    import pandas as pd

    columns: dict[str | int, Any] = {}
    for i, col in enumerate(schema.inputs):
        type_name = str(getattr(col.type, "name", col.type))
        dtype = _ZERO_DTYPES.get(type_name)
        if dtype is None:
            return None, f"{why}; column {col.name or i} of type {type_name} has no zero"
        columns[col.name if col.name is not None else i] = pd.Series([0], dtype=dtype)
    return pd.DataFrame(columns), "signature zeros"


def warm(model: Any, predictions: int = DEFAULT_WARMUP_PREDICTIONS) -> Warmup:
    """Run `predictions` predictions on the model's warm-up input; never raises."""
    if predictions <= 0:
        return Warmup(0, "turned off")
    data, source = warmup_input(model)
    if data is None:
        return Warmup(0, source)
    times: list[float] = []
    for _ in range(min(predictions, MAX_WARMUP_PREDICTIONS)):
        started = time.perf_counter()
        try:
            model.predict(data)
        except Exception as err:  # zeros a model refuses: it still serves real requests
            return Warmup(len(times), source, error=f"{err.__class__.__name__}: {err}"[:300])
        times.append((time.perf_counter() - started) * 1000.0)
    return Warmup(len(times), source, times[0], times[-1])
