"""Simulation evidence: signed verdicts of `serveops simulate` (and of a batch deployment's
sample comparison, `serveops batch plan --compare --evidence`), found again by what was judged.

The simulate job of a pull request writes one record per simulated deployment; the gate (in
`serveops check` and in the controller) reads it as the `simulation` input. A record is keyed
by (environment, deployment, key), where key is the SHA-256 of the deployment's spec as
canonical JSON with its model resolved to an exact version: the same desired state has the
same key at any commit, so a squash merge or an unrelated commit still finds it, and any other
change to the spec (or a moved alias) does not.

Each record is signed with HMAC-SHA256 under a key given out of band (SERVEOPS_EVIDENCE_KEY,
or the file SERVEOPS_EVIDENCE_KEY_FILE names): a record that is unsigned, badly signed, or
about another deployment is not evidence. The pull request's tree never holds the key, so it
cannot write evidence for itself.

Stores: a directory (a path or a file:// URI) for now; EvidenceStore is the interface an
object store (s3://, gs://) would implement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from controller.errors import BadInput
from controller.spec.batch import BatchInference
from controller.spec.models import NAME_PATTERN, ModelDeployment, parse_model_uri

# What a record is about: an endpoint (its simulation's verdict) or a batch deployment (its
# sample comparison's verdict, `serveops batch plan --compare --evidence`).
Judged = ModelDeployment | BatchInference

EVIDENCE_FORMAT = "serveops-evidence/v1"
KEY_ENV = "SERVEOPS_EVIDENCE_KEY"
KEY_FILE_ENV = "SERVEOPS_EVIDENCE_KEY_FILE"
STORE_ENV = "SERVEOPS_EVIDENCE_STORE"
MAX_RECORD_BYTES = 256 * 1024  # a record is a summary: far smaller than this
MAX_KEY_FILE_BYTES = 4096
MIN_KEY_BYTES = 16
MAX_CHECKS = 50  # checks of the report kept in a record
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class EvidenceStore(Protocol):
    """Where records live. Implementations: DirectoryStore; an object store would follow."""

    @property
    def location(self) -> str:
        """The store as a user names it (a URI), for messages."""
        ...

    def get(self, environment: str, deployment: str, key: str) -> bytes | None:
        """The record's bytes (at most MAX_RECORD_BYTES + 1 read), or None when absent."""
        ...

    def put(self, environment: str, deployment: str, key: str, data: bytes) -> str:
        """Write (replace) a record atomically; return where it went."""
        ...


def _check_names(environment: str, deployment: str, key: str) -> None:
    # They become path segments (or object names): never `..` or a slash.
    for what, value in (("environment", environment), ("deployment", deployment)):
        if not re.match(NAME_PATTERN, value):
            raise BadInput(f"evidence: {what} {value!r} is not a deployment name")
    if not _DIGEST.match(key):
        raise BadInput(f"evidence: key {key!r} is not a SHA-256 hex digest")


class DirectoryStore:
    """Records as files: <root>/<environment>/<deployment>/<key>.json."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return self.root.as_uri() if self.root.is_absolute() else str(self.root)

    def _path(self, environment: str, deployment: str, key: str) -> Path:
        _check_names(environment, deployment, key)
        return self.root / environment / deployment / f"{key}.json"

    def get(self, environment: str, deployment: str, key: str) -> bytes | None:
        path = self._path(environment, deployment, key)
        try:
            with path.open("rb") as fh:
                return fh.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BadInput(f"evidence store {self.location}: cannot read {path}: {err}") from None

    def put(self, environment: str, deployment: str, key: str, data: bytes) -> str:
        path = self._path(environment, deployment, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # readers see the old record or the new one, never half of one
        except OSError as err:
            raise BadInput(f"evidence store {self.location}: cannot write {path}: {err}") from None
        return str(path)


def open_store(uri: str) -> EvidenceStore:
    """A store from a path or a file:// URI (other schemes: not yet)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadInput(f"evidence store {uri!r}: a file:// URI names no host")
        return DirectoryStore(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise BadInput(
            f"evidence store {uri!r}: scheme {parsed.scheme!r} is not supported "
            "(a directory path or file:// URI)"
        )
    if not uri:
        raise BadInput("evidence store: empty location")
    return DirectoryStore(Path(uri))


def load_key(
    environ: Mapping[str, str] | None = None, key_file: Path | None = None
) -> bytes | None:
    """The signing key: `key_file`, else $SERVEOPS_EVIDENCE_KEY_FILE, else
    $SERVEOPS_EVIDENCE_KEY; None when none is given. A key shorter than 16 bytes is bad input."""
    env = os.environ if environ is None else environ
    path = key_file or (Path(env[KEY_FILE_ENV]) if env.get(KEY_FILE_ENV) else None)
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as err:
            raise BadInput(f"evidence key file {path}: {err.strerror or err}") from None
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise BadInput(f"evidence key file {path}: larger than {MAX_KEY_FILE_BYTES} bytes")
        key: bytes | None = raw.strip()
        source = str(path)
    else:
        text = env.get(KEY_ENV)
        key = text.strip().encode() if text else None
        source = f"${KEY_ENV}"
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise BadInput(f"evidence key ({source}) is shorter than {MIN_KEY_BYTES} bytes")
    return key


def spec_digest(deployment: Judged, model_name: str, version: str) -> str:
    """The record key: SHA-256 of the spec as canonical JSON, `spec.model` resolved to
    `models:/<name>/<version>`. Not the rendered Serve config: its runtime_env depends on the
    controller's settings, which differ between CI and the cluster."""
    spec = deployment.spec.model_dump(mode="json")
    spec["model"] = f"models:/{model_name}/{version}"
    doc = {"spec": spec, "model": {"name": model_name, "version": str(version)}}
    return hashlib.sha256(_canonical(doc)).hexdigest()


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sign(body: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class EvidenceRecord:
    """A verified record: what the `simulation` CEL input is built from."""

    environment: str
    deployment: str
    key: str
    model: str  # models:/<name>/<version>
    passed: bool
    verdict: str
    reason: str
    checks: list[dict[str, Any]]
    commits: dict[str, str]
    created_at: str
    location: str

    def as_cel(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.verdict,
            "reason": self.reason,
            "checks": self.checks,
            "evidence": {
                "key": self.key,
                "model": self.model,
                "commits": self.commits,
                "created_at": self.created_at,
                "location": self.location,
            },
        }


@dataclass(frozen=True)
class Lookup:
    """The outcome of reading one record: a verified record, or why there is none."""

    record: EvidenceRecord | None
    problem: str | None = None  # set when a record exists but is not evidence


def _summary(report: Mapping[str, Any], environment: str, name: str) -> dict[str, Any]:
    """The part of a simulation report a record keeps: verdict, reason, checks."""
    per = report.get("deployments")
    if isinstance(per, Mapping):  # a report with one entry per deployment
        entry = per.get(f"{environment}/{name}", per.get(name))
        if not isinstance(entry, Mapping):
            raise BadInput(f"the simulation report has no entry for {environment}/{name}")
        report = entry
    verdict = report.get("verdict")
    passed = report.get("passed") is True and verdict in (None, "pass")
    checks = []
    for c in report.get("checks") or []:
        if isinstance(c, Mapping):
            checks.append(
                {k: c[k] for k in ("name", "status", "gating", "reason") if k in c and _plain(c[k])}
            )
    return {
        "passed": passed,
        "verdict": str(verdict if verdict is not None else ("pass" if passed else "fail")),
        "reason": str(report.get("reason", "")),
        "checks": checks[:MAX_CHECKS],
    }


def _plain(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def resolved_model(deployment: Judged, version: str | None = None) -> tuple[str, str]:
    """(name, version) of `spec.model`: its own version when pinned, else `version` (what the
    registry resolved the alias to)."""
    name, pinned, _ = parse_model_uri(deployment.spec.model)
    resolved = pinned or version
    if not resolved:
        raise BadInput(
            f"{deployment.metadata.environment}/{deployment.metadata.name}: "
            f"{deployment.spec.model} follows an alias; give the version it resolved to"
        )
    return name, str(resolved)


def write_evidence(
    store: EvidenceStore,
    deployment: Judged,
    resolved_version: str | None,
    report: Mapping[str, Any],
    commits: Mapping[str, str],
    key: bytes,
    *,
    now: dt.datetime | None = None,
) -> EvidenceRecord:
    """Record the verdict of a simulation of `deployment` (as simulated: its head spec).

    `resolved_version`: the version `spec.model` resolved to (None when the spec pins one);
    `report`: report.json of `serveops simulate` as a dict (its top level, or one entry of its
    `deployments`); `commits`: e.g. {"base": sha, "head": sha}. Returns the record written."""
    if len(key) < MIN_KEY_BYTES:
        raise BadInput(f"evidence key is shorter than {MIN_KEY_BYTES} bytes")
    environment, name = deployment.metadata.environment, deployment.metadata.name
    model_name, version = resolved_model(deployment, resolved_version)
    digest = spec_digest(deployment, model_name, version)
    summary = _summary(report, environment, name)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()
    body: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "environment": environment,
        "deployment": name,
        "key": digest,
        "model": f"models:/{model_name}/{version}",
        **summary,
        "commits": {str(k): str(v) for k, v in commits.items()},
        "created_at": when,
    }
    data = json.dumps({**body, "signature": _sign(body, key)}, indent=2, sort_keys=True) + "\n"
    if len(data.encode()) > MAX_RECORD_BYTES:
        raise BadInput(f"evidence record for {environment}/{name} exceeds {MAX_RECORD_BYTES} bytes")
    location = store.put(environment, name, digest, data.encode())
    return _record(body, location)


def _record(body: Mapping[str, Any], location: str) -> EvidenceRecord:
    return EvidenceRecord(
        environment=str(body["environment"]),
        deployment=str(body["deployment"]),
        key=str(body["key"]),
        model=str(body["model"]),
        passed=body["passed"] is True,
        verdict=str(body["verdict"]),
        reason=str(body["reason"]),
        checks=list(body["checks"]),
        commits=dict(body["commits"]),
        created_at=str(body["created_at"]),
        location=location,
    )


_FIELDS = {
    "format": str,
    "environment": str,
    "deployment": str,
    "key": str,
    "model": str,
    "passed": bool,
    "verdict": str,
    "reason": str,
    "checks": list,
    "commits": dict,
    "created_at": str,
    "signature": str,
}


def read_evidence(
    store: EvidenceStore,
    deployment: Judged,
    resolved_version: str | None,
    key: bytes | None,
) -> Lookup:
    """The verified record of `deployment`'s spec (its model resolved), or why there is none:
    no record (problem None), or a record that is not evidence (problem says why)."""
    environment, name = deployment.metadata.environment, deployment.metadata.name
    model_name, version = resolved_model(deployment, resolved_version)
    digest = spec_digest(deployment, model_name, version)
    data = store.get(environment, name, digest)
    if data is None:
        return Lookup(None)
    where = f"evidence {store.location} {environment}/{name}/{digest[:12]}"
    if len(data) > MAX_RECORD_BYTES:
        return Lookup(None, f"{where}: larger than {MAX_RECORD_BYTES} bytes, not read")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        return Lookup(None, f"{where}: not JSON ({err})")
    if not isinstance(doc, dict):
        return Lookup(None, f"{where}: not a JSON object")
    bad = [f for f, kind in _FIELDS.items() if not isinstance(doc.get(f), kind)]
    if bad:
        return Lookup(None, f"{where}: missing or mistyped field(s) {', '.join(bad)}")
    if key is None:
        return Lookup(None, f"{where}: no evidence key to verify it with (${KEY_ENV})")
    body = {k: v for k, v in doc.items() if k != "signature"}
    if not hmac.compare_digest(_sign(body, key), doc["signature"]):
        return Lookup(None, f"{where}: bad signature, not evidence")
    expected = (EVIDENCE_FORMAT, environment, name, digest)
    if (doc["format"], doc["environment"], doc["deployment"], doc["key"]) != expected:
        return Lookup(None, f"{where}: signed for another deployment or spec, not evidence")
    return Lookup(_record(body, where))
