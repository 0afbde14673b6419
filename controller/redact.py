"""Secrets out of everything serveops says: messages, logs, notifications, plans, the store.

One place decides what a secret looks like, and every place that surfaces a URI or an external
message (a registry error, Git's stderr, a notification, a stored plan) passes it through
`redact` first:

- the userinfo of any URL (`https://user:token@host` -> `https://***@host`),
- the value of a secret-looking query parameter or `name=value` / `name: value` pair
  (`?api_key=...`, `password=...`, `"token": "..."`),
- secret-shaped strings whatever surrounds them: GitHub, GitLab and Slack tokens, AWS access
  key ids, JWTs, `Bearer`/`Basic` credentials, private key blocks,
- every value registered with `register_secret` (the webhook secret, credentials read from the
  controller's environment), wherever it appears.

The replacement never contains a quote or a backslash and patterns never span one, so
redacting a JSON text leaves valid JSON.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Names whose values are secrets (query parameters, `k=v` text, JSON keys, headers, variables):
# names ending in one of these words. `auth` and `sig` only as a whole word (not `author`);
# no `pwd`, which is the shell's working directory far more often than a password.
_SECRET_WORDS = (
    r"passw(?:or)?d|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"secret[_-]?key|signing[_-]?key|credentials?|authorization|signature|cookie|"
    r"session[_-]?id|oauth|(?<![A-Za-z0-9])(?:auth|sig)"
)
SECRET_NAME = rf"(?:[A-Za-z0-9_.-]*?(?:{_SECRET_WORDS}))(?![A-Za-z0-9_.-])"
_SECRET_NAME_RE = re.compile(rf"^{SECRET_NAME}$", re.IGNORECASE)
# What a masked value may span: never a quote, a backslash, a separator or a space; and never
# a `${VAR}` reference, which names a secret without holding it.
_VALUE = r"(?!\$\{)[^\s\"'\\&;,#<>)}\]]+"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # URL userinfo: scheme://user:pass@host -> scheme://***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"'\\<>]+@"), rf"\1{MASK}@"),
    # HTTP credentials: `Bearer <token>`, `Basic <base64>`
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # A secret-named query parameter
    (re.compile(rf"(?i)([?&;]{SECRET_NAME}=){_VALUE}"), rf"\1{MASK}"),
    # "name": "value" (JSON), name="value", name: 'value' with a secret name
    (re.compile(rf"(?i)(\b{SECRET_NAME}[\"']?\s*[:=]\s*[\"'])(?!\$\{{)[^\"'\\]+"), rf"\1{MASK}"),
    # name: value, name=value (unquoted) with a secret name
    (
        re.compile(
            rf"(?i)(\b{SECRET_NAME}\s*[:=]\s*)(?!{re.escape(MASK)}|(?:bearer|basic)\s){_VALUE}"
        ),
        rf"\1{MASK}",
    ),
    # Secret-shaped strings, wherever they are
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"(?i)(hooks\.slack\.com/services/)[A-Za-z0-9/]+"), rf"\1{MASK}"),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^\"\\]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
        ),
        f"-----PRIVATE KEY {MASK}-----",
    ),
)

_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_lock = threading.Lock()
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words


def register_secret(*values: str | None) -> None:
    """Values that are secrets wherever they appear (e.g. the webhook secret, a tracking
    server's password): `redact` masks them from now on, in this process."""
    global _known_re
    with _lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                _known.add(value)
        if _known:
            alternatives = sorted(_known, key=len, reverse=True)  # longest first
            _known_re = re.compile("|".join(re.escape(v) for v in alternatives))


def register_url_credentials(*urls: str | None) -> None:
    """The password of each URL's userinfo is a secret from now on. (Not the user name: a name
    such as `serveops` would mask ordinary text everywhere; `redact` masks whole userinfo.)"""
    for url in urls:
        try:
            parts = urlsplit(url or "")
        except ValueError:
            continue
        register_secret(parts.password)


def register_webhook_urls(*urls: str | None) -> None:
    """Webhook URLs (notifications) carry their secret in the path, as Slack's do: the whole
    URL and its path are secrets from now on (an HTTP client's log line names the URL)."""
    for url in urls:
        if not url:
            continue
        register_url_credentials(url)
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        register_secret(url, path if path.strip("/") else None)


def register_environment_secrets(environ: Mapping[str, str]) -> None:
    """Secrets the controller's configuration holds: the values of secret-named variables
    (SERVEOPS_WEBHOOK_SECRET, MLFLOW_TRACKING_PASSWORD, ..._TOKEN) and the userinfo of URLs in
    any variable (MLFLOW_TRACKING_URI=https://user:pass@...)."""
    for name, value in environ.items():
        if is_secret_name(name):
            register_secret(value)
        if "://" in value and "@" in value:
            register_url_credentials(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    global _known_re
    with _lock:
        _known.clear()
        _known_re = None


def is_secret_name(name: str) -> bool:
    """Does a parameter, header, field or variable with this name hold a secret?"""
    return bool(_SECRET_NAME_RE.match(name))


def redact(text: str) -> str:
    """`text` with every credential masked (see the module's docstring)."""
    if not text:
        return text
    known = _known_re
    if known is not None:
        text = known.sub(MASK, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def strip_userinfo(url: str) -> str:
    """A URL without its userinfo (`https://u:p@host/x` -> `https://host/x`), for configs that
    must reach the right server without carrying the credentials to it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


def redact_data(value: Any) -> Any:
    """A copy of JSON-like data with secret-named keys' values masked and strings redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_secret_name(k) and v else redact_data(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redact_logs(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Put a RedactingFilter on `handlers` (default: the root logger's), once each."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
