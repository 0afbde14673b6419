"""`serveops batch plan|run|runs`: batch inference by hand, next to the controller.

`plan` reads the batch files of a revision and the controller's store and says what runs and
what changed, touching nothing. `run` submits one run now (the gate judges the revision first,
as `apply` does), and with --follow polls it to its end. `runs` lists past runs from the store.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from controller.batch.inputs import check_input
from controller.batch.jobs import RayJobs
from controller.batch.plan import BatchPlan
from controller.batch.request import parse_progress
from controller.batch.review import SampleCheck, read_batches, record, review
from controller.batch.step import BatchEdges, poll, start_run
from controller.cli.options import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE,
    AddressOpt,
    EnvOpt,
    OutputOpt,
    RegistryOpt,
    RepoPathOpt,
    RevOpt,
    ServingCodeOpt,
    StateOpt,
    check_output,
    out,
    seconds,
)
from controller.cli.options import run as run_command
from controller.cluster.serving_code import parse_serving_code
from controller.errors import BadInput, Refused, ServeopsError
from controller.gitops.state import StateStore
from controller.gitops.state.batch import BatchRun
from controller.policy import gate, refusal
from controller.policy.evidence import KEY_ENV, load_key, open_store
from controller.registry.mlflow import registry_from_uri
from controller.spec.batchfile import BatchManifest

batch_app = typer.Typer(
    help="Batch inference: plan, run by hand, list runs (docs/batch.md).",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(help="The batch deployment (metadata.name).")]
MAX_LIMIT = 1000


def _store(state: Path, must_exist: bool = True) -> StateStore:
    if must_exist and not state.exists():
        raise BadInput(f"{state}: no controller state here (pass --state)")
    return StateStore(state)


def _one(batches: list[BatchManifest], name: str, env: str) -> BatchManifest:
    for b in batches:
        if b.name == name:
            return b
    have = ", ".join(b.name for b in batches) or "none"
    raise BadInput(f"no batch deployment {name!r} in deployments/{env}/ (there: {have})")


def plan_text(plan: BatchPlan) -> str:
    if not plan.items and not plan.deleted:
        return f"{plan.environment}: no batch deployments"
    lines = []
    for i in plan.items:
        nxt = f", next {i.next_at:%Y-%m-%d %H:%M} UTC" if i.next_at else ""
        changed = f" [{'; '.join(i.changes)}]" if i.changes else ""
        lines.append(f"{i.name}: {i.action}: {i.reason} ({i.model}{nxt}){changed}")
    lines += [f"{name}: deleted from Git (its runs stay in the store)" for name in plan.deleted]
    return "\n".join(lines)


@batch_app.command("plan")
def plan_command(
    env: EnvOpt,
    repo: RepoPathOpt = Path("."),
    rev: RevOpt = "HEAD",
    state: StateOpt = DEFAULT_STATE,
    registry_uri: RegistryOpt = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Plan as of this time (ISO 8601, e.g. 2026-12-02T02:00Z)."),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            help="With --registry-uri: run a model change's sample check here, on the local "
            "input, and show its verdict.",
        ),
    ] = True,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Compare against the model each deployment has at this revision (a pull "
            "request's merge-base), not the one the controller's state last promoted.",
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(
            "--evidence",
            envvar="SERVEOPS_EVIDENCE_STORE",
            help="Record each sample check's verdict as signed evidence here (directory or "
            "file:// URI), key from $SERVEOPS_EVIDENCE_KEY or --evidence-key-file: the gate's "
            "`simulation` input for the batch deployment (docs/batch.md).",
        ),
    ] = None,
    evidence_key_file: Annotated[
        Path | None,
        typer.Option("--evidence-key-file", help="File holding the evidence signing key."),
    ] = None,
    remote_inputs: Annotated[
        bool,
        typer.Option(
            "--remote-inputs",
            help="Read object-store inputs too (s3://, gs://, ...: pyarrow's filesystems with "
            "this machine's credentials, 30 s each): checked and sample-compared like local "
            "ones. Without it they are the job's to read.",
        ),
    ] = False,
    output: OutputOpt = "text",
) -> None:
    """What the controller would run at a revision, and what changed since the last runs;
    inputs on this machine (with --remote-inputs, object stores too) are checked (exist, have
    the named columns, match the model's signature). A model change's sample check is run here
    when the input is readable: exit 1 when it would reject the new version. Changes
    nothing."""

    def run() -> None:
        check_output(output)
        now = _time(at) if at else dt.datetime.now(dt.UTC)
        records = open_store(evidence) if evidence else None
        key = load_key(key_file=evidence_key_file) if records is not None else None
        if records is not None and key is None:
            raise BadInput(f"--evidence needs a signing key: set ${KEY_ENV} or --evidence-key-file")
        if records is not None and not (registry_uri and compare):
            raise BadInput("--evidence records sample checks: pass --registry-uri (and --compare)")
        registry = registry_from_uri(registry_uri) if registry_uri else None
        found = review(
            repo, rev, env, state=state, now=now, registry=registry, compare=compare, base=base,
            remote=remote_inputs,
        )  # fmt: skip
        written = record(found, records, key, now) if records is not None and key else {}
        if output == "json":
            data = _plan_json(found.plan)
            for item_json in data["items"]:
                check = found.checks.get(item_json["name"])
                item_json["sample_check"] = _check_json(check) if check is not None else None
                item_json["evidence"] = written.get(item_json["name"])
            print(json.dumps({"commit": found.commit, **data}, indent=2, default=str))
        else:
            out.print(f"{env} at {found.commit[:12]}:", markup=False)
            out.print(plan_text(found.plan), markup=False)
            for name, check in found.checks.items():
                out.print(f"{name}: sample check: {check.verdict}: {check.reason}", markup=False)
            for name, location in written.items():
                out.print(f"{name}: verdict recorded as evidence: {location}", markup=False)
        if found.rejected:
            raise typer.Exit(1)

    run_command(run)


@batch_app.command("run")
def run_by_hand(
    name: NameArg,
    env: EnvOpt,
    repo: RepoPathOpt = Path("."),
    rev: RevOpt = "HEAD",
    state: StateOpt = DEFAULT_STATE,
    address: AddressOpt = DEFAULT_ADDRESS,
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    follow: Annotated[
        bool, typer.Option("--follow", help="Wait for the run's end, printing its progress.")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="With --follow, give up waiting after (30m, 1h...).")
    ] = "1h",
) -> None:
    """Run one batch deployment now, from a revision the policy gate allows (as `apply` by hand
    does). Exit 0 when submitted (with --follow: when it succeeded), 1 when it failed or was
    rejected by its promotion check, 2 for bad input."""

    def run() -> None:
        limit = seconds("--timeout", timeout)
        commit, batches = read_batches(repo, rev, env)
        batch = _one(batches, name, env)
        check_input(batch.batch.spec, str(batch.doc.location("spec", "input", "uri")))
        registry = registry_from_uri(registry_uri)
        verdict = gate(repo, commit, env, registry=registry)
        if not verdict.allowed:
            raise Refused(refusal(verdict))
        with StateStore(state) as store, RayJobs(address) as jobs:
            edges = BatchEdges(
                store, jobs, lambda: registry, env, serving_code=parse_serving_code(serving_code)
            )
            now = dt.datetime.now(dt.UTC)
            started = start_run(edges, batch, commit, now, "manual", now)
            if started is None:
                raise ServeopsError(f"a run of {name!r} was started this second already")
            out.print(
                f"{name}: run {started.run_key} {started.status} (job {started.submission_id}, "
                f"{started.model_uri})",
                markup=False,
            )
            if follow:
                final = _follow(edges, started, batch, limit)
                if final.status != "succeeded":
                    raise ServeopsError(
                        f"{name}: run {final.run_key} {final.status}: {final.message}"
                    )

    run_command(run)


def _follow(edges: BatchEdges, run: BatchRun, batch: BatchManifest, limit_s: float) -> BatchRun:
    """Poll the run to its end: its status on change, and a bar of rows written (of the input's
    rows) from the job's progress lines; plain lines without a terminal."""
    deadline = time.monotonic() + limit_s
    shown = ""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        disable=not out.is_terminal,
    ) as bar:
        task = bar.add_task(f"{run.run_key} rows", total=None)
        while run.active:
            if time.monotonic() > deadline:
                raise ServeopsError(f"gave up waiting after {limit_s:.0f}s; the run goes on")
            time.sleep(2.0)
            run = poll(edges, run, batch, dt.datetime.now(dt.UTC))
            line = f"{run.run_key}: {run.status} (attempt {run.attempt + 1})"
            progress = parse_progress(edges.jobs.logs(run.submission_id)) if run.active else None
            if progress is not None:
                bar.update(task, completed=progress.rows, total=progress.total)
                of = f" of {progress.total:,}" if progress.total is not None else ""
                line += f": {progress.rows:,}{of} rows written"
            if line != shown:
                if not out.is_terminal or progress is None:
                    out.print(line, markup=False)
                shown = line
    rows = f", {run.rows} rows to {run.output}" if run.rows is not None else ""
    out.print(f"{run.run_key}: {run.status}{rows} {run.message}".rstrip(), markup=False)
    return run


@batch_app.command("runs")
def runs_command(
    name: Annotated[str | None, typer.Argument(help="Only this batch deployment.")] = None,
    env: EnvOpt = "",
    state: StateOpt = DEFAULT_STATE,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 20,
    output: OutputOpt = "text",
) -> None:
    """Past and current runs from the controller's store, newest first."""

    def run() -> None:
        check_output(output)
        if not env:
            raise BadInput("--env is required")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadInput(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}")
        with _store(state) as store:
            runs = store.batch_runs(env, name, limit)
        if output == "json":
            print(json.dumps([_run_json(r) for r in runs], indent=2, default=str))
            return
        if not runs:
            out.print(f"no batch runs in {env!r}" + (f" for {name!r}" if name else ""))
            return
        for r in runs:
            took = ""
            if r.finished_at and r.submitted_at:
                took = f" in {(r.finished_at - r.submitted_at).total_seconds():.0f}s"
            rows = f" {r.rows} rows" if r.rows is not None else ""
            agree = f" agreement {r.agreement:.1%}" if r.agreement is not None else ""
            out.print(
                f"{r.deployment} {r.run_key} {r.status}{rows}{took}{agree} {r.model_uri} "
                f"commit {r.commit[:12]} attempt {r.attempt + 1}"
                + (f": {r.message}" if r.message else ""),
                markup=False,
            )

    run_command(run)


def _time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--at must be an ISO 8601 time (2026-12-02T02:00Z), not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _plan_json(plan: BatchPlan) -> dict[str, Any]:
    return {
        "environment": plan.environment,
        "now": plan.now.isoformat(),
        "items": [
            {
                "name": i.name,
                "action": i.action,
                "reason": i.reason,
                "model": i.model,
                "due": i.due.isoformat() if i.due else None,
                "next_at": i.next_at.isoformat() if i.next_at else None,
                "promoted": i.promoted,
                "changes": list(i.changes),
            }
            for i in plan.items
        ],
        "deleted": plan.deleted,
    }


def _check_json(check: SampleCheck) -> dict[str, Any]:
    result = check.result.model_dump() if check.result is not None else None
    return {"verdict": check.verdict, "reason": check.reason, "result": result}


def _run_json(r: BatchRun) -> dict[str, object]:
    return {k: v for k, v in vars(r).items() if k != "request_json"} | {
        "submission_id": r.submission_id
    }


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
