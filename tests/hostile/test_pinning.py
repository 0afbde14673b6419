"""Any client can send `x-serveops-pin-version`: it must not reach a candidate at 0% or a shadow
version, nor count in canary analysis. Only a token the controller signed pins a request, and
pinned requests are counted apart. The router's class is driven outside Serve (fake handles)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from starlette.requests import Request

from controller.rollout.analysis import analyse
from controller.rollout.router_metrics import parse, window
from controller.serving import router
from controller.serving.pinning import PIN_HEADER
from controller.serving.protocol import VERSION_HEADER, RouterConfig, Target
from controller.spec.models import Analysis

STABLE = Target(app="fraud--v1", version="1", weight=100)
CANDIDATE = Target(app="fraud--v2", version="2", weight=0)
SHADOW = Target(app="fraud--v3", version="3", weight=0)


@pytest.fixture
def signer() -> Any:
    from controller.serving.pinning import PinSigner

    return PinSigner.generate()


class Handle:
    """A version application's handle: answers with its version."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.predict = self

    async def remote(self, payload: Any) -> dict[str, Any]:
        return {"status": 200, "body": {"predictions": [0], "version": self.version}}


class Counted:
    """Stands in for the router's metrics: (traffic, version) of every answer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def record(self, deployment: str, target: Target, traffic: str, status: int, t: float) -> None:
        self.seen.append((traffic, target.version))

    def agreement(self, *args: Any) -> None:
        pass

    def waited(self, *args: Any) -> None:
        pass

    def served(self, *args: Any) -> None:
        pass

    def queue_now(self, *args: Any) -> None:
        pass

    def mirror_unsent(self, *args: Any) -> None:
        pass


def replica(**config: Any) -> Any:
    r = router.Router.func_or_class("fraud")  # the class behind the Serve deployment
    r.reconfigure(
        RouterConfig(
            deployment="fraud", targets=[STABLE, CANDIDATE], shadow=[SHADOW], timeout_s=5, **config
        ).model_dump(exclude_defaults=True)
    )
    r._running = {"fraud--v1", "fraud--v2", "fraud--v3"}
    r._poller = object()  # no status polling outside Serve
    r._handle = lambda app: Handle(app.rsplit("--v", 1)[1])
    r._metrics = Counted()
    return r


def call(r: Any, headers: dict[str, str]) -> str:
    body = json.dumps({"inputs": [[1.0]]}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/fraud",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    response = asyncio.run(r(Request(scope, receive)))
    return str(response.headers[VERSION_HEADER])


@pytest.mark.parametrize("version", ["2", "3"])  # a candidate at 0%, a shadow-only version
def test_an_unauthenticated_pin_is_routed_like_any_request(version: str) -> None:
    r = replica()  # a router without a pin key honours no pin at all
    assert call(r, {PIN_HEADER: version}) == "1"
    assert r._metrics.seen == [("live", "1")]
    from controller.serving.pinning import PinSigner

    keyed = replica(pin_keys=[PinSigner.generate().public_key])
    assert call(keyed, {PIN_HEADER: version}) == "1"
    assert call(keyed, {PIN_HEADER: version, "x-serveops-pin-token": "9999999999.AAAA"}) == "1"
    assert keyed._metrics.seen == [("live", "1"), ("live", "1")]


def test_only_a_valid_unexpired_token_for_this_deployment_pins(signer: Any) -> None:
    from controller.serving.pinning import PinSigner

    r = replica(pin_keys=[signer.public_key])
    assert call(r, signer.headers("fraud", "2", ttl_s=60)) == "2"
    assert call(r, signer.headers("fraud", "3", ttl_s=60)) == "3"  # a preview's shadow
    expired = signer.headers("fraud", "2", ttl_s=60, now=1_000_000)
    other_deployment = signer.headers("churn", "2", ttl_s=60)
    other_key = PinSigner.generate().headers("fraud", "2", ttl_s=60)
    swapped = {**signer.headers("fraud", "3", ttl_s=60), PIN_HEADER: "2"}  # token of another
    for headers in (expired, other_deployment, other_key, swapped):
        assert call(r, headers) == "1", headers
    assert r._metrics.seen == [("pinned", "2"), ("pinned", "3")] + [("live", "1")] * 4


def test_a_token_cannot_outlive_the_longest_ttl(signer: Any) -> None:
    from controller.serving.pinning import MAX_TTL_S, PIN_TOKEN_HEADER

    r = replica(pin_keys=[signer.public_key])
    far = signer.token("fraud", "2", ttl_s=10**9, now=1_000_000)  # minting caps it ...
    expires, signature = far.split(".")
    assert int(expires) == 1_000_000 + MAX_TTL_S
    forged_expiry = {PIN_HEADER: "2", PIN_TOKEN_HEADER: f"{time.time() + 60:.0f}.{signature}"}
    assert call(r, forged_expiry) == "1"  # ... and a changed expiry breaks the signature


EXPOSITION = """\
# TYPE ray_serveops_router_requests_total counter
ray_serveops_router_requests_total{{serveops_deployment="fraud",version="2",traffic="live"}} 60
ray_serveops_router_requests_total{{serveops_deployment="fraud",version="2",traffic="pinned"}} {pinned}
ray_serveops_router_requests_total{{serveops_deployment="fraud",version="1",traffic="live"}} 600
# TYPE ray_serveops_router_errors_total counter
ray_serveops_router_errors_total{{serveops_deployment="fraud",version="2",traffic="live"}} 6
ray_serveops_router_errors_total{{serveops_deployment="fraud",version="1",traffic="live"}} 6
"""


def test_pinned_requests_never_count_in_canary_analysis() -> None:
    """An outsider's requests, were they pinned, could dilute the candidate's 10% error rate
    below the limit or reach min_requests; pinned ones are not in the window at all."""
    spec = Analysis(min_requests=50, max_error_rate_increase=1.0, max_p95_regression_pct=None)
    before = parse(EXPOSITION.format(pinned=0))
    after = parse(EXPOSITION.format(pinned=1000))
    candidate = window(None, after, "fraud", "2")
    assert (candidate.requests, candidate.errors) == (60, 6)
    assert analyse(spec, candidate, window(None, after, "fraud", "1")).verdict == "fail"
    assert window(before, after, "fraud", "2").requests == 0  # only pinned traffic since
