"""Audit a softmax layer: can every class win the argmax of ``W z + b``? (exact, with evidence).

Class ``k`` of a head with weight ``W`` (V, d) and bias ``b`` (V,) is *argmaxable* when some input
``z`` gives it the strictly largest logit, ``argmax(W z + b) = k`` with no tie. Low-rank heads
(``d < V``) can have classes that never win (Demeter, Kimmel and Downey 2020; Grivas, Bogoychev and
Lopez 2022). :func:`check_argmaxable` decides every class with checked evidence (a witness input or
a convex-combination certificate); :func:`read_head` and :func:`load_head` read the output layer
of a checkpoint; :class:`AuditResult` and :class:`Head` are what they return.

The names are imported on first use (the module ``__getattr__`` below, with ``TYPE_CHECKING``
imports of the same names for static tools): :mod:`~logitkit.audit.argmaxable` pulls in scipy
(the exact stage's HiGHS solver) and torch (Frank-Wolfe), and :mod:`~logitkit.audit.checkpoint`
numpy, none of which ``import logitkit.audit`` or ``logitkit audit --help`` needs.

Reference:
    Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but
    Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
    Probability: A Structural Weakness of Neural Language Models", ACL 2020.

Example:
    >>> import numpy as np
    >>> from logitkit.audit import check_argmaxable
    >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
    >>> check_argmaxable(W, show_progress=False).unargmaxable.tolist()  # (1, 1) is inside
    [4]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logitkit.audit.argmaxable import AuditResult, check_argmaxable
    from logitkit.audit.checkpoint import Head, load_head, read_head

__all__ = ["AuditResult", "Head", "check_argmaxable", "load_head", "read_head"]


def __getattr__(name: str) -> Any:
    # Each branch imports its module on first use (see the module doc); nothing is cached here, so
    # the name always resolves to the submodule's current attribute.
    if name == "AuditResult":
        from logitkit.audit.argmaxable import AuditResult

        return AuditResult
    if name == "check_argmaxable":
        from logitkit.audit.argmaxable import check_argmaxable

        return check_argmaxable
    if name == "Head":
        from logitkit.audit.checkpoint import Head

        return Head
    if name == "load_head":
        from logitkit.audit.checkpoint import load_head

        return load_head
    if name == "read_head":
        from logitkit.audit.checkpoint import read_head

        return read_head
    raise AttributeError(f"module 'logitkit.audit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
