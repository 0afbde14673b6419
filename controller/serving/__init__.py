"""Code that runs inside Ray Serve replicas: the router that owns a route, and the model server.

Importable on every Ray node: from the venv on a local cluster, from the image or `py_modules`
on a remote one. Keep its imports light; mlflow is imported only by the model server.
"""
