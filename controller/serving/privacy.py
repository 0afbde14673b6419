"""What a recorded request keeps: allow-listed headers, and masked query values and body fields.

Recordings hold what users sent and are kept on disk for days: a header, query parameter or
body field is written only when a deployment wants it replayed, and never a credential.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from controller.redact import MASK, is_secret_name

# Describe one connection, not the request: replaying them would be wrong (a re-encoded body
# has another length) or meaningless. Never recorded, whatever the deny list says.
TRANSPORT_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _Names:
    """Case-insensitive header or parameter names and globs (`x-tenant-*`)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        lowered = [p.lower() for p in patterns]
        self._exact = frozenset(p for p in lowered if not any(c in p for c in "*?["))
        self._globs = tuple(p for p in lowered if any(c in p for c in "*?["))

    def __contains__(self, name: str) -> bool:
        return name in self._exact or any(fnmatch.fnmatchcase(name, g) for g in self._globs)

    def __bool__(self) -> bool:
        return bool(self._exact or self._globs)


class HeaderFilter:
    """The headers a record keeps: allow-listed ones (every one when `allow` is None) that are
    neither denied (names and globs, `*token*`) nor transport headers."""

    def __init__(self, deny: Iterable[str], allow: Iterable[str] | None = None) -> None:
        self._deny = _Names([*deny, *TRANSPORT_HEADERS])
        self._allow = _Names(allow) if allow is not None else None

    def denied(self, name: str) -> bool:
        return name in self._deny or (self._allow is not None and name not in self._allow)

    def __call__(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        kept: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1").lower()
            if not self.denied(name):
                kept[name] = raw_value.decode("latin-1")
        return kept


class Scrubber:
    """Masks what a deployment asks (and secret-looking query parameters, always) before a
    record is written: query values by parameter name, JSON body fields by rule."""

    def __init__(self, query: Iterable[str] = (), fields: Iterable[str] = ()) -> None:
        self._query = _Names(query)
        rules = [f.lower() for f in fields]
        self._keys = _Names(r for r in rules if "." not in r)  # a key at any depth
        self._paths = [r.split(".") for r in rules if "." in r]  # a path from the top

    def path(self, path: str) -> str:
        route, sep, query = path.partition("?")
        if not sep:
            return path
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [
            (k, MASK if k.lower() in self._query or is_secret_name(k) else v) for k, v in pairs
        ]
        return f"{route}?{urlencode(masked, safe='*')}"

    def body(self, value: Any) -> Any:
        if not self._keys and not self._paths:
            return value
        return self._walk(value, [])

    def _walk(self, value: Any, at: list[str]) -> Any:
        if isinstance(value, dict):
            return {k: self._field(k, v, at) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, [*at, str(i)]) for i, v in enumerate(value)]
        return value

    def _field(self, key: Any, value: Any, at: list[str]) -> Any:
        path = [*at, str(key).lower()]
        if path[-1] in self._keys or any(_matches(rule, path) for rule in self._paths):
            return MASK
        return self._walk(value, path)


def _matches(rule: list[str], path: list[str]) -> bool:
    return len(rule) == len(path) and all(
        fnmatch.fnmatchcase(p, r) for r, p in zip(rule, path, strict=True)
    )
