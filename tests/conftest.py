"""Markers by folder, so a run can be chosen by what it needs rather than by file names:

- `unit`: tests/unit and the rest (no cluster; fakes behind the real interfaces, real Git and
  SQLite);
- `e2e`: tests/e2e and any `test_*_e2e.py` (a real local Ray Serve, MLflow store, Git
  repositories, Locust);
- `slow`: anything that takes more than a few seconds on this project's 2-core machine
  (every e2e test, and unit tests marked by hand).

`make unit` runs `-m "not e2e"`; `make e2e` runs `-m e2e`; `make test` runs everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).relative_to(_HERE)
        if path.parts[0] == "e2e" or path.stem.endswith("_e2e"):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)
        else:
            item.add_marker(pytest.mark.unit)
        # Session fixtures that train models run once per xdist worker: their tests share
        # one worker (`--dist loadgroup`), so the other never trains the same models again.
        if "batch_versions" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("batch-mlflow"))
    # A test with a Ray of its own runs after every other (stable order otherwise): its
    # `ray stop` ends the session's shared cluster too.
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)


@pytest.fixture(autouse=True)
def _tracking_uri_restored() -> Iterator[None]:
    """`mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI into this process: restore it
    after each test, so one test's registry never becomes another's default `--registry-uri`."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def _no_ray_in_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A unit test that reaches Ray by accident (Serve's `get_app_handle`, Ray Data outside a
    job) starts a whole local cluster inside pytest, unlocked and never stopped; when it later
    dies, Ray's driver exits pytest itself with status 1 and no summary. Fail the test that did
    it instead, and stop the cluster."""
    yield
    if request.node.get_closest_marker("e2e") is not None:
        return
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        ray.shutdown()
        pytest.fail("this unit test started Ray: replace the call that reached it with a fake")


@pytest.fixture(scope="session")
def batch_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A real MLflow store with the demo model's v1, v2 (answers differently on about one row
    in ten) and v3 (v1's model again), trained once per session (per xdist worker): the batch
    sample-check tests only read it (tests/batch_support.py)."""
    from tests.batch_support import three_versions

    return three_versions(tmp_path_factory.mktemp("batch-mlflow"))
