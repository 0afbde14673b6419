"""The policy engine: CEL rules in policies/, waivers, and the gate shared by CI and apply."""

from controller.policy.engine import Finding, RequestContext, Verdict
from controller.policy.gate import check_revisions, gate
from controller.policy.report import refusal

__all__ = ["Finding", "RequestContext", "Verdict", "check_revisions", "gate", "refusal"]
