"""Pre- and post-rollout hooks: smoke requests to the candidate, or a command; both gate.

The rollout engine says when a stage's hooks are due (`rollout.hooks_due`); a controller pass
runs them here and hands the `HookResult` to `rollout.decide`. Hooks run in order and stop at
the first failure. A pass killed while hooks run runs them again at the next pass, so hooks
should be safe to repeat (smoke requests are; make commands so).

- smoke: each request goes through the deployment's route on Serve's HTTP proxy, with the
  header `x-serveops-pin-version: <candidate version>`, which the router honours for versions
  it routes or mirrors to: so the request reaches the candidate through its own handle, before
  it has any traffic share. A request passes when the answer has `expect_status` *and* the
  `x-serveops-version` header names the candidate. An answer from another version is sent
  again for up to `pin_settle_s` (10 s): the router learns of a new version through its config
  push and its status poll, a moment after the controller does. Then it fails.
- command: a program and its arguments, no shell; exit 0 passes, anything else (or the
  timeout) fails. The commit that asks for a command is untrusted: a command runs only when
  the controller's own configuration allows its program (`--allow-hook-command`, never Git),
  in a minimal environment (PATH, LANG and the documented SERVEOPS_* variables: none of the
  controller's own, so no credential reaches it), and what it prints is cut short before it
  reaches a message.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from controller.rollout.state import HookResult, HookStage
from controller.serving.pinning import PIN_HEADER
from controller.serving.protocol import VERSION_HEADER
from controller.spec.models import Hook, SmokeRequest, parse_duration

# How long a smoke request answered by another version is sent again: the router may not know
# the candidate yet (its config push and its 0.5 s status poll trail the controller's view).
PIN_SETTLE_S = 10.0
PIN_RETRY_S = 0.25
# A command hook's whole environment, besides the SERVEOPS_* variables of its rollout.
HOOK_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_LIMIT = 300  # characters of a failing command's output kept in its message


@dataclass(frozen=True)
class HookContext:
    """The rollout a stage's hooks run for."""

    environment: str
    deployment: str
    route: str
    candidate_version: str
    stable_version: str
    commit: str
    serve_url: str  # Serve's HTTP proxy, e.g. http://127.0.0.1:8000

    @property
    def url(self) -> str:
        return self.serve_url.rstrip("/") + self.route


class HookRunner(Protocol):
    def run(self, stage: HookStage, hooks: list[Hook], ctx: HookContext) -> HookResult: ...


def serve_http_url(dashboard: str, http_options: dict[str, object] | None) -> str:
    """Serve's HTTP proxy next to the dashboard: same host, Serve's HTTP port (8000 unless the
    live config says otherwise). A proxy behind something else: ControllerSettings.serve_url."""
    url = httpx.URL(dashboard)
    port = (http_options or {}).get("port") or 8000
    return f"{url.scheme}://{url.host}:{port}"


class Hooks:
    """The real runner: HTTP for smoke requests, subprocesses for commands."""

    def __init__(
        self,
        *,
        cwd: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        pin_settle_s: float = PIN_SETTLE_S,
        allowed: frozenset[str] = frozenset(),
    ) -> None:
        self.cwd = cwd  # commands run here (the repository's work tree when there is one)
        self._transport = transport
        self.pin_settle_s = pin_settle_s
        # Programs command hooks may run, as the controller's configuration names them: an
        # absolute path, or a name looked up on HOOK_PATH.
        self.allowed = allowed

    def run(self, stage: HookStage, hooks: list[Hook], ctx: HookContext) -> HookResult:
        done: list[str] = []
        for hook in hooks:
            ok, detail = self._smoke(hook, ctx) if hook.smoke else self._command(hook, stage, ctx)
            if not ok:
                return HookResult(stage, False, f"{hook.name}: {detail}")
            done.append(f"{hook.name} ({detail})")
        return HookResult(stage, True, ", ".join(done))

    def _smoke(self, hook: Hook, ctx: HookContext) -> tuple[bool, str]:
        requests = hook.smoke or []
        with httpx.Client(timeout=parse_duration(hook.timeout), transport=self._transport) as c:
            for i, request in enumerate(requests):
                failure = _check(c, request, ctx, self.pin_settle_s)
                if failure:
                    return False, f"request {i + 1}/{len(requests)}: {failure}"
        return True, f"{len(requests)}/{len(requests)} requests answered as expected"

    def _command(self, hook: Hook, stage: HookStage, ctx: HookContext) -> tuple[bool, str]:
        argv = hook.command or []
        timeout = parse_duration(hook.timeout)
        if not argv or argv[0] not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "none"
            return False, (
                f"{argv[0] if argv else 'an empty command'} is not a program this controller "
                f"allows hooks to run (allowed: {allowed}; the controller's "
                "--allow-hook-command, not Git, decides)"
            )
        env = {
            "PATH": HOOK_PATH,
            "LANG": "C.UTF-8",
            "SERVEOPS_ENVIRONMENT": ctx.environment,
            "SERVEOPS_DEPLOYMENT": ctx.deployment,
            "SERVEOPS_STAGE": stage,
            "SERVEOPS_CANDIDATE_VERSION": ctx.candidate_version,
            "SERVEOPS_STABLE_VERSION": ctx.stable_version,
            "SERVEOPS_COMMIT": ctx.commit,
            "SERVEOPS_URL": ctx.url,
        }
        try:
            done = subprocess.run(
                argv,
                env=env,
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return False, f"command not found: {argv[0]}"
        except PermissionError:
            return False, f"command not executable: {argv[0]}"
        except subprocess.TimeoutExpired:
            return False, f"{argv[0]} did not finish within {hook.timeout}"
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip()).splitlines()
            said = f": {output[-1][:OUTPUT_LIMIT]}" if output else ""
            return False, f"{argv[0]} exited {done.returncode}{said}"
        return True, "exit 0"


def _check(
    client: httpx.Client, request: SmokeRequest, ctx: HookContext, settle_s: float
) -> str | None:
    """Why one smoke request failed, or None."""
    url = ctx.url + request.path
    what = f"{request.method} {ctx.route}{request.path}"
    headers = {**request.headers, PIN_HEADER: ctx.candidate_version}
    deadline, tries = time.monotonic() + settle_s, 0
    while True:
        tries += 1
        try:
            response = client.request(request.method, url, json=request.body, headers=headers)
        except httpx.HTTPError as err:
            return f"{what} failed: {err.__class__.__name__}: {err}"
        version = response.headers.get(VERSION_HEADER)
        if version == ctx.candidate_version:
            break
        if time.monotonic() >= deadline:
            sent = f" ({tries} tries over {settle_s:g}s)" if tries > 1 else ""
            return (
                f"{what} was answered by {f'v{version}' if version else 'no model version'}, "
                f"not the candidate v{ctx.candidate_version} (HTTP {response.status_code}){sent}"
            )
        time.sleep(PIN_RETRY_S)
    if response.status_code != request.expect_status:
        return (
            f"{what} got HTTP {response.status_code}, expected {request.expect_status}: "
            f"{response.text.strip()[:300]}"
        )
    return None
