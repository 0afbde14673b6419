"""Run a GitHub workflow's `run:` steps for real, in order, in a temporary repository.

Each job runs its steps with bash, as Actions does (`bash -e -o pipefail`), in the repository,
with the GITHUB_* variables a pull request or a push gives (an event payload file, a step
summary file, GITHUB_OUTPUT read back as the step's outputs) and `${{ }}` expressions
evaluated from the event, `vars`, `secrets`, `matrix` and earlier steps' outputs: an
expression this runner does not know fails the test rather than being guessed.

`uses:` steps are stood in for: checkout (the repository is already at the head), setup-python
(the venv's Python), artifacts (copied between jobs), github-script (its input file must
exist), upload-sarif (its file must exist). Stand-in programs, first on PATH:

- `serveops simulate` (needs a Ray cluster) and `serveops apply` (needs Serve): their command
  line is parsed by the real CLI (click's make_context on serveops' own typer app: every flag,
  type and required option checked), then simulate writes a report as the real one is shaped;
- `python -m pip install -e .`: serveops is the checkout's, already in this venv;
- `make test`: checked to be a target of the checkout's Makefile (`make -n`), not run (it is
  the suite running this).
Every other `serveops` command is the real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent

_SERVEOPS_SHIM = """\
#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] in (["simulate"], ["apply"]):
    import typer
    from controller.cli.main import app
    command = typer.main.get_command(app)
    import click
    try:
        ctx = command.make_context("serveops", list(args))
        sub = command.get_command(ctx, args[0])
        params = sub.make_context(args[0], list(args[1:]), parent=ctx).params
    except click.ClickException as err:  # a wrong flag, a missing option: as the real CLI
        err.show()
        sys.exit(2)
    if args[0] == "simulate":
        from controller.policy.gate import changed_subjects
        changed = [s.name for s in changed_subjects(str(params["repo"]), params["base"],
                   params["head"], use_merge_base=False)
                   if s.environment == params["env"] and s.model_changed and s.head]
        out = Path(params["out_dir"]); out.mkdir(parents=True, exist_ok=True)
        report = {{"format": "serveops-simulation-report/v1", "verdict": "pass",
                  "reason": "stand-in", "checks": [], "passed": True,
                  "meta": {{"environment": params["env"], "deployments": changed,
                           "base": params["base"], "head": params["head"]}}}}
        (out / "report.json").write_text(json.dumps(report))
        (out / "report.md").write_text("## Simulation: PASS (stand-in)\\n")
        (out / "report.html").write_text("<html></html>")
    print("stand-in:", " ".join(args))
    sys.exit(0)
from controller.cli.main import main
sys.argv[0] = "serveops"
sys.exit(main())
"""

_PYTHON_SHIM = """\
#!/bin/bash
if [ "$*" = "-m pip install -e ." ]; then echo "stand-in: serveops from the checkout"; exit 0; fi
exec {python} "$@"
"""

_MAKE_SHIM = """\
#!/bin/bash
exec {make} -n -C {root} "$@" > /dev/null
"""


def shims(directory: Path) -> Path:
    """The stand-in programs, in `directory` (put first on PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    make = shutil.which("make") or "/usr/bin/make"
    for name, text in (
        ("serveops", _SERVEOPS_SHIM.format(python=sys.executable)),
        ("python", _PYTHON_SHIM.format(python=sys.executable)),
        ("make", _MAKE_SHIM.format(make=make, root=REPO_ROOT)),
    ):
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return directory


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # `on:` parses as True in YAML 1.1
    return data


@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Run:
    """One workflow run: the event, its context, what the steps did."""

    repo: Path
    tmp: Path
    event_name: str
    event: dict[str, Any]
    sha: str
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    artifacts: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)  # `uses:` stood in for

    @property
    def summary(self) -> Path:
        return self.tmp / "step_summary.md"

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)

    def context(self) -> dict[str, Any]:
        return {"github": {"event": self.event, "sha": self.sha}}

    def run_workflow(self, name: str, matrix: dict[str, str] | None = None) -> None:
        workflow = load(name)
        for job_id in _job_order(workflow["jobs"]):
            job = workflow["jobs"][job_id]
            if "uses" in job:  # a reusable workflow of this repository
                self.run_workflow(Path(job["uses"]).name, matrix)
                continue
            self._run_job(job, matrix or {})

    def _run_job(self, job: dict[str, Any], matrix: dict[str, str]) -> None:
        outputs: dict[str, dict[str, str]] = {}
        scope = {**self.context(), "vars": self.vars, "secrets": self.secrets, "matrix": matrix}
        job_env = {k: _expand(str(v), scope, outputs) for k, v in (job.get("env") or {}).items()}
        for step in job["steps"]:
            if "uses" in step:
                self._uses(step, scope, outputs)
                continue
            env = {
                **job_env,
                **{k: _expand(str(v), scope, outputs) for k, v in (step.get("env") or {}).items()},
            }
            script = _expand(step["run"], scope, outputs)
            out_file = self.tmp / f"output-{len(self.steps)}"
            out_file.write_text("")
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script],
                cwd=self.repo,
                env={**self._base_env(out_file), **env},
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.steps.append(
                StepResult(
                    step.get("name", script), result.returncode, result.stdout, result.stderr
                )
            )
            if "id" in step:
                outputs[step["id"]] = _read_outputs(out_file.read_text())
            if result.returncode != 0:
                return  # a failed step ends the job, as on GitHub

    def _base_env(self, output: Path) -> dict[str, str]:
        pr = self.event.get("pull_request") or {}
        event_path = self.tmp / "event.json"
        event_path.write_text(json.dumps(self.event))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
        return {
            **env,
            "PATH": f"{self.tmp / 'shims'}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.repo),
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": self.sha,
            "GITHUB_REF": f"refs/pull/{pr['number']}/merge" if pr else "refs/heads/main",
            "GITHUB_HEAD_REF": (pr.get("head") or {}).get("ref", ""),
            "GITHUB_BASE_REF": (pr.get("base") or {}).get("ref", ""),
            "GITHUB_ACTOR": "octocat",
            "GITHUB_REPOSITORY": "org/models",
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_ENV": str(self.tmp / "github_env"),
            "RUNNER_TEMP": str(self.tmp),
        }

    def _uses(self, step: dict[str, Any], scope: dict[str, Any], outputs: Any) -> None:
        action = step["uses"].split("@")[0]
        with_ = {k: _expand(str(v), scope, outputs) for k, v in (step.get("with") or {}).items()}
        self.used.append(action)
        if action == "actions/upload-artifact":
            files = [
                (p.relative_to(self.repo).as_posix(), p.read_bytes())
                for pattern in with_["path"].split()
                for p in sorted(self.repo.glob(pattern))
            ]
            self.artifacts[with_["name"]] = files
        elif action == "actions/download-artifact":
            target = self.repo / with_["path"]
            for rel, data in self.artifacts.get(with_["name"], []):
                dest = target / Path(rel).relative_to(".serveops")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        elif action == "actions/github-script":
            for path in re.findall(r"readFileSync\('([^']+)'", with_["script"]):
                assert (self.repo / path).is_file(), f"github-script reads {path}, not written"
        elif action == "github/codeql-action/upload-sarif":
            if (
                not step.get("if", "").startswith("always()")
                or (self.repo / with_["sarif_file"]).exists()
            ):
                assert (self.repo / with_["sarif_file"]).is_file()
        elif action not in ("actions/checkout", "actions/setup-python"):
            raise AssertionError(f"no stand-in for {action}")


def _job_order(jobs: dict[str, Any]) -> list[str]:
    order: list[str] = []
    while len(order) < len(jobs):
        for job_id, job in jobs.items():
            needs = job.get("needs") or []
            needs = [needs] if isinstance(needs, str) else needs
            if job_id not in order and all(n in order for n in needs):
                order.append(job_id)
    return order


def _read_outputs(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _expand(text: str, scope: dict[str, Any], outputs: dict[str, dict[str, str]]) -> str:
    def value(m: re.Match[str]) -> str:
        expr = m.group(1)
        parts = expr.split(".")
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return outputs.get(parts[1], {}).get(parts[3], "")
        node: Any = scope
        for part in parts:
            if not isinstance(node, dict) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", part):
                raise AssertionError(f"expression {expr!r}: this runner does not evaluate it")
            node = node.get(part, "") if parts[0] in ("vars", "secrets") else node[part]
        return str(node)

    return _EXPR.sub(value, text)


def pull_request_event(base_sha: str, head_sha: str, number: int = 7) -> dict[str, Any]:
    return {
        "number": number,
        "pull_request": {
            "number": number,
            "base": {"sha": base_sha, "ref": "main"},
            "head": {"sha": head_sha, "ref": "feature"},
        },
    }


def repo_files() -> dict[str, str]:
    """deployments/ and policies/ of this checkout."""
    files: dict[str, str] = {}
    for folder in ("deployments", "policies"):
        for p in (REPO_ROOT / folder).rglob("*.yaml"):
            files[p.relative_to(REPO_ROOT).as_posix()] = p.read_text()
    return files


__all__ = ["Run", "load", "pull_request_event", "repo_files", "shims", "textwrap"]
