"""docs/getting-started.md's "same steps by hand", run as a newcomer would paste them: every
command line of the section, in order, in one bash shell, from a folder laid out like the
checkout (its deployments/ and policies/ copied), with the venv's bin first on PATH. Each line
must exit 0, or 1 where its comment says `exit 1`. A Ray of its own (`ray start`, `ray stop`:
the doc's), so the test runs last, after stopping the session's cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import stop_session_cluster

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "getting-started.md"
SECTION = ("### The same steps by hand", "## Your own repository")

pytestmark = pytest.mark.own_ray


def doc_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit status) for each logical line of the section's indented code
    blocks: `\\`-continued lines joined, comment-only lines dropped."""
    start, end = text.index(SECTION[0]), text.index(SECTION[1])
    commands: list[tuple[str, int]] = []
    pending = ""
    fenced = False
    for line in text[start:end].splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("    "):
            continue
        code = line[4:]
        if not pending and code.lstrip().startswith("#"):
            continue
        if code.rstrip().endswith("\\"):
            pending += code.rstrip()[:-1] + " "
            continue
        command = pending + code
        pending = ""
        commands.append((command, 1 if re.search(r"#\s*exit 1\b", command) else 0))
    assert not pending, f"a continued line ends the section: {pending!r}"
    return commands


def script(commands: list[tuple[str, int]]) -> str:
    """One shell for all of them (exports, `cd` and jobs carry over), stopping at the first
    line whose exit status is not the one the doc states."""
    lines = []
    for i, (command, expected) in enumerate(commands):
        lines += [
            # $SECONDS: the shell's age at each line, so a slow run shows its slow step.
            'echo "::: $SECONDS s" ' + shlex.quote(f"[{i}] {command[:100]}"),
            command,
            "rc=$?",
            f'if [ "$rc" -ne {expected} ]; then echo "::: [{i}] exited $rc, not {expected}"; '
            "exit 97; fi",
        ]
    return "\n".join(lines) + "\n"


def test_the_section_parses_into_the_commands_a_user_types() -> None:
    commands = doc_commands(DOC.read_text())
    typed = [c for c, _ in commands]
    assert any(c.startswith("ray start --head") for c in typed)
    assert typed[-1] == "ray stop"
    assert [c.split()[1] for c, code in commands if code == 1] == ["check", "simulate"]
    assert not any("$EDITOR" in c for c in typed)  # nothing left for the reader to edit


def test_getting_started_by_hand(tmp_path: Path) -> None:
    commands = doc_commands(DOC.read_text())
    work = tmp_path / "checkout"
    work.mkdir()
    for folder in ("deployments", "policies"):
        shutil.copytree(ROOT / folder, work / folder)
    (work / "run.sh").write_text(script(commands))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERVEOPS_", "MLFLOW_", "RAY_", "GIT_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="200",
        GIT_AUTHOR_NAME="newcomer",
        GIT_AUTHOR_EMAIL="newcomer@example.com",
        GIT_COMMITTER_NAME="newcomer",
        GIT_COMMITTER_EMAIL="newcomer@example.com",
    )
    stop_session_cluster()  # the doc's Ray gets the machine; its `ray stop` stops every Ray
    log = work / "run.log"  # a file, not a pipe: the doc's background jobs would hold a pipe
    with log.open("w") as sink:
        shell = subprocess.Popen(
            ["bash", "run.sh"],
            cwd=work,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        shell.wait(timeout=900)
    finally:
        # The doc's jobs (the controller, the curl loop) share the shell's process group: a
        # run stopped early leaves them running, and the doc's `ray stop` unrun.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, check=False)
    output = log.read_text(errors="replace")
    tail = "\n".join(output.splitlines()[-60:])
    assert shell.returncode == 0, tail
    assert "production-progressive-rollout" in output  # step 2: the rule that refused it
    assert (work / ".demo/reports/simulate-v2/report.html").exists()  # step 3's report
    rollback = subprocess.run(
        ["git", "-C", str(work / ".demo/repo"), "log", "-1", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "back to the version that served before" in rollback  # step 5's revert commit
    assert "Serveops-Rollback-Of:" in rollback
