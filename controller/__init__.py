"""serveops: ship MLflow models to Ray Serve from Git.

The packages read as the data flow (docs/architecture.md draws the map):

    spec      deployment files -> validated specs (file:line:field errors)
    source    Git: the files of a revision, the followed repository, revert commits
    registry  MLflow: model references -> exact versions
    cluster   Ray Serve: REST client, live state, rendering, health
    sync      read (desired + live) -> plan -> apply
    policy    CEL rules and waivers: the gate in CI and before apply
    rollout   progressive delivery: the engine, analysis, hooks
    gitops    the controller: reconcile pass, loop, durable state, webhook, notifications
    cli       the `serveops` command
    serving   what runs inside Ray Serve (router, model server): its import path is written
              into live Serve configs, so it never moves
    dev       the demo and a local Ray head
"""

__version__ = "0.1.0"
