"""Pre- and post-rollout hooks: smoke requests to the candidate, or a command; both gate.

The rollout engine says when a stage's hooks are due (`rollout.hooks_due`); a controller pass
runs them here and hands the `HookResult` to `rollout.decide`. Hooks run in order and stop at
the first failure. A pass killed while hooks run runs them again at the next pass, so hooks
should be safe to repeat (smoke requests are; make commands so).

- smoke: each request goes through the deployment's route on Serve's HTTP proxy, pinned to the
  candidate: `x-serveops-pin-version: <candidate version>` and a token signed with the
  controller's pin key (`PinSigner`, controller/serving/pinning.py), which the router honours
  for versions it routes or mirrors to: so the request reaches the candidate through its own
  handle, before it has any traffic share, and is counted as pinned, never as live traffic.
  A request passes when the answer has `expect_status` *and* the `x-serveops-version` header
  names the candidate. An answer from another version is sent
  again for up to `pin_settle_s` (10 s): the router learns of a new version through its config
  push and its status poll, a moment after the controller does. Then it fails.
- command: a program and its arguments, no shell; exit 0 passes, anything else (or the
  timeout) fails. The commit that asks for a command is untrusted: a command runs only when
  the controller's own configuration allows its program (`--allow-hook-command`, never Git),
  and it does not inherit the controller's environment (its credentials): only PATH (fixed),
  HOOK_BASE_ENV, the variables the operator passes (`pass_env`, SERVEOPS_HOOK_ENV) and its
  rollout's SERVEOPS_* variables. What it prints is cut short and redacted before it reaches
  a message.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from controller.command_env import COMMAND_BASE_ENV, COMMAND_PATH, command_env
from controller.errors import BadInput
from controller.redact import is_secret_name, redact, register_secret
from controller.rollout.state import HookResult, HookStage
from controller.serving.pinning import PinSigner
from controller.serving.protocol import VERSION_HEADER
from controller.spec.models import Hook, SmokeRequest, parse_duration

# How long a smoke request answered by another version is sent again: the router may not know
# the candidate yet (its config push and its 0.5 s status poll trail the controller's view).
PIN_SETTLE_S = 10.0
PIN_RETRY_S = 0.25
PIN_KEY_FILE = "pin-key"  # next to the state file, unless $SERVEOPS_PIN_KEY gives the key
PIN_KEY_ENV = "SERVEOPS_PIN_KEY"  # the controller's pin key (PinSigner.to_text), shared or not
HOOK_ENV = "SERVEOPS_HOOK_ENV"  # names of the controller's variables command hooks also get
HOOK_PATH = COMMAND_PATH  # a command hook's PATH (controller/command_env.py)
HOOK_BASE_ENV = COMMAND_BASE_ENV  # what it inherits besides `pass_env`
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


def pin_key_of(runner: HookRunner | None) -> str | None:
    """The public pin key routers must hold for `runner`'s smoke requests (None: no pins)."""
    signer = getattr(runner, "signer", None)
    return signer.public_key if isinstance(signer, PinSigner) else None


# A key is 43 characters; anything much longer is not one (and is never read whole).
MAX_PIN_KEY_BYTES = 1024


def _signer(text: str, where: str) -> PinSigner:
    if len(text) > MAX_PIN_KEY_BYTES:
        raise BadInput(f"{where}: longer than {MAX_PIN_KEY_BYTES} bytes, not a serveops pin key")
    try:
        return PinSigner.from_text(text)
    except ValueError as err:
        raise BadInput(f"{where}: {err}") from None


def _read_signer(path: Path) -> PinSigner:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PIN_KEY_BYTES + 1)
    except OSError as err:
        raise BadInput(f"{path}: cannot read the pin key: {err.strerror or err}") from None
    return _signer(data.decode("ascii", errors="replace"), str(path))


def load_pin_signer(path: Path) -> PinSigner:
    """The controller's pin key: $SERVEOPS_PIN_KEY when set (controllers that share an
    environment share it), else the key in `path`, made on first use (0600), so a restarted
    controller keeps the key its routers hold."""
    if text := os.environ.get(PIN_KEY_ENV):
        return _signer(text[: MAX_PIN_KEY_BYTES + 1], f"${PIN_KEY_ENV}")
    if path.exists():
        return _read_signer(path)
    signer = PinSigner.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked: a second process making its key at
    # the same moment finds the first one's and uses it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.to_text() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read_signer(path)
    finally:
        tmp.unlink()
    return signer


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
        signer: PinSigner | None = None,
        pass_env: Sequence[str] = (),
    ) -> None:
        self.cwd = cwd  # commands run here (the repository's work tree when there is one)
        self._transport = transport
        self.pin_settle_s = pin_settle_s
        # Programs command hooks may run, as the controller's configuration names them: an
        # absolute path, or a name looked up on HOOK_PATH.
        self.allowed = allowed
        # Without a key of its own (tests, one-off runs) a runner makes one for its lifetime.
        self.signer = signer or PinSigner.generate()
        self.pass_env = tuple(pass_env)
        register_secret(*(os.environ.get(n) for n in self.pass_env if is_secret_name(n)))

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
        timeout = parse_duration(hook.timeout)
        ttl = (timeout + PIN_RETRY_S) * len(requests) + self.pin_settle_s + 60
        pin = self.signer.headers(ctx.deployment, ctx.candidate_version, ttl)
        with httpx.Client(timeout=timeout, transport=self._transport) as c:
            for i, request in enumerate(requests):
                failure = _check(c, request, ctx, self.pin_settle_s, pin)
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
        env = command_env(
            self.pass_env,
            {
                "SERVEOPS_ENVIRONMENT": ctx.environment,
                "SERVEOPS_DEPLOYMENT": ctx.deployment,
                "SERVEOPS_STAGE": stage,
                "SERVEOPS_CANDIDATE_VERSION": ctx.candidate_version,
                "SERVEOPS_STABLE_VERSION": ctx.stable_version,
                "SERVEOPS_COMMIT": ctx.commit,
                "SERVEOPS_URL": ctx.url,
            },
        )
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
            said = f": {redact(output[-1][:OUTPUT_LIMIT])}" if output else ""
            return False, f"{argv[0]} exited {done.returncode}{said}"
        return True, "exit 0"


def _check(
    client: httpx.Client,
    request: SmokeRequest,
    ctx: HookContext,
    settle_s: float,
    pin: dict[str, str],
) -> str | None:
    """Why one smoke request failed, or None. `pin`: the headers that pin it to the candidate."""
    url = ctx.url + request.path
    what = f"{request.method} {ctx.route}{request.path}"
    headers = {**request.headers, **pin}
    deadline, tries = time.monotonic() + settle_s, 0
    while True:
        tries += 1
        try:
            response = client.request(request.method, url, json=request.body, headers=headers)
        except httpx.HTTPError as err:
            return f"{what} failed: {err.__class__.__name__}: {redact(str(err))}"
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
            f"{redact(response.text.strip()[:300])}"
        )
    return None
