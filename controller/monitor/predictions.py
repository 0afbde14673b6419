"""The model's outputs out of recorded responses: what prediction drift and live quality read.

MLflow's scoring server answers `{"predictions": [...]}` (older servers: a bare list; some
flavours `{"outputs": [...]}`), one item per input row. An item is a number (a regressor's value
or a class index), a string or boolean (a class label), an object holding one of those under
`prediction`/`label` (with a `probability`/`score` kept for ROC AUC), or a list of numbers
(class probabilities: the label is the index of the largest, the score the last one's, which
for two classes is the positive class's). Anything else is counted as unreadable. Only answered
requests (status 200) are read: an error response holds no prediction.

Responses come from the model, which a pull request chose: items are capped per record
(`MAX_ITEMS`), labels are cut to `MAX_LABEL` characters and distinct labels to `MAX_CLASSES`
(the rest counted under `OTHER`), so a model answering with unique strings cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PREDICTION = "__prediction__"  # the name prediction drift goes by in reports and gauges
OTHER = "(other)"  # labels beyond MAX_CLASSES
MAX_CLASSES = 50
MAX_LABEL = 64
MAX_ITEMS = 100_000  # predictions read from one response
CHUNK = 16_384  # numbers buffered before they go to the sink


@dataclass(frozen=True)
class Prediction:
    """One output: a number, or a class label; with the positive class's score when given."""

    value: float | str
    score: float | None = None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def item_prediction(item: Any) -> Prediction | None:
    """One response item as a prediction; None when it is no shape this reads."""
    if isinstance(item, bool):
        return Prediction(str(item).lower())
    if isinstance(item, str):
        return Prediction(item[:MAX_LABEL])
    number = _number(item)
    if number is not None:
        return Prediction(number)
    if isinstance(item, dict):
        inner = next((item[k] for k in ("prediction", "label") if k in item), None)
        score = next((_number(item[k]) for k in ("probability", "score") if k in item), None)
        found = (
            item_prediction(inner) if inner is not None and not isinstance(inner, dict) else None
        )
        return Prediction(found.value, score) if found is not None else None
    if isinstance(item, list) and 2 <= len(item) <= MAX_CLASSES:
        probs = [_number(v) for v in item]
        if any(p is None for p in probs):
            return None
        values = [p for p in probs if p is not None]
        return Prediction(float(int(np.argmax(values))), values[-1])
    return None


def record_predictions(record: dict[str, Any]) -> tuple[list[Prediction], int] | None:
    """The predictions of one recorded exchange and how many items were unreadable; None
    when the record holds no answer (no response body, or not status 200)."""
    response = record.get("response")
    if not isinstance(response, dict):
        return None
    status = response.get("status")
    if status is not None and status != 200:
        return None
    body = response.get("body")
    items = body
    if isinstance(body, dict):
        items = next((body[k] for k in ("predictions", "outputs") if k in body), None)
    if not isinstance(items, list):
        return None
    out: list[Prediction] = []
    bad = 0
    for item in items[:MAX_ITEMS]:
        p = item_prediction(item)
        if p is None:
            bad += 1
        else:
            out.append(p)
    return out, bad


@dataclass
class PredictionColumn:
    """The predictions read so far: numbers (kept, or handed to `sink` a chunk at a time),
    label counts (at most MAX_CLASSES distinct), and unreadable items."""

    numbers: list[float] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    answered: int = 0  # records with an answer
    sink: Any = None  # with `add_prediction(values)`: numbers are streamed, not kept
    as_labels: bool = False  # numbers counted as labels (a categorical reference's window)
    max_kept: int = 1_000_000  # numbers kept without a sink; beyond, counted in `dropped`
    dropped: int = 0

    def __call__(self, record: dict[str, Any]) -> None:
        got = record_predictions(record)
        if got is None:
            return
        predictions, bad = got
        self.answered += 1
        self.unreadable += bad
        for p in predictions:
            self._add(p.value)
        if self.sink is not None and len(self.numbers) >= CHUNK:
            self.flush()

    def add_value(self, value: float | str) -> None:
        """One prediction read from elsewhere than a record (a reference file's column)."""
        self.answered += 1
        self._add(value)

    def _add(self, value: float | str) -> None:
        if isinstance(value, str) or self.as_labels:
            self._count(value if isinstance(value, str) else _label_of(value))
        elif self.sink is None and len(self.numbers) >= self.max_kept:
            self.dropped += 1
        else:
            self.numbers.append(value)

    def _count(self, label: str) -> None:
        labels = self.labels
        key = label if label in labels or len(labels) < MAX_CLASSES else OTHER
        labels[key] = labels.get(key, 0) + 1

    def flush(self) -> None:
        if self.sink is not None and self.numbers:
            self.sink.add_prediction(np.asarray(self.numbers, dtype=np.float64))
            self.numbers.clear()

    @property
    def kind(self) -> str | None:
        """`numeric`, `categorical` (any label read: numbers then count as labels too), or None."""
        if self.labels:
            return "categorical"
        return "numeric" if self.numbers else None

    def label_counts(self) -> dict[str, int]:
        """Every prediction as a label (numbers as their text, `1.0` as `1`)."""
        out = dict(self.labels)
        for v in self.numbers:
            key = _label_of(v)
            key = key if key in out or len(out) < MAX_CLASSES else OTHER
            out[key] = out.get(key, 0) + 1
        return out


def _label_of(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)
