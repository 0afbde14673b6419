"""What the tour commits: the demo team's deployment files, and the pull requests it opens.

The team's repository holds `deployments/staging/breast-cancer.yaml` (the one the controller
follows: a canary with analysis and a smoke test, recording every request) and
`deployments/production/breast-cancer.yaml` (the example from deployments/production, judged by
`serveops check` only), plus `policies/` as the team sees it. The platform's own copy of the
policies, the one the controller trusts, is a directory apart (`platform-policies/`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from controller.dev.demo import MODEL_NAME, POLICIES, PRODUCTION_EXAMPLE

STAGING = "deployments/staging/breast-cancer.yaml"
PRODUCTION = "deployments/production/breast-cancer.yaml"
# The pull request of step 2: a first canary step above production's 10% ceiling.
RULE_BROKEN = "production-progressive-rollout"
AUTHOR = ("-c", "user.name=demo", "-c", "user.email=demo@example.com")
# Step 6's monitoring: the training data as the reference (under the operator's reference
# directory), a few of its features watched.
REFERENCE = "breast-cancer-train.csv"
DRIFT_FEATURES = ("mean radius", "mean texture", "mean perimeter", "mean area")


def write_reference(directory: Path) -> Path:
    """The data set the demo's models were trained on, as the monitoring reference (CSV)."""
    from sklearn.datasets import load_breast_cancer

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REFERENCE
    load_breast_cancer(as_frame=True).data.to_csv(path, index=False)
    return path


def staging_spec(version: str, recordings: Path, smoke_body: dict[str, Any]) -> str:
    """The staging deployment: small replicas (2 CPUs for everything), every request recorded,
    a canary of two steps, each held until one analysis window of the router's metrics passed.
    Loose latency bounds: on a busy 2-core machine p95 is noisy; the errors bound is the test."""
    return f"""\
# yaml-language-server: $schema=../../schema/modeldeployment.schema.json
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {MODEL_NAME}
  environment: staging
  owner: ml-platform
  labels:
    team: oncology
spec:
  route: /{MODEL_NAME}
  model: models:/{MODEL_NAME}/{version}
  replicas: 1
  resources:
    num_cpus: 0.25
  max_ongoing_requests: 16
  request_timeout_s: 10
  recording:
    sample_rate: 1
    dir: {recordings}
  monitoring:                # input drift against the training data (step 6)
    reference:
      kind: dataset
      path: {REFERENCE}
    features: [{", ".join(repr(f) for f in DRIFT_FEATURES)}]
    window: 1m
    min_rows: 100
    alert_targets: []
  rollout:
    strategy: canary
    steps:
      - {{weight: 20, pause: 0s}}
      - {{weight: 50, pause: 0s}}
    analysis:
      interval: 6s
      min_requests: 10
      max_error_rate_increase: 1
      max_p95_regression_pct: 400
      failure_limit: 2
    hooks:
      pre_rollout:
        - name: smoke
          smoke:
            - body: {json.dumps(smoke_body)}
"""


BATCH = "deployments/staging/breast-cancer-scores.yaml"
BATCH_NAME = "breast-cancer-scores"
BATCH_ALIAS = "champion"


def write_batch_input(folder: Path, copies: int = 10) -> tuple[Path, int]:
    """Step 6's table to score: the data set's rows `copies` times, with a `row_id`, as one
    parquet file (one file: Ray Data lists it without a task of its own)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    data = pd.concat([load_breast_cancer(as_frame=True).data] * copies, ignore_index=True)
    data.insert(0, "row_id", range(len(data)))
    folder.mkdir(parents=True, exist_ok=True)
    data.to_parquet(folder / "part-0.parquet", index=False)
    return folder, len(data)


def batch_spec(input_dir: Path, output_dir: Path) -> str:
    """Step 6's batch deployment: the alias followed (a run for each version it points to),
    a small actor beside the serving replicas on 2 CPUs."""
    return f"""\
# yaml-language-server: $schema=../../schema/batchinference.schema.json
apiVersion: serveops.dev/v1alpha1
kind: BatchInference
metadata:
  name: {BATCH_NAME}
  environment: staging
  owner: ml-platform
spec:
  model: models:/{MODEL_NAME}@{BATCH_ALIAS}
  input: {{uri: {input_dir}, format: parquet}}
  output: {{uri: {output_dir}, format: parquet, id_column: row_id}}
  on_model_change: true        # a run for each version the alias moves to
  resources: {{num_cpus: 0.25, batch_size: 2000, concurrency: 1}}
  timeout: 5m
  retries: 1
  promotion: {{sample_rows: 1000, min_agreement: 0.95}}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *AUTHOR, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_file(repo: Path, path: str, text: str, message: str) -> str:
    """Write one file on the checked-out branch and commit it; returns the short sha."""
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "--short", "HEAD")


def make_repo(repo: Path, staging: str) -> None:
    """The team's repository on branch main: staging at v1, production's example, policies/."""
    (repo / "deployments" / "production").mkdir(parents=True)
    shutil.copy(PRODUCTION_EXAMPLE, repo / PRODUCTION)
    shutil.copytree(POLICIES, repo / "policies", ignore=shutil.ignore_patterns("tests"))
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    # Commits serveops writes (rollback) name an author too.
    git(repo, "config", "user.name", "demo")
    git(repo, "config", "user.email", "demo@example.com")
    git(repo, "add", ".")
    commit_file(repo, STAGING, staging, f"Deploy {MODEL_NAME} v1 to staging")


def platform_policies(target: Path) -> Path:
    """The platform team's policies, a directory apart from the team's repository: what the
    controller trusts (--policies), whatever a commit does to the repository's policies/."""
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("tests"))
    return target


def branch(repo: Path, name: str, path: str, text: str, message: str) -> str:
    """A pull request: branch `name` off main with one file changed; main stays checked out."""
    git(repo, "checkout", "-q", "-b", name, "main")
    try:
        return commit_file(repo, path, text, message)
    finally:
        git(repo, "checkout", "-q", "main")


def faster_production(text: str) -> str:
    """Production's rollout with a first canary step of 50%: what step 2's pull request asks."""
    old = "- {weight: 10, pause: 5m}"
    if old not in text:
        raise ValueError(f"{PRODUCTION_EXAMPLE} no longer has the step `{old}` the demo edits")
    return text.replace(old, "- {weight: 50, pause: 1m}  # faster: we trust this model")


def with_version(text: str, old: str, new: str) -> str:
    return text.replace(f"models:/{MODEL_NAME}/{old}", f"models:/{MODEL_NAME}/{new}")
