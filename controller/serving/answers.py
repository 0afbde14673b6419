"""The router's own answers, when no version's answer is returned: errors and sheds.

Each names the deployment and, when one was chosen, the version, in the same headers as a
version's answer (protocol.py), so a client and `serveops replay` can tell who said no.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from controller.serving.protocol import (
    DEPLOYMENT_HEADER,
    RETRY_AFTER_S,
    SHED_HEADER,
    VERSION_HEADER,
    Target,
)


def headers(deployment: str, target: Target | None) -> dict[str, str]:
    out = {DEPLOYMENT_HEADER: deployment}
    if target is not None:
        out[VERSION_HEADER] = target.version
    return out


def error(status: int, message: str, target: Target | None) -> JSONResponse:
    body = {"error_code": status, "message": message}
    return JSONResponse(body, status_code=status, headers=headers("", target))


def shed(full: Target, why: str) -> JSONResponse:
    """503 at once for a request whose version has no room: retry in a moment."""
    response = error(
        503, f"version {full.version} is at capacity ({why}); retry after {RETRY_AFTER_S}s", full
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    response.headers[SHED_HEADER] = full.version
    return response


def timed_out(target: Target, timeout_s: float) -> JSONResponse:
    """504: the version did not answer within the request's timeout."""
    return error(504, f"version {target.version} did not answer in {timeout_s}s", target)
