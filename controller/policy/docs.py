"""docs/policy.md's field reference, generated from the policy models (controller/policy/model.py)
so the descriptions there are the reference; a test fails when the committed copy is stale.

    python -m controller.policy.docs   # rewrite the generated part of docs/policy.md
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from controller.policy.model import (
    Expect,
    Match,
    MatchCondition,
    PolicyRules,
    PolicyTest,
    PolicyWaivers,
    Rule,
    TestCase,
    Validation,
    Waiver,
)
from controller.spec.schema import _section

DOC_PATH = "docs/policy.md"
BEGIN = "<!-- generated from controller/policy/model.py by `python -m controller.policy.docs` -->"
END = "<!-- end of generated reference -->"
MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("PolicyRules file", PolicyRules),
    ("Rule (`rules[]`)", Rule),
    ("Match (`rules[].match`)", Match),
    ("MatchCondition (`rules[].matchConditions[]`)", MatchCondition),
    ("Validation (`rules[].validations[]`)", Validation),
    ("PolicyWaivers file", PolicyWaivers),
    ("Waiver (`waivers[]` of a PolicyWaivers file)", Waiver),
    ("PolicyTest file", PolicyTest),
    ("Test case (`cases[]` of a PolicyTest file)", TestCase),
    ("Expect (`cases[].expect`)", Expect),
)


def reference_text() -> str:
    lines = [BEGIN, ""]
    for title, model in MODELS:
        schema: dict[str, Any] = model.model_json_schema(by_alias=True)
        section = _section(title, schema)
        lines += ["#" + section[0], *section[1:]]
    return "\n".join([*lines, END]) + "\n"


def write_reference(root: Path, check: bool = False) -> bool:
    """Replace the generated part of docs/policy.md; True when it was stale."""
    path = root / DOC_PATH
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    fresh = text[:start] + reference_text() + text[end:]
    if fresh != text and not check:
        path.write_text(fresh)
    return fresh != text


if __name__ == "__main__":
    write_reference(Path(__file__).resolve().parents[2])
