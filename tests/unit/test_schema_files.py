"""The committed JSON Schema and spec reference are generated from controller.spec.models; never stale."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from controller.cli import reference as cli_reference
from controller.spec.schema import (
    BATCH_SCHEMA_PATH,
    REFERENCE_PATH,
    SCHEMA_PATH,
    batch_json_schema,
    reference_text,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_fresh() -> None:
    assert (ROOT / SCHEMA_PATH).read_text() == schema_text(), "run `serveops schema`"
    batch = schema_text(batch_json_schema())
    assert (ROOT / BATCH_SCHEMA_PATH).read_text() == batch, "run `serveops schema`"


def test_committed_reference_is_fresh() -> None:
    assert (ROOT / REFERENCE_PATH).read_text() == reference_text(), "run `serveops schema`"


def test_committed_cli_reference_is_fresh_and_lists_every_command() -> None:
    page = (ROOT / cli_reference.CLI_REFERENCE_PATH).read_text()
    assert page == cli_reference.page_text(page), "run `serveops schema`"
    for command in ("plan", "apply", "controller", "sync", "rollouts", "check", "simulate"):
        assert f"### `serveops {command}`" in page
    # Every option that names the cluster honours SERVEOPS_ADDRESS.
    rows = [line for line in page.splitlines() if line.startswith("| `--address`")]
    assert rows
    assert all("`SERVEOPS_ADDRESS`" in row for row in rows), rows


def test_example_deployments_validate_against_the_json_schema() -> None:
    schemas = {
        "ModelDeployment": SCHEMA_PATH,
        "BatchInference": BATCH_SCHEMA_PATH,
    }
    examples = sorted((ROOT / "deployments").rglob("*.yaml"))
    assert examples
    kinds = set()
    for path in examples:
        doc = yaml.safe_load(path.read_text())
        kinds.add(doc["kind"])
        rel = schemas[doc["kind"]]
        assert f"$schema=../../{rel}" in path.read_text(), path
        jsonschema.validate(doc, json.loads((ROOT / rel).read_text()))
    assert kinds == set(schemas)


def test_json_schema_rejects_what_pydantic_rejects() -> None:
    schema = json.loads((ROOT / SCHEMA_PATH).read_text())
    doc = yaml.safe_load((ROOT / "deployments/staging/breast-cancer.yaml").read_text())
    doc["spec"]["replicaz"] = 2
    validator = jsonschema.Draft202012Validator(schema)
    assert any("replicaz" in e.message for e in validator.iter_errors(doc))
    doc["spec"].pop("replicaz")
    doc["spec"]["route"] = "no-slash"
    assert any("route" in list(e.path) for e in validator.iter_errors(doc))


def test_descriptions_hold_no_unfilled_placeholder() -> None:
    # A `{NAME}` left in a description is a string that was meant to be an f-string.
    import re

    assert re.findall(r"\{[A-Z][A-Z_]+\}", reference_text()) == []
