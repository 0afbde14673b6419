"""BatchInference files: validated like ModelDeployment files, errors at file:line: field."""

from __future__ import annotations

import pytest

from controller.errors import ValidationFailed
from controller.spec.batchfile import MAX_BATCH_DOCS, load_batches, parse_batch
from controller.spec.manifest import load_manifests

GOOD = """\
apiVersion: serveops.dev/v1alpha1
kind: BatchInference
metadata:
  name: {name}
  environment: staging
  owner: ml
spec:
  model: models:/fraud/3
  input:
    uri: {input}
    format: csv
  output:
    uri: {output}
  schedule:
    cron: "0 2 * * *"
    timezone: Europe/Paris
  resources:
    num_cpus: 0.25
"""


def doc(name: str = "nightly", input: str = "/data/in.csv", output: str = "/data/out") -> str:
    return GOOD.format(name=name, input=input, output=output)


def problems(files: dict[str, str]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        load_batches(files)
    return [str(p) for p in caught.value.problems]


def test_a_valid_file_loads_with_its_schedule_and_resources() -> None:
    [b] = load_batches({"deployments/staging/nightly.yaml": doc()})
    assert b.name == "nightly"
    assert b.batch.spec.schedule is not None
    assert b.batch.spec.schedule.timezone == "Europe/Paris"
    assert b.batch.spec.resources.num_cpus == 0.25
    assert b.batch.spec.timeout_s == 3600


def test_endpoint_loader_leaves_batch_files_out_but_reports_their_errors() -> None:
    assert load_manifests({"deployments/staging/nightly.yaml": doc()}) == []
    bad = doc().replace("num_cpus: 0.25", "num_cpus: -1")
    with pytest.raises(ValidationFailed) as caught:
        load_manifests({"deployments/staging/nightly.yaml": bad})
    [p] = caught.value.problems
    assert str(p).startswith("deployments/staging/nightly.yaml:18: spec.resources.num_cpus:")


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"),
    [
        ('cron: "0 2 * * *"', 'cron: "61 2 * * *"', 15, "spec.schedule.cron", "Bad minute"),
        ('cron: "0 2 * * *"', 'cron: "0 2 *"', 15, "spec.schedule.cron", "5 fields"),
        ("Europe/Paris", "Mars/Olympus", 16, "spec.schedule.timezone", "unknown time zone"),
        ("models:/fraud/3", "runs:/abc/model", 8, "spec.model", "pattern"),
        ("format: csv", "format: xlsx", 11, "spec.input.format", "parquet"),
        ("uri: /data/out", "uri: s3://bucket?x=1", 13, "spec.output.uri", "pattern"),
        ("uri: /data/out", "uri: file:///data/in.csv", 13, "spec.output.uri", "must differ"),
        ("uri: /data/out", "uri: data/out", 13, "spec.output.uri", "pattern"),
        ("uri: /data/out", "uri: /data/../etc", 13, "spec.output.uri", "`..`"),
        ("  resources:\n", "  resourcez:\n", 17, "spec.resourcez", "unknown field"),
    ],
)
def test_bad_fields_are_named_at_their_line(
    old: str, new: str, line: int, field: str, words: str
) -> None:
    text = doc().replace(old, new)
    assert text != doc()
    got, found = parse_batch("deployments/staging/nightly.yaml", text)
    assert got is None
    assert any(f"nightly.yaml:{line}: {field}" in str(p) and words in str(p) for p in found), found


def test_names_and_outputs_are_unique_and_an_output_never_overwrites_an_input() -> None:
    files = {
        "deployments/staging/a.yaml": doc("a", "/in/a", "/out/a"),
        "deployments/staging/b.yaml": doc("a", "/in/b", "/out/a/"),
        "deployments/staging/c.yaml": doc("c", "/in/c", "file:///in/a"),
    }
    found = problems(files)
    assert any("b.yaml:4: metadata.name: name 'a' is already used" in p for p in found), found
    assert any("b.yaml:13: spec.output.uri: output '/out/a' is already used" in p for p in found)
    assert any("c.yaml:13: spec.output.uri" in p and "input of a" in p for p in found), found


def test_environment_must_match_the_folder() -> None:
    [p] = problems({"deployments/production/nightly.yaml": doc()})
    assert "nightly.yaml:5: metadata.environment" in p


def test_hostile_files_are_refused_at_a_line_not_read_whole() -> None:
    deep = "a: " + "[" * 500 + "]" * 500
    huge = doc() + "# " + "x" * (2 * 1024 * 1024) + "\n"
    bomb = (
        doc()
        + "x: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"y{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}" + ",*a" * 9 + "]\n" for i in range(12)
        )
    )
    files = {
        "deployments/staging/deep.yaml": "kind: BatchInference\n" + deep,
        "deployments/staging/huge.yaml": huge,
        "deployments/staging/bomb.yaml": bomb,
    }
    found = problems(files)
    assert any("deep.yaml:2: refused: nested deeper" in p for p in found), found
    assert any("huge.yaml:1: file is" in p and "more than the limit" in p for p in found), found
    assert any("bomb.yaml" in p and "refused" in p for p in found), found


def test_too_many_batch_documents_in_one_environment_are_refused() -> None:
    files = {
        f"deployments/staging/b{i:04d}.yaml": doc(f"b{i}", f"/in/{i}", f"/out/{i}")
        for i in range(MAX_BATCH_DOCS + 1)
    }
    [p] = problems(files)
    assert f"more than {MAX_BATCH_DOCS}" in p
