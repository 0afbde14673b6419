"""The MLflow model registry: model references resolved to exact versions (`mlflow`), with
direct readers of a SQLite store or the REST API that spare importing MLflow (`direct`)."""
