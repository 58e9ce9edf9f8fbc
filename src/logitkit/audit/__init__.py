"""Audit a softmax layer: can every class win the argmax of ``W z + b``? (exact, with evidence)."""

from logitkit.audit.argmaxable import AuditResult, check_argmaxable
from logitkit.audit.checkpoint import load_head

__all__ = ["AuditResult", "check_argmaxable", "load_head"]
