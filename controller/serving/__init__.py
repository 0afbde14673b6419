"""Code that runs inside Ray Serve replicas: the router that owns a route, and the model server.

Importable on every Ray node: from the venv on a local cluster, from the image, pip or a
`py_modules` bundle on a remote one (controller/cluster/serving_code.py). Keep its imports light; mlflow
is imported only by the model server.
"""

from pathlib import Path

from controller import __version__


def code_origin() -> str:
    """Which serving code this process runs, for the replica's log: version and directory."""
    return f"serveops {__version__} serving code from {Path(__file__).parent.parent}"
