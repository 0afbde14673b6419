"""Pinned requests: a request may name the model version it wants (rollout smoke hooks do),
if it proves the controller sent it.

A pin is two headers: `x-serveops-pin-version: <version>` and `x-serveops-pin-token:
<expiry>.<signature>`, an Ed25519 signature by the controller's pin key over the deployment, the
version and the expiry (unix seconds, at most MAX_TTL_S ahead). The router holds only public
keys (`RouterConfig.pin_keys`): nothing secret is in Serve's config, a plan or the state store,
and a key read from any of them cannot mint a token. Without a valid, unexpired token the pin
headers are ignored and the request is routed like any other, so a client cannot reach a
candidate at 0% or a shadow version, nor add to a candidate's analysed traffic.

A valid pin is honoured only for a version the router already routes or mirrors to and that is
RUNNING, whatever its weight (a candidate at 0%, or one only mirrored to in a blue-green
preview). Pinned requests are counted under their own metric label (`traffic="pinned"`), never
as live traffic, so rollout analysis never reads them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import time
from collections.abc import Mapping
from typing import Any

from controller.serving.protocol import RouterConfig, Target

PIN_HEADER = "x-serveops-pin-version"
PIN_TOKEN_HEADER = "x-serveops-pin-token"
MAX_TTL_S = 3600  # a token further ahead than this is refused: a leaked one ages out soon
_DOMAIN = b"serveops-pin/1"  # what a signature is for: never valid as another message


def _message(deployment: str, version: str, expires: int) -> bytes:
    return b"\n".join((_DOMAIN, deployment.encode(), version.encode(), str(expires).encode()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PinSigner:
    """The controller's pin key: mints tokens; its public half goes into router configs."""

    def __init__(self, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if len(seed) != 32:
            raise ValueError("a pin key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = seed
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = _b64(raw)

    @classmethod
    def generate(cls) -> PinSigner:
        return cls(os.urandom(32))

    @classmethod
    def from_text(cls, text: str) -> PinSigner:
        """A key as `to_text` wrote it (base64url of the 32-byte seed)."""
        try:
            return cls(_unb64(text.strip()))
        except (binascii.Error, ValueError):
            raise ValueError("not a serveops pin key (base64url of 32 bytes)") from None

    def to_text(self) -> str:
        return _b64(self._seed)

    def __repr__(self) -> str:  # never the seed
        return f"PinSigner(public_key={self.public_key!r})"

    def token(self, deployment: str, version: str, ttl_s: float, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + min(ttl_s, MAX_TTL_S))
        signature = self._key.sign(_message(deployment, version, expires))
        return f"{expires}.{_b64(signature)}"

    def headers(
        self, deployment: str, version: str, ttl_s: float, now: float | None = None
    ) -> dict[str, str]:
        """The two headers that pin a request of `deployment` to `version` for `ttl_s`."""
        return {
            PIN_HEADER: version,
            PIN_TOKEN_HEADER: self.token(deployment, version, ttl_s, now),
        }


@functools.lru_cache(maxsize=1024)  # a smoke hook resends one token; floods only churn this
def _signed(keys: tuple[str, ...], deployment: str, version: str, token: str) -> int | None:
    """The expiry of a token whose signature one of `keys` verifies, else None."""
    try:
        from cryptography.exceptions import InvalidSignature
    except ImportError:  # a node without it honours no pin
        return None
    expires_text, _, signature_text = token.partition(".")
    try:
        expires = int(expires_text)
        signature = _unb64(signature_text)
    except (ValueError, binascii.Error):
        return None
    message = _message(deployment, version, expires)
    for key in keys:
        public = _public_key(key)
        if public is None:
            continue
        try:
            public.verify(signature, message)
        except InvalidSignature:
            continue
        return expires
    return None


@functools.lru_cache(maxsize=16)
def _public_key(text: str) -> Any:
    """A router's configured key, parsed once (None: not a key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(text))
    except (ValueError, binascii.Error):
        return None


def authentic(
    config: RouterConfig, headers: Mapping[str, str], now: float | None = None
) -> str | None:
    """The version a request pins, when its token is valid for this router's deployment and
    unexpired; None for no pin, or one that does not prove the controller sent it."""
    version, token = headers.get(PIN_HEADER), headers.get(PIN_TOKEN_HEADER)
    if not version or not token or not config.pin_keys or len(token) > 200:
        return None
    expires = _signed(tuple(config.pin_keys), config.deployment, version, token)
    now = time.time() if now is None else now
    if expires is None or not now < expires <= now + MAX_TTL_S:
        return None
    return version


def _named(config: RouterConfig, headers: Mapping[str, str], now: float | None) -> list[Target]:
    """The targets and shadows of the version the request pins (none without a valid pin)."""
    version = authentic(config, headers, now)
    if version is None:
        return []
    return [t for t in [*config.targets, *config.shadow] if t.version == version]


def pinned(
    config: RouterConfig,
    running: set[str],
    headers: Mapping[str, str],
    now: float | None = None,
) -> Target | None:
    """The target the request pins, if its pin is authentic and names a version the router
    knows and can reach."""
    return next((t for t in _named(config, headers, now) if t.app in running), None)


def awaits_status(
    config: RouterConfig,
    running: set[str],
    headers: Mapping[str, str],
    now: float | None = None,
) -> bool:
    """The request authentically pins a version the router routes or mirrors to but has not
    seen RUNNING yet: worth a fresh status read before routing it as any other (the poll may
    just be behind)."""
    return any(t.app not in running for t in _named(config, headers, now))
