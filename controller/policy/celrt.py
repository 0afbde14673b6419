"""The CEL runtime (common-expression-language) without its interactive shell.

`import cel` runs `from . import cli`: the package's REPL, which imports prompt_toolkit (about
0.1 s at every start of serveops, which never uses the REPL). Until something reads an
attribute of `cel.cli`, a stand-in takes its place; the first read imports the real module.
Import `cel` from here: `from controller.policy.celrt import cel`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _DeferredShell(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("cel.cli") is self:
            del sys.modules["cel.cli"]
        real = importlib.import_module("cel.cli")
        return getattr(real, name)


if "cel" not in sys.modules and "cel.cli" not in sys.modules:
    sys.modules["cel.cli"] = _DeferredShell("cel.cli")

import cel  # noqa: E402

__all__ = ["cel"]
