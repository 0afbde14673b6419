"""Progressive delivery: the pure rollout engine (`engine`), a pass's rollout step (`progress`),
analysis of router figures (`analysis`, `router_metrics`), and pre/post hooks (`hooks`)."""
