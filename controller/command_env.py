"""The environment an operator-allowed command runs with (rollout hooks, retraining triggers).

A command is started because of something Git asked for, so it does not inherit the
controller's environment (its credentials): only a fixed PATH, a few harmless variables, the
ones the operator passes by name, and what the caller says about the event.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# Where the program is looked up (its PATH), whatever the controller's is.
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"
# What a command inherits from the controller's environment, besides what the operator passes.
COMMAND_BASE_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def command_env(
    pass_env: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """PATH, COMMAND_BASE_ENV and `pass_env` from `environ` (the process's), then `extra`."""
    source = os.environ if environ is None else environ
    inherited = (*COMMAND_BASE_ENV, *pass_env)
    return {
        "PATH": COMMAND_PATH,
        **{name: source[name] for name in inherited if name in source},
        **(extra or {}),
    }
