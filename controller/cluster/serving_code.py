"""Where the cluster gets serveops' serving code (the router and the model server) from.

Every Ray node that runs a replica imports `controller.serving`. Three sources:

- `installed` (default): the nodes' Python has serveops installed: the venv of a local cluster,
  or the cluster's image. Nothing is added to the rendered configs.
- `pip`: each application's `runtime_env.pip` installs `serveops[serving]==<this version>`
  (the serving extra only: no CLI, no Locust, no Ray pin: the nodes have their Ray) from the
  nodes' package index.
- a bundle URI, `<scheme>://.../serveops-<this version>.zip` (https, s3, gs, azure, abfss, or
  file for a path every node has): each application's `runtime_env.py_modules` downloads it.
  `serveops bundle --out DIR` builds it; upload it where the nodes can read it.

Both shipped forms name this serveops version, so a config always runs the serving code of the
serveops that rendered it, and a controller upgrade is a plan that restarts replicas. Ray only
takes remote URIs through the REST API (it cannot upload a local directory), hence a bundle.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import controller
from controller import __version__
from controller.errors import BadInput

# What `--serving-code pip` installs on the nodes: the serving extra of this very version.
SERVING_REQUIREMENT = f"serveops[serving]=={__version__}"

# Ray's remote protocols for runtime_env packages (ray._private.runtime_env.protocol).
BUNDLE_SCHEMES = ("https", "http", "s3", "gs", "azure", "abfss", "file")
SETTING = "--serving-code / SERVEOPS_SERVING_CODE"


def bundle_name(version: str = __version__) -> str:
    return f"serveops-{version}.zip"


@dataclass(frozen=True)
class ServingCode:
    source: Literal["installed", "pip", "bundle"] = "installed"
    uri: str | None = None  # the bundle's, for source "bundle"

    def runtime_env(self) -> dict[str, Any]:
        """What every serveops application's runtime_env gets (merged with its own pip)."""
        if self.source == "pip":
            return {"pip": [SERVING_REQUIREMENT]}
        if self.source == "bundle":
            return {"py_modules": [self.uri]}
        return {}

    def describe(self) -> str:
        if self.source == "pip":
            return f"pip install {SERVING_REQUIREMENT} on the nodes"
        if self.source == "bundle":
            return f"bundle {self.uri}"
        return "installed on the nodes"


INSTALLED = ServingCode()


def parse_serving_code(value: str | None) -> ServingCode:
    """`installed`, `pip`, or a bundle URI; anything else is bad input (nothing is planned)."""
    if value is None or value.strip() in ("", "installed"):
        return INSTALLED
    value = value.strip()
    if value == "pip":
        return ServingCode("pip")
    url = urlparse(value)
    if url.scheme not in BUNDLE_SCHEMES:
        raise BadInput(
            f"{SETTING}: {value!r} is not 'installed', 'pip' or a bundle URI "
            f"({', '.join(s + '://' for s in BUNDLE_SCHEMES)})"
        )
    name = url.path.rsplit("/", 1)[-1]
    if name != bundle_name():
        found = re.fullmatch(r"serveops-(.+)\.zip", name)
        why = (
            f"it is the bundle of serveops {found.group(1)}"
            if found
            else "its file name is not a serveops bundle's"
        )
        raise BadInput(
            f"{SETTING}: {value} cannot serve configs rendered by serveops {__version__}: "
            f"{why}; expected .../{bundle_name()} (build it with `serveops bundle --out DIR`)"
        )
    return ServingCode("bundle", value)


def build_bundle(out_dir: Path) -> Path:
    """Zip this serveops' `controller` package as a py_modules bundle. Ray strips a remote
    zip's single top-level directory, so the package sits one level down."""
    package = Path(controller.__file__).parent
    top = bundle_name().removesuffix(".zip")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / bundle_name()
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                # A fixed timestamp: the same code always makes the same bytes.
                entry = zipfile.ZipInfo(f"{top}/controller/{path.relative_to(package)}")
                entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                z.writestr(entry, path.read_bytes())
    partial.replace(target)  # a reader never sees half a bundle
    return target
