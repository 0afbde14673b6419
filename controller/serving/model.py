"""The model server: one MLflow pyfunc model version behind MLflow's scoring protocol.

Requests look like MLflow's own `/invocations` bodies (`dataframe_split`, `dataframe_records`,
`inputs`, `instances`, optional `params`), so existing MLflow clients work unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from controller.serving import code_origin
from controller.serving.inputs import InputParser
from controller.serving.protocol import VERSION_HEADER
from controller.serving.startup import in_idle_time, worker_back_to_normal
from controller.serving.warmup import DEFAULT_WARMUP_PREDICTIONS, warm

logger = logging.getLogger("ray.serve")


def to_jsonable(predictions: Any) -> Any:
    """numpy arrays, pandas frames and series to plain JSON values."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):
        return predictions.tolist()
    if isinstance(predictions, dict):
        return {k: to_jsonable(v) for k, v in predictions.items()}
    if isinstance(predictions, list | tuple):
        return [to_jsonable(v) for v in predictions]
    return predictions


@serve.deployment
class ModelServer:
    def __init__(
        self, model_uri: str, version: str, warmup: int = DEFAULT_WARMUP_PREDICTIONS
    ) -> None:
        self._uri = model_uri
        self._version = version

        def load() -> Any:
            import mlflow.pyfunc

            return mlflow.pyfunc.load_model(model_uri)

        # In the CPU time the serving replicas leave: a rollout starts this beside them.
        self._model, priority = in_idle_time(load)
        moved, refused = worker_back_to_normal()  # the `worker` policy: all of it was idle
        if moved or refused:
            logger.info("worker's start in idle CPU time: %d thread(s) moved back, %d left "
                        "(no privilege)", moved, refused)  # fmt: skip
        self._inputs = InputParser(self._model.metadata.get_input_schema())
        logger.info("loaded %s %s (%s)", model_uri, priority.line(), code_origin())
        # Before the constructor returns: Serve sends no request to a replica still starting.
        logger.info("%s: %s", model_uri, warm(self._model, warmup).line())

    def predict(self, payload: Any) -> dict[str, Any]:
        """Score one request. Returns {"status", "body"} so errors cross the handle as values."""
        from mlflow.exceptions import MlflowException

        if not isinstance(payload, dict):
            return _bad_request("request body must be a JSON object in MLflow's scoring format")
        payload = dict(payload)
        params = payload.pop("params", None)
        try:
            data = self._inputs.parse(payload)
            predictions = self._model.predict(data, params=params)
        except MlflowException as err:
            return _bad_request(err.message)
        except (ValueError, TypeError, KeyError) as err:
            return _bad_request(f"{err.__class__.__name__}: {err}")
        return {"status": 200, "body": {"predictions": to_jsonable(predictions)}}

    async def __call__(self, request: Request) -> JSONResponse:
        """Direct HTTP, for a version application given a route of its own (e.g. benchmarks)."""
        try:
            payload = await request.json()
        except ValueError:
            result = _bad_request("request body is not valid JSON")
        else:
            result = self.predict(payload)
        return JSONResponse(
            result["body"], status_code=result["status"], headers={VERSION_HEADER: self._version}
        )


def _bad_request(message: str) -> dict[str, Any]:
    return {"status": 400, "body": {"error_code": "BAD_REQUEST", "message": message}}


def build(args: dict[str, Any]) -> Any:
    # `warmup` is rendered only when the spec sets it, so configs rendered before it existed
    # (and the replicas they run) do not change.
    warmup = int(args.get("warmup", DEFAULT_WARMUP_PREDICTIONS))
    return ModelServer.bind(args["model_uri"], args["version"], warmup)  # type: ignore[attr-defined]
