"""Rows that break the model's signature: a declared input column absent, a column it does not
declare, or a value of the wrong type.

The signature is the MLflow model's (`MLmodel`'s `signature.inputs`, read with the reference of
kind `mlflow`); a signature without column names (tensors) cannot be checked by column and is
left out, with the reason in the report. Rows come from recorded requests, read as the drift
reader reads them (controller/monitor/features.py), with their values as sent. A null is not a
type error (the missing share measures it); a value of a type the signature does not name
(`datetime`, `binary`, ...) is not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.monitor.features import raw_rows

NUMERIC = frozenset({"double", "float", "long", "integer"})
MAX_NAMED = 5  # columns named per kind of violation; the rest only counted
MAX_SIGNATURE_COLUMNS = 4096


@dataclass(frozen=True)
class Signature:
    """The declared input columns: name -> MLflow type; and which may be left out."""

    columns: dict[str, str]
    optional: frozenset[str] = frozenset()


def signature_of(inputs: list[dict[str, Any]] | None) -> tuple[Signature | None, str]:
    """A signature from MLflow's `signature.inputs` (as `Schema.to_dict()` gives it), or None
    and why it cannot be checked."""
    if not inputs:
        return None, "the model logged no input signature"
    columns: dict[str, str] = {}
    optional: set[str] = set()
    for spec in inputs[:MAX_SIGNATURE_COLUMNS]:
        name = spec.get("name") if isinstance(spec, dict) else None
        kind = spec.get("type") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not isinstance(kind, str) or kind == "tensor":
            return None, "the model's signature has unnamed (tensor) inputs: not checked by column"
        columns[name] = kind
        if spec.get("required") is False:
            optional.add(name)
    return Signature(columns, frozenset(optional)), ""


def _fits(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind in NUMERIC:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return True  # datetime, binary, objects, arrays: not judged


@dataclass
class SchemaCheck:
    """Counts, over the records it is handed, the rows that break `signature`."""

    signature: Signature
    rows: int = 0
    violating: int = 0
    missing_column: int = 0  # rows without a required declared column
    extra_column: int = 0  # rows with a column the signature does not declare
    wrong_type: int = 0  # rows with a value of the wrong type
    named: dict[str, list[str]] = field(default_factory=dict)  # a few columns per kind

    def __call__(self, record: dict[str, Any]) -> None:
        for row in raw_rows(record.get("body")):
            self.row(row)

    def row(self, row: dict[str, Any]) -> None:
        declared, kinds = self.signature.columns, []
        self.rows += 1
        absent = [c for c in declared if c not in row and c not in self.signature.optional]
        extra = [c for c in row if c not in declared]
        wrong = [c for c, v in row.items() if c in declared and not _fits(declared[c], v)]
        for kind, names in (
            ("missing_column", absent),
            ("extra_column", extra),
            ("wrong_type", wrong),
        ):
            if names:
                kinds.append(kind)
                setattr(self, kind, getattr(self, kind) + 1)
                seen = self.named.setdefault(kind, [])
                for n in names:
                    if len(seen) >= MAX_NAMED:
                        break
                    if n not in seen:
                        seen.append(n[:128])
        if kinds:
            self.violating += 1

    @property
    def share(self) -> float:
        return self.violating / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "violating_rows": self.violating,
            "share": self.share,
            "missing_column": self.missing_column,
            "extra_column": self.extra_column,
            "wrong_type": self.wrong_type,
            "columns": self.named,
        }

    def summary(self) -> str:
        parts = [
            f"{getattr(self, k)} {k.replace('_', ' ')} ({', '.join(self.named.get(k, []))})"
            for k in ("missing_column", "extra_column", "wrong_type")
            if getattr(self, k)
        ]
        head = f"{self.share:.1%} of rows break the signature"
        return f"{head}: {'; '.join(parts)}" if parts else head
