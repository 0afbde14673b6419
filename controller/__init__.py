"""serveops: ship MLflow models to Ray Serve from Git.

Data flow, one module per stage:

    gitsource -> manifest (spec, yamldoc) -> registry -> render -> plan -> policy gate -> apply
                                                                   ^                      |
                                                     live (serveapi) ---------------------+-> status

reconcile.py strings the read side together (Git + registry + live -> Plan); controller.py runs
it in a loop with durable state (state.py); serving/ is what runs inside Ray Serve.
"""

__version__ = "0.1.0"
