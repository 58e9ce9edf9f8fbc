"""The verdict record of one class in the exact stage, and the LP solver's settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logitkit.audit.verify import Certificate

HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@dataclass
class Decision:
    status: str  # "argmaxable", "tie", "unargmaxable" or "unknown"
    witness: np.ndarray | None = None  # a winning input; for a tie, an input where k ties
    margin: float = -np.inf  # the margin at ``witness`` (float64)
    certificate: Certificate | None = None
    rows: int = 0  # rows the solver looked at
