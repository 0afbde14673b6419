"""docs/cli.md's command reference, generated from the commands themselves.

The page's prose stays hand-written above a marker; everything below it is this module's
output (every command, its usage, its options with their environment variables and defaults).
`serveops schema` rewrites it and a test fails when the committed page is stale, as for the
spec reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import typer.core
import typer.main

CLI_REFERENCE_PATH = "docs/cli.md"
MARKER = "<!-- generated below by `serveops schema` from the commands: do not edit below -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(option: typer.core.TyperOption) -> str:
    if option.is_flag:
        return "`true`" if option.default else ""
    default = option.default
    if default is None or default == () or callable(default):
        return ""
    return f"`{default}`"


def _command(lines: list[str], name: str, command: Any, parent: typer.Context) -> None:
    ctx = typer.Context(command, info_name=name, parent=parent)
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                _command(lines, sub, child, ctx)  # its path is the parent's + sub
        return
    lines += [f"### `{ctx.command_path}`", ""]
    if command.help:
        lines += [" ".join(command.help.split()), ""]
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines += [f"    {ctx.command_path} {usage}", ""]
    rows = []
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument):
            rows.append((f"`{(param.name or '').upper()}` (argument)", "", "", param.help or ""))
        elif isinstance(param, typer.core.TyperOption) and not param.hidden:
            names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            env = param.envvar if isinstance(param.envvar, str) else ""
            rows.append((names, f"`{env}`" if env else "", _default(param), param.help or ""))
    if rows:
        lines += ["| option | env | default | |", "|---|---|---|---|"]
        lines += [f"| {n} | {e} | {_cell(d)} | {_cell(h)} |" for n, e, d, h in rows]
        lines.append("")


def reference_text() -> str:
    """The generated part of the page: one section per command, in the order of `--help`."""
    from controller.cli.main import app

    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="serveops")
    lines = [MARKER, "", "## Command reference", ""]
    assert isinstance(group, typer.core.TyperGroup)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            _command(lines, name, command, ctx)
    return "\n".join(lines).rstrip() + "\n"


def page_text(current: str) -> str:
    """The page with its generated part replaced (appended when the marker is missing)."""
    prose = current.split(MARKER)[0].rstrip()
    return f"{prose}\n\n{reference_text()}"


def write(root: Path, check: bool = False) -> bool:
    """Rewrite the page (or, with check, only compare); True when it was stale."""
    path = root / CLI_REFERENCE_PATH
    current = path.read_text() if path.exists() else "# The serveops command\n"
    text = page_text(current)
    if text == current:
        return False
    if not check:
        path.write_text(text)
    return True
