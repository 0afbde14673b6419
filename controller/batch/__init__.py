"""Batch inference: `kind: BatchInference` documents planned, scheduled and run as Ray Jobs on
Ray Data, with their runs kept in the controller's store.

    schedule  cron -> the runs due at a moment (pure)
    plan      admitted specs + stored runs + now -> what runs, what changed (pure)
    jobs      the Ray Jobs REST API behind a small interface (a fake in tests)
    step      the controller pass's batch step: submit due runs, poll running ones
    job       the program a run executes on the cluster (Ray Data), never imported here
"""
