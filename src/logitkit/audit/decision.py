"""The verdict record of one class in the exact stage, and the one LP both box questions solve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from logitkit.audit.verify import Certificate

HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@dataclass
class Decision:
    status: str  # "argmaxable", "tie", "unargmaxable" or "unknown"
    witness: np.ndarray | None = None  # a winning input; for a tie, an input where k ties
    margin: float = -np.inf  # the margin at ``witness`` (float64)
    certificate: Certificate | None = None
    rows: int = 0  # rows the solver looked at


def solve_margin_lp(diffs: np.ndarray, gaps: np.ndarray, scales: np.ndarray, box: float,
                    name: str) -> tuple[np.ndarray, float, np.ndarray]:
    """``max t s.t. diffs_i . z + gaps_i >= scales_i t, |z|_inf <= box`` with HiGHS: ``(z, t,
    duals)``, the duals ``a_i >= 0`` summing to 1 (uniform if HiGHS reports none). ``scales`` 1
    is the margin LP, ``|d_i|_2`` the Chebyshev-ball LP. RuntimeError (naming ``name``) when
    HiGHS fails."""
    d = diffs.shape[1]
    objective = np.zeros(d + 1)
    objective[-1] = -1.0
    res = linprog(objective, A_ub=np.hstack([-diffs, scales[:, None]]), b_ub=gaps,
                  bounds=[(-box, box)] * d + [(None, None)], method="highs",
                  options=HIGHS_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the {name}: {res.message}")
    duals = np.maximum(-res.ineqlin.marginals, 0.0)
    total = duals.sum()
    duals = duals / total if total > 0 else np.full(len(gaps), 1.0 / len(gaps))
    return np.clip(res.x[:d], -box, box), float(res.x[-1]), duals
