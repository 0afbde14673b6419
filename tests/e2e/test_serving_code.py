"""Shipping serveops' serving code to the cluster as a bundle, on a real local Ray Serve.

The nodes of a local cluster have serveops installed; a bundle given as --serving-code must
still be what the replicas import (Ray puts py_modules ahead of the installed packages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller import __version__
from controller.dev.demo import sample_request
from controller.serving.protocol import VERSION_HEADER
from tests.e2e.conftest import Cluster, Registry, post_until_ok
from tests.e2e.test_git_to_serve import replica_logs, spec, wait_gone
from tests.support import make_repo

pytestmark = pytest.mark.e2e
NAME = "shipped"


def test_a_bundle_given_as_serving_code_is_what_the_replicas_import(
    serveops: Any, cluster: Cluster, registry: Registry, tmp_path: Path
) -> None:
    built = serveops("bundle", "--out", str(tmp_path / "dist"))
    assert built.returncode == 0, built.stderr + built.stdout
    bundle = tmp_path / "dist" / f"serveops-{__version__}.zip"
    assert bundle.is_file()
    uri = f"file://{bundle}"
    repo = tmp_path / "repo"
    path = f"deployments/staging/{NAME}.yaml"
    make_repo(repo, {path: spec(registry.versions[0], name=NAME, num_cpus=0.1)}, "ship v1")

    older = serveops(
        "plan",
        "--repo",
        str(repo),
        "--env",
        "staging",
        "--serving-code",
        "file:///x/serveops-0.0.1.zip",
    )
    assert older.returncode == 2
    assert "the bundle of serveops 0.0.1" in older.stderr

    version_app = f"{NAME}--v{registry.versions[0]}"
    try:
        result = serveops("apply", "--repo", str(repo), "--env", "staging", "--serving-code", uri)
        assert result.returncode == 0, result.stderr + result.stdout
        answer = post_until_ok(cluster.url(f"/{NAME}"), sample_request())
        assert answer.status_code == 200, answer.text
        assert answer.headers[VERSION_HEADER] == registry.versions[0]

        with cluster.client() as client:
            live = client.get()
        for app in (NAME, version_app):
            assert live.apps[app].config["runtime_env"]["py_modules"] == [uri]
            # Each replica logs where its serving code came from: Ray's unpacked bundle.
            logged = [
                line.split(" (", 1)[-1]
                for line in replica_logs(cluster, app).splitlines()
                if "serving code from" in line
            ]
            assert logged, f"{app} logged no serving code"
            for line in logged:
                assert line.startswith(
                    f"serveops {__version__} serving code from {cluster.ray_dir}"
                ), line
                assert "/runtime_resources/py_modules_files/" in line, line

        # Without the setting, the plan puts the installed code back: both restart.
        plan = serveops("plan", "--repo", str(repo), "--env", "staging")
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count(f'runtime_env.py_modules: ["{uri}"] -> null  (restart)') == 2
    finally:
        with cluster.client() as client:
            live = client.get()
            client.put(
                [a.config for n, a in live.apps.items() if n not in (NAME, version_app)], live
            )
        wait_gone(cluster, NAME, version_app)
