"""Audit a softmax layer: can every class win the argmax of ``W z + b``? (exact, with evidence).

The names below are imported on first use, so ``logitkit audit --help`` starts without scipy/torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "AuditResult": "logitkit.audit.argmaxable",
    "check_argmaxable": "logitkit.audit.argmaxable",
    "Head": "logitkit.audit.checkpoint",
    "load_head": "logitkit.audit.checkpoint",
    "read_head": "logitkit.audit.checkpoint",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'logitkit.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return __all__
