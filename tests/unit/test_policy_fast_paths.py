"""The policy engine's fast paths give the verdict of the plain one: one shared activation with
params and sub-objects bound once, rewritten expressions, and evaluation split over forked
processes. No cluster."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from controller.errors import ValidationFailed
from controller.policy import changes, engine, parallel
from controller.policy.celfields import variable_trees
from controller.policy.celrewrite import bind_paths, rename_variable
from controller.policy.changes import Subject, subjects_between
from controller.policy.engine import (
    ModelCache,
    RequestContext,
    RuleResult,
    evaluate,
    evaluate_rule,
    simulation_for,
    subject_context,
)
from controller.policy.formats import as_junit
from controller.policy.loader import PolicySet, load_policies, read_policy_files
from controller.policy.report import as_json
from controller.registry.mlflow import ModelNotFound, ModelVersionRecord
from tests.support import deployment_yaml

NOW = dt.datetime(2026, 12, 20, 12, 0, tzinfo=dt.UTC)  # inside the starter freeze window

# Rules that read what may be null (a struct, oldObject, object), index lists, test fields
# with has(), shadow `params` in a macro, and mention params/object.spec in strings and
# comments: where a rewritten expression could go wrong.
EDGE_RULES = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyRules
    rules:
      - id: unguarded-autoscaling
        description: reads a struct that may be null
        params: {max: 4}
        validations:
          - expression: object.spec.autoscaling.max_replicas <= params.max // params, object.spec
            messageExpression: "'max ' + string(object.spec.autoscaling.max_replicas) + ' params'"
            field: spec.autoscaling.max_replicas
      - id: old-and-new
        description: compares the revisions
        match: {changes: [created, updated, deleted, unchanged]}
        validations:
          - expression: >-
              oldObject == null || object == null ||
              oldObject.spec.model == object.spec.model || change.modelChanged
          - expression: >-
              has(object.spec.autoscaling) && has(object.spec.rollout.analysis) &&
              object.spec.rollout.analysis.interval != ''
            message: analysis interval
          - expression: object.spec.rollout.steps[0].weight < 50
            message: first step
            field: spec.rollout.steps[0].weight
      - id: deleted-only
        description: deletions
        match: {changes: [deleted]}
        validations:
          - expression: oldObject.metadata.name.startsWith('a') && object == null
            messageExpression: "'deleted ' + oldObject.metadata.name"
      - id: shadowed-params
        description: params bound by a macro, and in strings
        params: {bad: [secret, token], params: 1}
        validations:
          - expression: >-
              !params.bad.exists(params, params in object.metadata.labels) &&
              params.params == 1 && 'params' != r'object.spec'
            message: bad label key
      - id: report-change
        description: names both revisions
        severity: warning
        match: {changes: [created, updated, deleted]}
        validations:
          - expression: oldObject == null || object == null || oldObject.spec.resources == object.spec.resources
          - expression: "false"
            messageExpression: >-
              change.kind + ': ' + (oldObject == null ? 'none' : oldObject.spec.model) + ' -> ' +
              (object == null ? 'none' : object.spec.model) + ' ' + string(size(change.fields))
      - id: model-record
        description: the registry record
        matchConditions:
          - {name: has-model, expression: model != null}
        validations:
          - expression: model.status == 'READY' && object.spec.model.endsWith(model.version)
            messageExpression: "'model ' + model.uri + ' is ' + model.status"
    """
)


def _deployment(name: str, env: str, variant: int, version: int) -> str:
    extra = [
        "autoscaling: {min_replicas: 1, max_replicas: 6}\n",
        "rollout:\n  strategy: canary\n  steps: [{weight: 60, pause: 1m}]\n"
        "  analysis: {interval: 1m}\n",
        "autoscaling: {min_replicas: 2, max_replicas: 3}\nrollout: {strategy: blue_green}\n",
        "",
    ][variant % 4]
    text = deployment_yaml(name, env, model=f"models:/{name}/{version}", extra_spec=extra)
    if "autoscaling" in extra or variant % 4 == 3:
        text = text.replace("  replicas: 1\n", "")
    if variant % 5 == 1:
        text = text.replace("  owner: risk-team\n", "  owner: risk-team\n  labels: {token: x}\n")
    return text


def _files(n: int, *, head: bool) -> dict[str, str]:
    files: dict[str, str] = {}
    for i in range(n):
        env = "production" if i % 2 else "staging"
        name = f"{'ab'[i % 2]}model-{i:03d}"
        if (head and i % 7 == 3) or (not head and i % 11 == 5):
            continue  # deleted at head, or created at head
        version = 2 if head and i % 3 == 0 else 1
        files[f"deployments/{env}/{name}.yaml"] = _deployment(name, env, i, version)
    return files


def _policies() -> PolicySet:
    files = read_policy_files("policies")
    files = {k: v for k, v in files.items() if "/tests/" not in k}
    files["policies/edge.yaml"] = EDGE_RULES
    return load_policies(files)


def _describe(uri: str) -> ModelVersionRecord:
    name, _, version = uri.removeprefix("models:/").partition("/")
    if name.endswith("7"):
        raise ModelNotFound(f"{uri}: no such version")
    return ModelVersionRecord(
        name,
        version,
        status="PENDING" if name.endswith("5") else "READY",
        tags={"training_data_hash": "abc", "source_commit": "123"},
        run_metrics={"auc": 0.7 if name.endswith("1") else 0.95},
        creation_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


SIMULATION = {"deployments": {"production/bmodel-003": {"passed": True}}}


@pytest.fixture(scope="module")
def subjects() -> list[Subject]:
    return subjects_between(_files(60, head=False), _files(60, head=True), include_unchanged=True)


def _reference(policies: PolicySet, subjects: list[Subject]) -> list[tuple[str, str, RuleResult]]:
    """Each rule on each subject the plain way: a context per subject, programs as written."""
    request = RequestContext(NOW)
    cache = ModelCache(_describe)
    out = []
    for s in subjects:
        ctx = subject_context(
            s,
            cache.get(s.manifest.deployment.spec.model),
            simulation_for(SIMULATION, s),
            request,
        )
        for rule in policies.rules:
            out.append((s.key, rule.id, evaluate_rule(rule, s, ctx)))
    return out


def test_shared_activation_gives_the_plain_results(subjects: list[Subject]) -> None:
    policies = _policies()
    kinds = {s.kind for s in subjects}
    assert kinds == {"created", "updated", "deleted", "unchanged"}
    verdict = evaluate(
        policies, subjects, RequestContext(NOW), models=_describe, simulation=SIMULATION
    )
    got = [
        (o.deployment, o.rule, o.status, [f.message for f in o.findings]) for o in verdict.outcomes
    ]
    want = [
        (key, rule, status, [f.message for f in failures])
        for key, rule, (status, failures) in _reference(policies, subjects)
    ]
    assert got == want
    messages = {m for *_, ms in got for m in ms}
    assert any("could not be evaluated" in m for m in messages)  # errors are compared too
    assert "deleted amodel-005" not in messages
    assert any("deleted " in m for m in messages)


def test_parallel_and_serial_verdicts_are_the_same(
    subjects: list[Subject], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "PARALLEL_MIN_EVALUATIONS", 0)
    policies = _policies()
    verdicts = [
        evaluate(
            policies,
            subjects,
            RequestContext(NOW),
            models=_describe,
            simulation=SIMULATION,
            workers=workers,
        )
        for workers in (1, 2, 3)
    ]
    serial = (as_json(verdicts[0]), as_junit(verdicts[0]))
    assert verdicts[0].findings
    assert verdicts[0].waivers.applied + verdicts[0].waivers.unused
    for verdict in verdicts[1:]:
        assert (as_json(verdict), as_junit(verdict)) == serial


def _described(subjects: list[Subject]) -> list[tuple[object, ...]]:
    return [
        (s.key, s.kind, s.fields, s.path, s.as_object(), s.as_old_object(), s.manifest.doc.lines)
        for s in subjects
    ]


def test_parallel_and_serial_parsing_give_the_same_subjects_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(changes, "PARALLEL_MIN_FILES", 0)
    base, head = _files(60, head=False), _files(60, head=True)
    for environment in (None, "production"):
        serial = subjects_between(base, head, include_unchanged=True, environment=environment)
        forked = subjects_between(
            base, head, include_unchanged=True, environment=environment, workers=2
        )
        assert _described(forked) == _described(serial)
    broken = dict(head)
    for path in sorted(broken)[::9]:
        broken[path] = broken[path].replace("route: /", "route: ").replace("owner:", "ownr:")
    errors = []
    for workers in (1, 2):
        with pytest.raises(ValidationFailed) as info:
            subjects_between(base, broken, workers=workers)
        errors.append([str(p) for p in info.value.problems])
    assert errors[0] == errors[1]
    assert len(errors[0]) > 7


def shares_the_parts_with_children() -> None:
    """Run in a fresh interpreter: parallel_map forks only a single-threaded process, and an
    earlier test in this one may have left a thread (MLflow's artifact pool does)."""
    parent = os.getpid()
    ctx = multiprocessing.get_context("fork")
    child_took_a_part = ctx.Event()
    parts_in_children = ctx.Value("i", 0)

    def where(part: range) -> list[int]:
        if os.getpid() == parent:
            assert child_took_a_part.wait(60)  # leave a part to a child, however busy the machine
        else:
            with parts_in_children.get_lock():
                parts_in_children.value += 1
            child_took_a_part.set()
        return [i * i for i in part]

    # whether the parent uses a child's answer or computes the part itself (a child it would
    # otherwise wait for) depends on the machine's load; the list never does
    assert parallel.parallel_map(where, 40, 2) == [i * i for i in range(40)]
    assert parts_in_children.value >= 1


def test_parallel_map_shares_the_parts_with_children_and_keeps_order() -> None:
    code = "from tests.unit.test_policy_fast_paths import shares_the_parts_with_children as t; t()"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_parallel_map_does_not_wait_for_a_child_that_is_stuck() -> None:
    parent = os.getpid()

    def stuck_in_children(part: range) -> list[int]:
        if os.getpid() != parent:
            threading.Event().wait()  # for ever: the parent computes the part itself
        return list(part)

    assert parallel.parallel_map(stuck_in_children, 30, 3) == list(range(30))


def test_parallel_map_does_not_fork_a_process_with_threads() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        out = parallel.parallel_map(lambda part: [os.getpid() for _ in part], 4, 2)
    finally:
        stop.set()
        thread.join()
    assert out == [os.getpid()] * 4


def test_parallel_map_redoes_a_failed_part_in_the_parent() -> None:
    parent = os.getpid()

    def fails_in_a_child(part: range) -> list[int]:
        if os.getpid() != parent:
            raise RuntimeError("child broke")
        return [i * i for i in part]

    assert parallel.parallel_map(fails_in_a_child, 5, 2) == [0, 1, 4, 9, 16]

    def always_fails(part: range) -> list[int]:
        raise ValueError("bad rule")

    with pytest.raises(ValueError, match="bad rule"):
        parallel.parallel_map(always_fails, 5, 2)


@pytest.mark.parametrize(
    ("cpus", "load", "workers"),
    [(2, 0.2, 2), (2, 0.7, 1), (2, 5.0, 1), (8, 0.0, 4), (8, 6.2, 2), (1, 0.0, 1)],
)
def test_check_uses_the_free_cpus_at_most_4(
    monkeypatch: pytest.MonkeyPatch, cpus: int, load: float, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert engine.default_workers() == workers


def test_split_covers_the_range_in_near_equal_parts() -> None:
    assert parallel.split(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert parallel.split(2, 4) == [range(0, 1), range(1, 2)]


def test_rename_variable_leaves_strings_comments_and_fields() -> None:
    source = (
        "params.a + 'params' + r\"params\\\" + '''x ' params''' + x.params "
        "+ b'params' // params\n + params"
    )
    assert rename_variable(source, "params", "P") == (
        "P.a + 'params' + r\"params\\\" + '''x ' params''' + x.params + b'params' // params\n + P"
    )


def test_bind_paths_binds_field_chains_only_where_the_meaning_is_kept() -> None:
    trees = variable_trees()
    cases = {
        "object.spec.model.contains('@')": "__object__spec__model.contains('@')",
        "object.spec.rollout.steps[0].weight": "__object__spec__rollout__steps[0].weight",
        "object.metadata.labels.team": "__object__metadata__labels.team",  # a map's keys
        "has(object.spec.autoscaling)": "has(__object__spec.autoscaling)",
        "has(object.spec)": "has(object.spec)",
        "[1].all(object, object.spec)": "[1].all(object, object.spec)",  # shadowed
        "x.object.spec + 'object.spec'": "x.object.spec + 'object.spec'",
        "object.spec.nope": "__object__spec.nope",
        "oldObject . spec . route": "__oldObject__spec__route",
    }
    for source, want in cases.items():
        assert bind_paths(source, trees)[0] == want, source


def test_the_cel_runtime_loads_without_its_interactive_shell() -> None:
    code = (
        "import sys\n"
        "from controller.policy.celrt import cel\n"
        "assert cel.compile('1 + 1').execute() == 2\n"
        "assert 'prompt_toolkit' not in sys.modules\n"
        "import cel.cli\n"
        "assert callable(cel.cli.main) and 'prompt_toolkit' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
