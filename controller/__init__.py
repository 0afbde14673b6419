"""serveops: ship MLflow models to Ray Serve from Git.

Data flow, one module per stage:

    gitsource -> manifest -> spec -> registry -> render -> plan -> apply
                                                   ^        |
                                        live (serveapi) ----+--> status
"""

__version__ = "0.1.0"
