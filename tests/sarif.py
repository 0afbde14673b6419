"""SARIF 2.1.0 checks for the policy reports: the sarif-pydantic models (types and enums of
every field they know) plus the cross-references GitHub's code scanning relies on."""

from __future__ import annotations

from typing import Any

from sarif_pydantic import Sarif


def check_sarif(doc: dict[str, Any]) -> None:
    Sarif.model_validate(doc)
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("2.1.0.json")
    assert "sarif" in doc["$schema"]
    for run in doc["runs"]:
        rules = run["tool"]["driver"].get("rules", [])
        ids = [r["id"] for r in rules]
        assert len(ids) == len(set(ids)), "rule ids are unique"
        for result in run.get("results", []):
            assert result["ruleId"] in ids, result["ruleId"]
            if "ruleIndex" in result:
                assert ids[result["ruleIndex"]] == result["ruleId"]
            assert result.get("level", "warning") in ("none", "note", "warning", "error")
            assert result["message"]["text"]
            for location in result.get("locations", []):
                physical = location["physicalLocation"]
                assert physical["artifactLocation"]["uri"]
                region = physical.get("region")
                if region is not None:
                    assert region["startLine"] >= 1
                    assert region.get("startColumn", 1) >= 1
