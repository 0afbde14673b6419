"""Live model monitoring: input drift of served deployments, from the router's recordings.

    recordings (bounded reader) -> features -> drift (PSI, KS against a reference profile)
    -> DriftReport -> the controller's step (store, notify once per episode, gauges)

See docs/monitoring.md.
"""
