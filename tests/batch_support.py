"""A production batch deployment and a real MLflow store to compare its versions with
(tests/unit/test_batch_evidence.py, tests/unit/test_workflows.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from controller.dev.demo import MODEL_NAME, train_and_register

FILE = "deployments/production/nightly.yaml"


def batch_yaml(version: str, data: Path | str, sample_rows: int = 500) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: BatchInference
        metadata: {{name: nightly, environment: production, owner: ml}}
        spec:
          model: models:/{MODEL_NAME}/{version}
          input: {{uri: {data}, format: csv}}
          output: {{uri: /tmp/serveops-never-written, id_column: row_id}}
          schedule: {{cron: "0 2 * * *"}}
          promotion: {{sample_rows: {sample_rows}, min_agreement: 0.95}}
        """
    )


def three_versions(root: Path) -> tuple[str, list[str]]:
    """A store under `root` with v1; v2, which answers differently on about one row in ten;
    v3, v1's model again."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    versions = train_and_register(uri, root / "artifacts")
    client = MlflowClient(uri)
    v1 = client.get_model_version(MODEL_NAME, versions[0])
    v3 = client.create_model_version(MODEL_NAME, str(v1.source), v1.run_id)
    return uri, [*versions, str(v3.version)]


def breast_cancer_csv(directory: Path) -> Path:
    """The data set as a batch input, with a `row_id` column."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).data
    frame.insert(0, "row_id", range(len(frame)))
    path = directory / "scores-in.csv"
    frame.to_csv(path, index=False)
    return path
