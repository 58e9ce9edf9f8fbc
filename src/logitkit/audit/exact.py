"""Exact decision for one class: the margin LP with incremental constraint generation (HiGHS).

The margin LP for class ``k`` over a set ``S`` of rival rows (``d_i = w_k - w_i``,
``c_i = b_k - b_i``)::

    maximise t  subject to  d_i . z + c_i s >= t  (i in S),  |z|_inf <= R,  s in [0, 1]

with ``R = B, s = 1`` under a box ``B``; without a box the problem is homogeneous, so ``R = 1``
and ``s`` is free in ``[0, 1]`` (``z / s`` is the input; ``s`` is dropped without a bias). The LP
over a subset ``S`` relaxes the LP over all rows, so its dual (the convex combination ``a`` of the
rows in ``S``, read from the inequality marginals) certifies unargmaxability for the whole head
whenever the relaxed optimum is not positive. Otherwise its ``z`` is checked against every row;
the rows it violates most join ``S`` and the LP is solved again. HiGHS tolerances are tightened
and every answer is re-verified by :mod:`logitkit.audit.verify`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog, nnls

from logitkit.audit.verify import Certificate, certificate_bound, is_witness

HIGHS_OPTIONS = {
    "primal_feasibility_tolerance": 1e-10,
    "dual_feasibility_tolerance": 1e-10,
    "presolve": True,
}


@dataclass
class Decision:
    status: str  # "argmaxable", "unargmaxable" or "unknown"
    witness: np.ndarray | None = None
    certificate: Certificate | None = None
    rounds: int = 0
    rows: int = 0


@dataclass
class MarginLp:
    z: np.ndarray
    s: float
    t: float
    duals: np.ndarray  # a_i >= 0 over the rows of S, summing to 1


def solve_margin_lp(
    weight: np.ndarray, bias: np.ndarray | None, k: int, rows: np.ndarray, box: float | None
) -> MarginLp:
    """Solve the margin LP of class ``k`` over ``rows`` with HiGHS (formulation: module doc)."""
    d = weight.shape[1]
    diffs = weight[k] - weight[rows]
    gaps = np.zeros(len(rows)) if bias is None else bias[k] - bias[rows]
    lifted = box is None and bias is not None
    radius = 1.0 if box is None else box
    blocks = [-diffs] + ([-gaps[:, None]] if lifted else []) + [np.ones((len(rows), 1))]
    a_ub = np.hstack(blocks)
    b_ub = gaps if box is not None else np.zeros(len(rows))
    bounds = [(-radius, radius)] * d + ([(0.0, 1.0)] if lifted else []) + [(None, None)]
    objective = np.zeros(a_ub.shape[1])
    objective[-1] = -1.0
    res = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs",
                  options=HIGHS_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the margin LP of class {k}: {res.message}")
    duals = np.maximum(-res.ineqlin.marginals, 0.0)
    duals = duals / duals.sum()
    s = float(res.x[d]) if lifted else 1.0
    return MarginLp(z=res.x[:d], s=s, t=float(res.x[-1]), duals=duals)


def polish_certificate(
    weight: np.ndarray, bias: np.ndarray | None, k: int, rows: np.ndarray, duals: np.ndarray
) -> np.ndarray:
    """Re-fit the LP's dual on its support: min ``|sum_i a_i d_i|`` with ``a >= 0, sum a = 1``.

    Non-negative least squares on ``[d_i ; rho]`` against ``[0 ; rho]``; it removes the
    solver-tolerance residual so that ``g = sum_i a_i d_i`` is zero to float64 accuracy.
    """
    support = duals > 1e-12 * duals.max()
    diffs = (weight[k] - weight[rows[support]]).T
    rho = max(1.0, float(np.abs(diffs).max()))
    system = np.vstack([diffs, np.full((1, diffs.shape[1]), rho)])
    target = np.concatenate([np.zeros(diffs.shape[0]), [rho]])
    fitted, _ = nnls(system, target)
    polished = np.zeros_like(duals)
    if fitted.sum() > 0:
        polished[support] = fitted / fitted.sum()
    return polished


def _certificate(
    weight: np.ndarray,
    bias: np.ndarray | None,
    k: int,
    rows: np.ndarray,
    duals: np.ndarray,
    box: float | None,
    threshold: float,
) -> Certificate | None:
    candidates = [duals]
    if box is None:
        candidates.append(polish_certificate(weight, bias, k, rows, duals))
    for weights in candidates:
        keep = weights > 0
        bound = certificate_bound(weight, bias, k, rows[keep], weights[keep], box)
        if bound <= threshold:
            return Certificate(support=rows[keep], weights=weights[keep], bound=bound)
    return None


def _input_from(lp: MarginLp, gap_max: float) -> np.ndarray:
    """``z / s`` for the homogeneous LP; a zero ``s`` is raised just enough to keep ``t / 2``."""
    s = lp.s
    if gap_max > 0 and lp.t > 0:
        s = s + lp.t / (2.0 * gap_max)
    return lp.z / s if s > 0 else lp.z


def decide_class(
    weight: np.ndarray,
    bias: np.ndarray | None,
    k: int,
    start_rows: np.ndarray,
    box: float | None,
    threshold: float,
    *,
    add_rows: int = 64,
    max_rounds: int = 200,
) -> Decision:
    """Decide class ``k`` exactly by constraint generation, starting from ``start_rows``.

    ``threshold`` (= tol * margin scale) is the largest best-margin bound accepted as a
    certificate. Returns "unknown" only if the best margin lies between the witness rounding bound
    and ``threshold`` (then neither check passes), or after ``max_rounds`` rounds.
    """
    n_rows = weight.shape[0]
    rows = np.unique(start_rows[start_rows != k])
    lifted = box is None and bias is not None
    gap_max = float(np.abs(bias[k] - bias).max()) if lifted else 0.0
    others = np.ones(n_rows, dtype=bool)
    others[k] = False
    for round_index in range(1, max_rounds + 1):
        lp = solve_margin_lp(weight, bias, k, rows, box)
        if lp.t <= threshold:
            certificate = _certificate(weight, bias, k, rows, lp.duals, box, threshold)
            status = "unargmaxable" if certificate is not None else "unknown"
            return Decision(status, certificate=certificate, rounds=round_index, rows=len(rows))
        z = _input_from(lp, gap_max) if lifted else lp.z
        if box is not None:  # the solver may overshoot a bound by its feasibility tolerance
            z = np.clip(z, -box, box)
        if is_witness(weight, bias, k, z, box):
            return Decision("argmaxable", witness=z, rounds=round_index, rows=len(rows))
        margins = (weight[k] - weight) @ lp.z
        if bias is not None:
            margins += (bias[k] - bias) * lp.s
        outside = others.copy()
        outside[rows] = False
        candidates = np.flatnonzero(outside & (margins < lp.t * (1.0 - 1e-9)))
        if len(candidates) == 0:
            return Decision("unknown", rounds=round_index, rows=len(rows))
        worst = candidates[np.argsort(margins[candidates])[:add_rows]]
        rows = np.concatenate([rows, worst])
    return Decision("unknown", rounds=max_rounds, rows=len(rows))
