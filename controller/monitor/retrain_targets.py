"""Retraining targets, as the operator configures them (never Git): `--retrain-target
NAME=webhook:URL`, `NAME=github-dispatch:OWNER/REPO[:EVENT]`, `NAME=command:PATH`.

A deployment file names targets (`spec.monitoring.actions.retrain`); what a name does is the
controller's configuration, because a pull request is untrusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from controller.errors import BadInput

RetrainKind = Literal["webhook", "github-dispatch", "command"]
DEFAULT_GITHUB_API = "https://api.github.com"
DEFAULT_EVENT = "serveops-retrain"
TIMEOUT_S = 10.0  # one call's limit (HTTP exchange or command)
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_EVENT = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class RetrainTarget:
    name: str
    kind: RetrainKind
    where: str  # the URL, OWNER/REPO, or the program's absolute path
    event: str = DEFAULT_EVENT  # github-dispatch: the dispatch's event_type


@dataclass(frozen=True)
class RetrainConfig:
    targets: tuple[RetrainTarget, ...] = ()
    github_api: str = DEFAULT_GITHUB_API
    token_env: str | None = None  # the variable holding the GitHub token
    timeout_s: float = TIMEOUT_S

    def target(self, name: str) -> RetrainTarget | None:
        return next((t for t in self.targets if t.name == name), None)

    def unknown(self, names: list[str]) -> list[str]:
        """The names no configured target has."""
        return [n for n in names if self.target(n) is None]


def parse_retrain_target(value: str) -> RetrainTarget:
    """One `--retrain-target` value; bad input names the option (and never echoes a URL)."""
    name, sep, rest = value.partition("=")
    kind, colon, where = rest.partition(":")
    usage = "NAME=webhook:URL, NAME=github-dispatch:OWNER/REPO[:EVENT] or NAME=command:PATH"
    if not sep or not colon or not where:
        raise BadInput(f"--retrain-target must be {usage}, not {name!r}=...")
    if not _NAME.match(name):
        raise BadInput(f"--retrain-target: {name!r} is not a target name (e.g. nightly-train)")
    if kind == "webhook":
        if not where.startswith(("http://", "https://")):
            raise BadInput(f"--retrain-target {name}: webhook:URL needs an http(s) URL")
        return RetrainTarget(name, "webhook", where)
    if kind == "github-dispatch":
        repo, _, event = where.partition(":")
        if not _REPO.match(repo) or (event and not _EVENT.match(event)):
            raise BadInput(f"--retrain-target {name}: github-dispatch:OWNER/REPO[:EVENT]")
        return RetrainTarget(name, "github-dispatch", repo, event or DEFAULT_EVENT)
    if kind == "command":
        if not where.startswith("/"):
            raise BadInput(f"--retrain-target {name}: command:PATH needs an absolute path")
        return RetrainTarget(name, "command", where)
    raise BadInput(f"--retrain-target {name}: unknown kind {kind!r}; use {usage}")


def retrain_config(
    values: list[str] | None,
    github_api: str = DEFAULT_GITHUB_API,
    token_env: str | None = None,
) -> RetrainConfig:
    """The `--retrain-*` options as a RetrainConfig."""
    targets = tuple(parse_retrain_target(v) for v in values or [])
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise BadInput("--retrain-target: a name is configured twice")
    if not github_api.startswith(("http://", "https://")):
        raise BadInput("--retrain-github-api must be an http(s) URL")
    return RetrainConfig(targets, github_api.rstrip("/"), token_env)


NO_RETRAIN = RetrainConfig()  # no target configured
