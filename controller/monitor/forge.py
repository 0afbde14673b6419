"""Opening the pull request of a proposal on a forge (GitHub's REST API, or one that speaks it:
GitHub Enterprise, Gitea's compatible endpoints).

The branch is already pushed when this runs: a pull request is one more way to say so. It is
opened at most once per branch: an open pull request with the same head is found and reused, so
`serveops propose` run again (by hand or by a schedule) never opens a second one. Every call is
bounded (a time limit, at most MAX_RESPONSE_BYTES of an answer read) and the token, read from
the environment variable the operator names, appears in no message.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from controller.errors import BadInput, ServeopsError
from controller.httpread import read_capped
from controller.redact import redact

DEFAULT_FORGE_API = "https://api.github.com"
DEFAULT_TOKEN_ENV = "GITHUB_TOKEN"
TIMEOUT_S = 10.0  # one HTTP exchange
MAX_RESPONSE_BYTES = 1024 * 1024  # a page of open pull requests is far smaller
MAX_TITLE = 200
MAX_BODY = 60_000  # GitHub's limit is 65,536 characters
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")


class ForgeError(ServeopsError):
    """The forge refused or did not answer; the message says which call and why (redacted)."""


@dataclass(frozen=True)
class Forge:
    """Where pull requests go: `github:OWNER/REPO` on `api`, the token in `$token_env`."""

    owner: str
    repo: str
    api: str = DEFAULT_FORGE_API
    token_env: str = DEFAULT_TOKEN_ENV
    timeout_s: float = TIMEOUT_S

    @classmethod
    def parse(
        cls, value: str, api: str = DEFAULT_FORGE_API, token_env: str = DEFAULT_TOKEN_ENV
    ) -> Forge:
        kind, sep, where = value.partition(":")
        if kind != "github" or not sep or not _REPO.match(where):
            raise BadInput(f"--forge must be github:OWNER/REPO, not {value[:100]!r}")
        if not api.startswith(("http://", "https://")):
            raise BadInput(f"--forge-api must be an http(s) URL, not {api[:100]!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", token_env):
            raise BadInput(f"--forge-token-env must name an environment variable: {token_env!r}")
        owner, repo = where.split("/")
        return cls(owner, repo, api.rstrip("/"), token_env)

    def token(self, environ: Mapping[str, str] | None = None) -> str:
        """The token from the environment (checked before anything is written)."""
        token = (os.environ if environ is None else environ).get(self.token_env)
        if not token:
            raise BadInput(f"no forge token: ${self.token_env} is not set")
        return token


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    created: bool  # False: an open one for the branch was there already


def open_pull_request(
    forge: Forge,
    branch: str,
    base: str,
    title: str,
    body: str,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PullRequest:
    """The open pull request of `branch` into `base`: found, or else created."""
    headers = {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {forge.token(environ)}",
        "User-Agent": "serveops",
    }
    pulls = f"{forge.api}/repos/{forge.owner}/{forge.repo}/pulls"
    with httpx.Client(timeout=forge.timeout_s, transport=transport, headers=headers) as client:
        found = _call(
            client,
            "GET",
            pulls,
            forge.timeout_s,
            params={"head": f"{forge.owner}:{branch}", "base": base, "state": "open"},
        )
        if isinstance(found, list) and found:
            return _pull_request(found[0], created=False)
        request = {
            "title": title[:MAX_TITLE],
            "head": branch,
            "base": base,
            "body": body[:MAX_BODY],
            "maintainer_can_modify": False,
        }
        return _pull_request(
            _call(client, "POST", pulls, forge.timeout_s, json=request), created=True
        )


def _call(client: httpx.Client, method: str, url: str, timeout_s: float, **kwargs: Any) -> Any:
    """One bounded exchange; the answer's JSON, or ForgeError."""
    deadline = time.monotonic() + timeout_s
    try:
        with client.stream(method, url, **kwargs) as response:
            said, cut = read_capped(response, MAX_RESPONSE_BYTES, deadline)
    except httpx.HTTPError as err:
        raise ForgeError(
            f"{method} {_path(url)}: {type(err).__name__}: {redact(str(err))}"
        ) from None
    if cut is not None:
        raise ForgeError(f"{method} {_path(url)}: {cut} (in {timeout_s:g}s)")
    if response.status_code >= 300:
        text = said.decode("utf-8", "replace").strip()[:300]
        raise ForgeError(f"{method} {_path(url)}: HTTP {response.status_code}: {redact(text)}")
    try:
        return json.loads(said)
    except ValueError:
        raise ForgeError(f"{method} {_path(url)}: the answer is not JSON") from None


def _pull_request(data: Any, *, created: bool) -> PullRequest:
    if not isinstance(data, dict) or not isinstance(data.get("number"), int):
        raise ForgeError("the forge's answer names no pull request number")
    url = data.get("html_url")
    return PullRequest(data["number"], str(url)[:500] if url else "", created)


def _path(url: str) -> str:
    try:
        return httpx.URL(url).path
    except httpx.InvalidURL:
        return "?"
