"""`serveops check` and `serveops policy test`: typer commands registered by controller/cli/main.py."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controller.cli.display import print_error
from controller.errors import EXIT_BAD_INPUT, EXIT_FAILURE, BadInput, ServeopsError
from controller.policy.engine import default_workers
from controller.policy.evidence import KEY_ENV, STORE_ENV, load_key, open_store
from controller.policy.formats import OUTPUTS, render
from controller.policy.gate import (
    changed_subjects,
    check_revisions,
    load_simulation,
    load_simulations,
)
from controller.policy.loader import POLICIES_DIR, load_policies, read_policy_files
from controller.policy.report import markdown_summary
from controller.policy.source import PoliciesAtRevision, PoliciesInDirectory, PolicySource
from controller.policy.testing import run_tests
from controller.registry.mlflow import MlflowRegistry

err = Console(stderr=True, soft_wrap=True, highlight=False)

policy_app = typer.Typer(help="Work on the policies themselves.", no_args_is_help=True)


def _fail(e: ServeopsError) -> typer.Exit:
    print_error(err, e.message)
    return typer.Exit(e.exit_code)


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """No cyclic garbage collection while checking: what a check allocates stays in use until
    it ends, so collections free almost nothing (1 MB on 1,000 deployments) and cost about 5%
    of its CPU time. Nor at exit: the interpreter's last collection over all of it took 0.1 s
    (gc.freeze at exit; objects are still freed, cycles are left to the end of the process)."""
    enabled = gc.isenabled()
    gc.disable()
    atexit.unregister(gc.freeze)  # once, however many checks a process runs
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--now {text!r} is not an RFC 3339 time (2026-01-15T12:00:00Z)") from None
    if when.tzinfo is None:
        raise BadInput(f"--now {text!r} needs a timezone (Z or +00:00)")
    return when


def check(
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Base revision (the pull request's target). The check diffs against the "
            "merge-base of --base and --head, and takes policies/ from there.",
        ),
    ] = None,
    head: Annotated[str, typer.Option("--head", help="Head revision to check.")] = "HEAD",
    base_tip: Annotated[
        bool,
        typer.Option("--base-tip", help="Use --base as it is, not its merge-base with --head."),
    ] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Check every deployment, not only the changed ones.")
    ] = False,
    output: Annotated[
        str, typer.Option("--output", "-o", help="text, json, github, sarif or junit.")
    ] = "text",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the output to this file.")
    ] = None,
    sarif_file: Annotated[
        Path | None, typer.Option("--sarif", help="Also write SARIF to this file.")
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    policies: Annotated[
        Path | None,
        typer.Option(
            "--policies",
            help="Trusted policy directory on disk (default: policies/ at the merge-base, or "
            "at --head without a base).",
        ),
    ] = None,
    policies_rev: Annotated[
        str | None,
        typer.Option("--policies-rev", help="Take policies/ at this revision of --repo."),
    ] = None,
    registry_uri: Annotated[
        str | None,
        typer.Option(
            "--registry-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow registry for the `model` variable (null without one).",
        ),
    ] = None,
    simulation: Annotated[
        list[Path] | None,
        typer.Option(
            "--simulation", help="report.json of `serveops simulate` (repeat: one per environment)."
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(
            "--evidence",
            envvar=STORE_ENV,
            help="Simulation evidence store (directory or file:// URI); records are verified "
            f"with ${KEY_ENV} or --evidence-key-file.",
        ),
    ] = None,
    evidence_key_file: Annotated[
        Path | None,
        typer.Option("--evidence-key-file", help="File holding the evidence signing key."),
    ] = None,
    now: Annotated[
        str | None, typer.Option("--now", help="Evaluate as of this time (RFC 3339).")
    ] = None,
    author: Annotated[str | None, typer.Option("--author", help="Request author.")] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="Request branch.")] = None,
) -> None:
    """Evaluate the policies on what changed from --base to --head. Exit 1 when an
    error-severity rule fails (unwaived) or a change to policies/ fails its tests, 2 on bad
    input. Without --base (with --all) every deployment counts as created."""
    try:
        if output not in OUTPUTS:
            raise BadInput(f"--output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        if base is None and not all_:
            raise BadInput("pass --base REV (or --all to check every deployment)")
        if policies is not None and policies_rev is not None:
            raise BadInput("pass --policies DIR or --policies-rev REV, not both")
        source: PolicySource | None = None
        if policies is not None:
            source = PoliciesInDirectory(policies)
        elif policies_rev is not None:
            source = PoliciesAtRevision(repo, policies_rev)
        registry = None
        if registry_uri:
            from controller.registry.mlflow import absolute_tracking_uri

            registry = MlflowRegistry(absolute_tracking_uri(registry_uri))
        store = open_store(evidence) if evidence else None
        key = load_key(key_file=evidence_key_file) if store is not None else None
        with _without_gc():
            result = check_revisions(
                repo,
                head,
                base,
                include_unchanged=all_,
                environment=env,
                policies=source,
                registry=registry,
                simulation=load_simulations(simulation or []),
                evidence=store,
                evidence_key=key,
                use_merge_base=not base_tip,
                now=_parse_time(now),
                author=author,
                branch=branch,
                workers=default_workers(),
            )
    except ServeopsError as e:
        raise _fail(e) from None
    text = render(result.verdict, result.policies, output)
    print(text, end="")
    try:
        if out_file is not None:
            out_file.write_text(text, encoding="utf-8")
        if sarif_file is not None:
            sarif = render(result.verdict, result.policies, "sarif")
            sarif_file.write_text(sarif, encoding="utf-8")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if output == "github" and summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(markdown_summary(result.verdict))
    except OSError as e:
        raise _fail(BadInput(f"cannot write the output: {e}")) from None
    if not result.verdict.allowed:
        raise typer.Exit(EXIT_FAILURE)


@policy_app.command("test")
def policy_test(
    directory: Annotated[
        Path, typer.Option("--dir", help="Policy directory (rules, waivers and tests/).")
    ] = Path(POLICIES_DIR),
    deployments: Annotated[
        Path | None,
        typer.Option(
            "--deployments",
            help="deployments/ whose environments rules may name (default: the one beside "
            "--dir, when there is one).",
        ),
    ] = None,
    mutate: Annotated[
        bool,
        typer.Option(
            "--mutate", help="Also mutate every rule and report the mutants no case kills."
        ),
    ] = False,
    min_score: Annotated[
        float,
        typer.Option(
            "--min-score", min=0.0, max=1.0, help="With --mutate: exit 1 below this score."
        ),
    ] = 0.0,
) -> None:
    """Compile every rule and run the cases in <dir>/tests/. Exit 1 when a case fails (or,
    with --mutate, the mutation score is below --min-score), 2 when a rule, waiver or case is
    malformed."""
    try:
        files = read_policy_files(directory)
        policies = load_policies(
            files, with_tests=True, environments=_environments(directory, deployments)
        )
        results = run_tests(policies)
    except ServeopsError as e:
        raise _fail(e) from None
    out = Console(soft_wrap=True, highlight=False)
    tested: set[str] = set()
    for _, test_file in policies.tests:
        for case in test_file.cases:
            tested.update(case.expect.fail, case.expect.pass_, case.expect.skip)
    for r in results:
        for failure in r.failures:
            out.print(
                f"FAIL {r.location.file}:{r.location.line}: {r.name}: {failure}", markup=False
            )
    untested = sorted(r.id for r in policies.rules if r.id not in tested)
    for rule_id in untested:
        out.print(f"warning: rule {rule_id!r} has no test case", markup=False)
    failed = sum(1 for r in results if not r.passed)
    out.print(
        f"{len(results) - failed} passed, {failed} failed "
        f"({len(policies.rules)} rules, {len(policies.waivers)} waivers)"
    )
    if failed:
        raise typer.Exit(EXIT_FAILURE)
    if mutate:
        _mutation(out, files, min_score)


def _environments(directory: Path, deployments: Path | None) -> set[str] | None:
    folder = deployments or directory.parent / "deployments"
    if deployments is not None and not folder.is_dir():
        raise _fail(BadInput(f"{folder}: no such deployments directory"))
    if not folder.is_dir():
        return None
    return {p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.y*ml"))}


def _mutation(out: Console, files: dict[str, str], min_score: float) -> None:
    from controller.policy.mutate import mutation_test

    started = time.monotonic()
    report = mutation_test(files)
    for r in report.survivors:
        out.print(f"SURVIVED [{r.mutant.rule}] {r.mutant.description}", markup=False)
    valid = report.valid
    out.print(
        f"mutation score {report.score:.2f}: {len(valid) - len(report.survivors)} of "
        f"{len(valid)} mutants killed, {len(report.results) - len(valid)} did not compile "
        f"({time.monotonic() - started:.1f} s)"
    )
    if report.score < min_score:
        out.print(f"mutation score below --min-score {min_score:.2f}")
        raise typer.Exit(EXIT_FAILURE)


@policy_app.command("changes")
def policy_changes(
    base: Annotated[str, typer.Option("--base", help="Base revision (the pull request's target).")],
    head: Annotated[str, typer.Option("--head", help="Head revision.")] = "HEAD",
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
    base_tip: Annotated[
        bool, typer.Option("--base-tip", help="Use --base as it is, not the merge-base.")
    ] = False,
    models: Annotated[bool, typer.Option("--models", help="Only model changes.")] = False,
    environments: Annotated[
        bool, typer.Option("--environments", help="Print their environments, once each.")
    ] = False,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Only deployments of this kind: ModelDeployment (what `simulate` replays) or "
            "BatchInference (what `batch plan --compare` checks).",
        ),
    ] = None,
) -> None:
    """The deployments that change from the merge-base of --base and --head to --head, one
    `environment/name` per line: what `check` judges and `simulate` replays."""
    try:
        if kind not in (None, "ModelDeployment", "BatchInference"):
            raise BadInput(f"--kind must be ModelDeployment or BatchInference, not {kind!r}")
        subjects = changed_subjects(repo, base, head, use_merge_base=not base_tip)
    except ServeopsError as e:
        raise _fail(e) from None
    chosen = [
        s
        for s in subjects
        if s.head is not None
        and (s.model_changed or not models)
        and kind in (None, s.document_kind)
    ]
    lines = sorted({s.environment for s in chosen}) if environments else [s.key for s in chosen]
    for line in lines:
        print(line)


evidence_app = typer.Typer(help="Simulation evidence the gate reads.", no_args_is_help=True)
policy_app.add_typer(evidence_app, name="evidence")


@evidence_app.command("write")
def evidence_write(
    report: Annotated[Path, typer.Option("--report", help="report.json of `serveops simulate`.")],
    head: Annotated[str, typer.Option("--head", help="The revision that was simulated.")],
    store: Annotated[
        str,
        typer.Option(
            "--store", envvar=STORE_ENV, help="Evidence store (directory or file:// URI)."
        ),
    ],
    repo: Annotated[Path, typer.Option("--repo", help="Git repository.")] = Path("."),
    base: Annotated[str | None, typer.Option("--base", help="The baseline simulated.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", help="Environment (default: the report's).")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help=f"Signing key file (else ${KEY_ENV}).")
    ] = None,
    registry_uri: Annotated[
        str | None,
        typer.Option("--registry-uri", envvar="MLFLOW_TRACKING_URI", help="Resolves aliases."),
    ] = None,
) -> None:
    """Sign and store the verdict of a simulation for each deployment it simulated (the
    report's meta.deployments), keyed by the deployment's spec at --head with its model
    resolved. The gate reads it as the `simulation` input (docs/policy.md)."""
    from controller.policy.record import record_simulation

    try:
        key = load_key(key_file=key_file)
        if key is None:
            raise BadInput(f"no evidence key: set ${KEY_ENV} or pass --key-file")
        written = record_simulation(
            repo, head, base, load_simulation(report) or {}, open_store(store), key,
            environment=env, registry_uri=registry_uri,
        )  # fmt: skip
    except ServeopsError as e:
        raise _fail(e) from None
    for record in written:
        verdict = "passed" if record.passed else f"did not pass ({record.verdict})"
        print(f"{record.environment}/{record.deployment}: {verdict}, evidence {record.location}")


__all__ = ["EXIT_BAD_INPUT", "check", "policy_app"]
