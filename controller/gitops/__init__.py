"""The GitOps loop: one reconcile pass and the loop around it (`reconciler`), its durable state
(`state`), the push webhook, notifications and the controller's own metrics (`telemetry`)."""
