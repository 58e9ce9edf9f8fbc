"""Audit a softmax layer: can every class win the argmax of ``W z + b``? (exact, with evidence)."""

from logitkit.audit.argmaxable import AuditResult, check_argmaxable
from logitkit.audit.checkpoint import Head, load_head, read_head

__all__ = ["AuditResult", "Head", "check_argmaxable", "load_head", "read_head"]
