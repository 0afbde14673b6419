"""The `serveops` command. Exit codes: 0 ok, 1 failure or changes refused, 2 bad input or usage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from controller import __version__
from controller.cli.batch import register as register_batch_commands
from controller.cli.display import plan_text, print_to
from controller.cli.history import register as register_history_commands
from controller.cli.lease import register as register_lease_commands
from controller.cli.loop import register as register_loop_command
from controller.cli.monitor import register as register_monitor_commands
from controller.cli.options import (
    DEFAULT_ADDRESS,
    AddressOpt,
    EnvOpt,
    HttpPortOpt,
    OutputOpt,
    PruneOpt,
    RegistryOpt,
    RepoPathOpt,
    RevOpt,
    ServingCodeOpt,
    TimeoutOpt,
    check_output,
    err,
    out,
    seconds,
)
from controller.cli.options import run as run_command
from controller.cli.policy import check as policy_check
from controller.cli.policy import policy_app
from controller.cli.propose import register as register_propose_command
from controller.cli.rollouts import register as register_rollout_commands
from controller.cli.status import register as register_status_command
from controller.cli.sync import register as register_sync_command
from controller.cluster.serve_api import ServeClient, default_address
from controller.cluster.serving_code import build_bundle, parse_serving_code
from controller.errors import BadInput, StalePlan
from controller.registry.mlflow import registry_from_uri
from controller.source.git import open_repo, read_worktree, resolve_commit
from controller.spec.batchfile import load_batches
from controller.spec.manifest import is_deployment_file, load_manifests
from controller.spec.yamldoc import MIB, Limits, read_file
from controller.sync.apply import apply_plan
from controller.sync.plan import Plan
from controller.sync.read import Revision, enforce_policies, plan_revision
from simulator.cli import register as register_simulator_commands

# A plan of 1,000 deployments is ~2 MB of JSON; anything far larger is not one of ours.
PLAN_LIMITS = Limits(max_bytes=32 * MIB)

app = typer.Typer(
    help="Ship MLflow models to Ray Serve from Git: validate, plan, apply, status.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# `apply` without --plan plans, then applies: when Serve moves in between, it plans again.
REPLAN_ATTEMPTS = 3


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or folders (default: deployments/).")
    ] = None,
) -> None:
    """Check deployment and batch inference files: YAML, schema, and rules across files (unique
    names, routes and outputs)."""

    def run() -> None:
        files = read_worktree(paths or [Path("deployments")])
        files = {p: t for p, t in files.items() if is_deployment_file(p)}
        if not files:
            raise BadInput("no deployment files found (expected deployments/<env>/<name>.yaml)")
        manifests = load_manifests(files)
        batches = load_batches(files)
        extra = f" and {len(batches)} batch inference file(s)" if batches else ""
        out.print(f"ok: {len(manifests)} deployment file(s){extra} valid")

    run_command(run)


@app.command()
def plan(
    env: EnvOpt,
    repo: RepoPathOpt = Path("."),
    rev: RevOpt = "HEAD",
    address: AddressOpt = DEFAULT_ADDRESS,
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    out_file: Annotated[Path | None, typer.Option("--out", help="Save the plan as JSON.")] = None,
    output: OutputOpt = "text",
    prune: PruneOpt = False,
    immediate: Annotated[
        bool,
        typer.Option(
            "--immediate",
            help="Plan what `serveops apply` by hand does (switch at once), not the controller's "
            "rollouts.",
        ),
    ] = False,
) -> None:
    """Show what would change, field by field, without changing anything: what the controller
    does (a canary or blue-green deployment's rollout, from its first step), or with
    --immediate what `apply` by hand does."""

    def run() -> None:
        check_output(output)
        code = parse_serving_code(serving_code)
        with ServeClient(address) as client:
            result = plan_revision(
                Revision(str(repo), rev, env),
                client,
                registry_from_uri(registry_uri),
                prune=prune,
                serving_code=code,
                rollouts=not immediate,
            )
        if out_file:
            out_file.write_text(result.model_dump_json(indent=2) + "\n")
        if output == "json":
            print(result.model_dump_json(indent=2))
        else:
            print_to(out, plan_text(result))
            if out_file:
                out.print(
                    f"saved plan to {out_file}; apply it with: serveops apply --plan {out_file}"
                )

    run_command(run)


@app.command()
def apply(
    env: Annotated[str | None, typer.Option("--env", help="Environment (not with --plan).")] = None,
    repo: RepoPathOpt = Path("."),
    rev: RevOpt = "HEAD",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            envvar="SERVEOPS_ADDRESS",
            help="Ray dashboard URL (default: the plan's, or http://127.0.0.1:8265).",
        ),
    ] = None,
    registry_uri: RegistryOpt = None,
    serving_code: Annotated[
        str | None,
        typer.Option(
            "--serving-code",
            envvar="SERVEOPS_SERVING_CODE",
            help="installed, pip, or a bundle URI (see `plan`); ignored with --plan, whose "
            "configs have it already.",
        ),
    ] = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="Apply a plan saved by `plan --out`.")
    ] = None,
    http_port: HttpPortOpt = 8000,
    timeout: TimeoutOpt = "300s",
    prune: PruneOpt = False,
) -> None:
    """Apply Git's desired state to Ray Serve (or a saved plan, refused if it went stale)."""

    def run() -> None:
        if plan_file is not None:
            the_plan = _load_plan(plan_file)
            if env is not None and env != the_plan.environment:
                raise BadInput(
                    f"--env {env} does not match the plan's environment {the_plan.environment}"
                )
            _check_revision_unmoved(the_plan)
            target_address = address or the_plan.address
        else:
            if env is None:
                raise BadInput("pass --env ENV (or --plan FILE)")
            target_address = address or default_address()
        code = parse_serving_code(serving_code if plan_file is None else None)
        registry = registry_from_uri(registry_uri) if registry_uri or plan_file is None else None
        with ServeClient(target_address, http_port=http_port) as client:
            for attempt in range(1, REPLAN_ATTEMPTS + 1):
                if plan_file is None:
                    assert env is not None
                    assert registry is not None
                    target = Revision(str(repo), rev, env)
                    the_plan = plan_revision(
                        target, client, registry, prune=prune, serving_code=code
                    )
                print_to(out, plan_text(the_plan))
                if not the_plan.has_changes:
                    return
                enforce_policies(the_plan, registry)
                try:
                    result = apply_plan(
                        the_plan,
                        client,
                        timeout_s=seconds("--timeout", timeout),
                        log=lambda m: out.print(f"  {m}"),
                    )
                    break
                except StalePlan as err:
                    # A saved plan is the user's to remake; one made just now is ours.
                    if plan_file is not None or attempt == REPLAN_ATTEMPTS:
                        raise
                    out.print(f"  {err.message.split(';')[0]}: planning again")
        out.print(
            f"[green]applied[/] {the_plan.source.commit[:12]} to {the_plan.environment!r} in {result.seconds:.1f}s"
        )

    run_command(run)


def _load_plan(path: Path) -> Plan:
    """A plan file within PLAN_LIMITS (size, UTF-8; pydantic's JSON parser bounds nesting)."""
    if not path.is_file():
        raise BadInput(f"{path}: no such plan file")
    text, problems = read_file(path, PLAN_LIMITS)
    if text is None:
        raise BadInput("; ".join(str(p) for p in problems))
    try:
        return Plan.model_validate_json(text)
    except ValueError as e:
        raise BadInput(f"{path}: not a serveops plan: {str(e)[:2000]}") from None


def _check_revision_unmoved(the_plan: Plan) -> None:
    """A plan made from a branch is stale once the branch has moved on."""
    repo = open_repo(the_plan.source.repo)
    now = resolve_commit(repo, the_plan.source.rev).hexsha
    if now != the_plan.source.commit:
        raise StalePlan(
            f"revision {the_plan.source.rev!r} has moved since the plan was made "
            f"({the_plan.source.commit[:12]} -> {now[:12]}); make a new plan"
        )


register_status_command(app)  # here: `serveops --help` lists it after apply


@app.command()
def bundle(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the bundle to.")],
) -> None:
    """Zip this serveops' serving code for clusters without it: serveops-<version>.zip, to
    upload where the nodes can read it and pass as --serving-code <its URI>."""

    def run() -> None:
        try:
            path = build_bundle(out_dir)
        except OSError as e:
            raise BadInput(f"--out {out_dir}: cannot write the bundle: {e.strerror or e}") from None
        out.print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
        out.print(
            f"upload it, then: serveops apply ... --serving-code <scheme>://<where>/{path.name}"
        )

    run_command(run)


@app.command()
def schema(
    check: Annotated[bool, typer.Option(help="Fail if the committed files are stale.")] = False,
) -> None:
    """Write the generated files: the JSON Schema and the spec reference (from the pydantic
    models), the policy file reference in docs/policy.md (from the policy models), and the
    command reference in docs/cli.md (from the commands)."""
    from controller.cli import reference
    from controller.policy import docs as policy_docs
    from controller.spec.schema import write_generated

    stale = write_generated(Path("."), check=check)
    if policy_docs.write_reference(Path("."), check=check):
        stale.append(policy_docs.DOC_PATH)
    if reference.write(Path("."), check=check):
        stale.append(reference.CLI_REFERENCE_PATH)
    if check and stale:
        err.print(f"stale generated files: {', '.join(stale)}; run `serveops schema`")
        raise typer.Exit(1)
    for path in stale:
        out.print(f"wrote {path}")


@app.command()
def demo(
    workdir: Annotated[
        Path,
        typer.Option(help="Where the demo keeps its repository, MLflow store, state and reports."),
    ] = Path(".demo"),
    num_cpus: Annotated[int, typer.Option(help="CPUs the local Ray may use.")] = 2,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="The short tour: apply v1, requests, v2 by hand, status (2 minutes)."
        ),
    ] = False,
) -> None:
    """The tour: a local Ray, MLflow and Git; v1 through the controller under load, a pull
    request refused by a policy, a simulation that fails v2, a canary to v3 with analysis, a
    rollback. Each step prints its duration; the first that fails stops the tour."""
    if quick:
        from controller.dev.demo import run_demo

        run_command(lambda: run_demo(workdir, num_cpus))
    else:
        from controller.dev.tour import run_tour

        run_command(lambda: run_tour(workdir, num_cpus))


@app.command()
def version() -> None:
    """Print the serveops version."""
    out.print(__version__)


# Command groups defined next to what they drive.
app.command("check")(policy_check)
app.add_typer(policy_app, name="policy")
register_loop_command(app)
register_sync_command(app)
register_history_commands(app)
register_simulator_commands(app)
register_rollout_commands(app)
register_lease_commands(app)
register_monitor_commands(app)
register_propose_command(app)
register_batch_commands(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
