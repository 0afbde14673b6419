"""`make demo`: the whole Git-to-Serve flow on this machine, printed step by step.

It starts a local Ray (explicit CPU count) and a local MLflow store (SQLite), trains and registers
two scikit-learn models, makes a Git repository from the example in deployments/ and the
policies in policies/, checks the policies, applies v1 (apply gates on them again),
sends real requests, commits a move to v2, plans, applies, shows status, and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from controller.dev.localray import LocalRay, free_port
from controller.serving.protocol import VERSION_HEADER

MODEL_NAME = "breast-cancer"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: controller/dev/ is two below
EXAMPLE = ROOT / "deployments" / "staging" / "breast-cancer.yaml"
# The policies name production: a repository without that environment fails their check.
PRODUCTION_EXAMPLE = ROOT / "deployments" / "production" / "breast-cancer.yaml"
POLICIES = ROOT / "policies"


def train_and_register(tracking_uri: str, artifact_dir: Path, name: str = MODEL_NAME) -> list[str]:
    """Register two versions of a breast-cancer classifier: v1 weakly regularised, v2 strongly
    (v2 answers differently on about one row in ten).

    Uses scikit-learn's bundled data set, so nothing is downloaded.
    """
    return [register_model(tracking_uri, artifact_dir, c=c, name=name) for c in (1.0, 0.001)]


def register_model(
    tracking_uri: str,
    artifact_dir: Path,
    *,
    c: float,
    solver: str = "lbfgs",
    name: str = MODEL_NAME,
) -> str:
    """Train a logistic regression (regularisation `c`, `solver`) on the bundled breast-cancer
    data set, log it with its accuracy, register it as the next version of `name` and return
    that version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(tracking_uri)
    data = load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0
    )
    experiment = mlflow.get_experiment_by_name("serveops-demo")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment("serveops-demo", artifact_location=artifact_dir.as_uri())
    )
    # Logged models go to the current experiment: without this, MLflow 3 puts their artifacts
    # in ./mlruns of whatever directory the caller runs in.
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(experiment_id=experiment_id):
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, solver=solver, max_iter=5000)
        )
        model.fit(x_train, y_train)
        accuracy = float(model.score(x_test, y_test))
        mlflow.log_params({"C": c, "solver": solver})
        mlflow.log_metric("accuracy", accuracy)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            signature=infer_signature(x_train, model.predict(x_train)),
        )
    return str(info.registered_model_version)


def sample_request(rows: int = 3) -> dict[str, Any]:
    """An MLflow scoring-protocol body with rows of the bundled data set, both classes mixed."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    frame = data.iloc[[(i * 19) % len(data) for i in range(rows)]]
    return {"dataframe_split": frame.to_dict(orient="split")}


def _say(text: str) -> None:
    print(f"\n\033[1;36m==> {text}\033[0m", flush=True)


def _serveops(*args: str, env: dict[str, str], check: bool = True) -> int:
    cmd = [str(Path(sys.executable).with_name("serveops")), *args]
    print("$ serveops " + " ".join(args), flush=True)
    code = subprocess.run(cmd, env=env, check=False).returncode
    if check and code != 0:
        raise SystemExit(f"demo: `serveops {args[0]}` failed with exit code {code}")
    return code


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _send(url: str, n: int = 3) -> None:
    body = sample_request()
    for _ in range(n):
        r = httpx.post(url, json=body, timeout=30)
        print(
            f"  POST {url} -> {r.status_code} {VERSION_HEADER}={r.headers.get(VERSION_HEADER)} "
            f"predictions={r.json().get('predictions')}"
        )


def run_demo(workdir: Path, num_cpus: int = 2) -> None:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    http_port = free_port()
    ray = LocalRay(num_cpus)
    _say(f"Starting a local Ray head with --num-cpus {num_cpus}")
    ray.start()
    try:
        _tour(workdir, ray.address, http_port)
    finally:
        _say("Stopping the local Ray we started")
        ray.stop()
    _say("Done. The Git repository and the MLflow store are left in " + str(workdir))


def _tour(workdir: Path, address: str, http_port: int) -> None:
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {
        **os.environ,
        "SERVEOPS_ADDRESS": address,
        "SERVEOPS_HTTP_PORT": str(http_port),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    print(f"  dashboard: {address}   serve http: 127.0.0.1:{http_port}")

    _say(f"Training two scikit-learn models and registering them in MLflow ({tracking_uri})")
    versions = train_and_register(tracking_uri, workdir / "artifacts")
    print(f"  registered {MODEL_NAME} versions {', '.join(versions)}")

    _say("Making a Git repository from deployments/ (staging, production) and policies/")
    repo = workdir / "repo"
    (repo / "deployments" / "staging").mkdir(parents=True)
    spec_path = repo / "deployments" / "staging" / "breast-cancer.yaml"
    shutil.copy(EXAMPLE, spec_path)
    (repo / "deployments" / "production").mkdir()
    shutil.copy(PRODUCTION_EXAMPLE, repo / "deployments" / "production" / "breast-cancer.yaml")
    shutil.copytree(POLICIES, repo / "policies", ignore=shutil.ignore_patterns("tests"))
    _git(repo.parent, "init", "-q", "-b", "main", str(repo))
    _git(repo, "-c", "user.name=demo", "-c", "user.email=demo@example.com", "add", ".")
    _git(
        repo,
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@example.com",
        "commit",
        "-qm",
        "Deploy breast-cancer v1",
    )
    print(spec_path.read_text())

    _say("Validate, check the policies, plan and apply revision main (v1)")
    _serveops("validate", str(repo / "deployments"), env=env)
    _serveops("check", "--repo", str(repo), "--head", "main", "--all", "--env", "staging", env=env)
    _serveops("plan", "--repo", str(repo), "--rev", "main", "--env", "staging", env=env)
    _serveops("apply", "--repo", str(repo), "--rev", "main", "--env", "staging", env=env)

    url = f"http://127.0.0.1:{http_port}/breast-cancer"
    _say("Real requests, in MLflow's scoring format")
    _send(url)

    _say(f"Commit a change: model version {versions[0]} -> {versions[1]}")
    text = spec_path.read_text().replace(
        f"models:/{MODEL_NAME}/{versions[0]}", f"models:/{MODEL_NAME}/{versions[1]}"
    )
    spec_path.write_text(text)
    _git(
        repo,
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@example.com",
        "commit",
        "-qam",
        "Promote breast-cancer v2",
    )
    print(_git(repo, "show", "--stat", "--format=%h %s", "HEAD"))

    _say("Plan (saved), then apply the saved plan")
    plan_file = workdir / "plan.json"
    _serveops(
        "plan",
        "--repo",
        str(repo),
        "--rev",
        "main",
        "--env",
        "staging",
        "--out",
        str(plan_file),
        env=env,
    )
    started = time.monotonic()
    _serveops("apply", "--plan", str(plan_file), env=env)
    print(f"  apply took {time.monotonic() - started:.1f}s")

    _say("The same requests, now answered by v2")
    _send(url)

    _say("Status: sync against Git and health from Serve")
    _serveops("status", "--env", "staging", "--repo", str(repo), "--rev", "main", env=env)
    _say("A plan now shows nothing to do")
    _serveops("plan", "--repo", str(repo), "--rev", "main", "--env", "staging", env=env)
