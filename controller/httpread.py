"""Reading an HTTP answer within limits: at most so many bytes, until a deadline.

Every client serveops runs against a service that could misbehave (a forge, a retraining
webhook, a dashboard) reads answers through `read_capped`, so a peer that streams without end
costs a bounded amount of memory and time. What to do with a cut answer is the caller's: a
JSON API refuses it, a webhook's reply is only quoted.
"""

from __future__ import annotations

import time

import httpx

from controller.errors import Unreachable


def read_capped(
    response: httpx.Response, limit: int, deadline: float | None = None
) -> tuple[bytes, str | None]:
    """The answer's body, or its first `limit` bytes; and why the read stopped early (None:
    the whole answer was read). `deadline` is a time.monotonic() value."""
    said = bytearray()
    for chunk in response.iter_bytes():
        said += chunk
        if len(said) > limit:
            return bytes(said[:limit]), f"answer over {limit:,} bytes"
        if deadline is not None and time.monotonic() > deadline:
            return bytes(said), "no whole answer in time"
    return bytes(said), None


def get_capped(client: httpx.Client, url: str, limit: int, timeout_s: float) -> bytes:
    """The whole answer to `GET url`, within `limit` bytes and `timeout_s` in all; Unreachable
    when it fails, is too big or too slow (for callers that cannot use a cut answer)."""
    deadline = time.monotonic() + timeout_s
    try:
        with client.stream("GET", url, timeout=timeout_s) as response:
            response.raise_for_status()
            body, cut = read_capped(response, limit, deadline)
    except httpx.HTTPError as err:
        raise Unreachable(f"cannot read {url}: {err}") from None
    if cut is not None:
        raise Unreachable(f"cannot read {url}: {cut}")
    return body
