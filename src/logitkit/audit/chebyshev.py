"""The anchor's question: does class ``k``'s winning region hold a ball of radius ``r_min``?

Grivas, Bogoychev and Lopez (ACL 2022) bound the inputs to the box ``[-B, B]^d`` (``B = 100``) and
call a class argmaxable when a Chebyshev ball of radius at least ``r_min`` (``1e-8``) fits in the
region where it wins. With ``d_i = w_k - w_i`` and ``c_i = b_k - b_i``, the ball ``{x : |x - z|_2
<= r}`` lies in that region exactly when ``d_i . z + c_i >= r |d_i|_2`` for every ``i != k``; the
largest radius with the centre in the box is the LP

    r* = max r   s.t.   d_i . z + c_i >= r |d_i|_2 (i != k),   |z|_inf <= B,

solved here by HiGHS with constraint generation (a few rival rows first, then the rows the
current centre violates most), as :func:`~logitkit.audit.exact.decide_box` does for the margin LP.
Verdicts, each with evidence checked in float64 under rounding bounds:

* "argmaxable": a centre ``z`` in the box whose ball of radius ``r_min`` provably lies where ``k``
  wins (:func:`ball_radii` at ``z`` is at least ``r_min``);
* "unargmaxable": LP duality: for weights ``a >= 0`` summing to 1 over rows ``S``, every feasible
  ``(z, r)`` has ``r sum_i a_i |d_i|_2 <= g . z + c_a <= B |g|_1 + c_a`` (``g = sum_i a_i d_i``,
  ``c_a = sum_i a_i c_i``), so ``bound = (B |g|_1 + c_a) / sum_i a_i |d_i|_2`` (plus rounding)
  bounds ``r*``; a certificate of kind "ball" with ``bound < r_min (1 - tol)``;
* "tie": a centre with a verified radius of at least ``r_min (1 - tol)`` and a certificate with
  ``bound <= r_min (1 + tol)``: ``r*`` is within the tolerance of ``r_min``.

How it relates to the default question (a strict win anywhere, no minimum radius): a class with
a ball of any radius ``r > 0`` wins strictly at its centre, so "argmaxable" here implies
"argmaxable" there; the converse fails for classes whose region is thinner than ``r_min`` or
lies outside the box, which this question calls unargmaxable. Without a bias the region is a
cone, so a ball of radius ``r_min`` fits in the box unless the cone's half-angle is below about
``r_min / B`` (down to ``r_min / (B sqrt(d))`` along a diagonal of the box): the two questions
differ only for extremely thin cones (and for ties, which have no ball at all).

Reference:
    Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but
    Rarely in Practice", ACL 2022, arXiv 2203.06462 (their ``bounded`` LP check, ``[-100, 100]``
    inputs, radius ``1e-8``; 13 of 150 public models with unargmaxable tokens).

Example::

    import numpy as np
    from logitkit.audit import check_argmaxable
    W, b = np.array([[1.0, 0], [0, 1], [0.5, 0.5]]), np.array([0.0, 0.0, 1e-7])
    # class 2 wins only in the strip |z_1 - z_2| < 2e-7 (balls up to radius 1.41e-7)
    [check_argmaxable(W, b, classes=[2], box=100, min_radius=r, show_progress=False).status[0]
     for r in (1e-8, 1e-6)]  # ['argmaxable', 'unargmaxable']
"""

from __future__ import annotations

import numpy as np

from logitkit.audit.decision import Decision, solve_margin_lp
from logitkit.audit.exact_rows import logits_of, row_squares_of
from logitkit.audit.verify import Certificate, _gamma, combination, row_norms_of, valid_weights


def ball_radii(weight: np.ndarray, bias: np.ndarray | None, classes: np.ndarray,
               z: np.ndarray, *, block: int = 128) -> np.ndarray:
    """A lower bound, per ``classes[j]``, on the radius of the largest ball around ``z[j]`` in
    the region where ``classes[j]`` wins: ``min_i (gap_i / dist_i)`` with ``gap_i`` a lower bound
    on ``l_k - l_i`` (``l = W z + b``, rounding bounds of the witness check) and ``dist_i`` an
    upper bound on ``|w_k - w_i|_2`` (from ``|w_k|^2 + |w_i|^2 - 2 w_k . w_i`` and its rounding).
    Negative where some row beats ``k`` at ``z``."""
    n_rows, d = weight.shape
    gamma = _gamma(d + 2)
    norms = row_norms_of(weight)
    squares = norms**2
    radii = np.empty(len(classes))
    for start in range(0, len(classes), block):
        ids = classes[start:start + block]
        zs = z[start:start + block]
        rows = np.arange(len(ids))
        logits = logits_of(weight, zs)
        error = np.outer(np.linalg.norm(zs, axis=1), norms)
        if bias is not None:
            logits += bias
            error += np.abs(bias)
        error *= 2.0 * gamma
        gap = logits[rows, ids][:, None] - logits - error - error[rows, ids][:, None]
        distance2 = squares[ids][:, None] + squares - 2.0 * logits_of(weight, weight[ids])
        distance2 += 4.0 * gamma * (squares[ids][:, None] + squares)
        distance = np.sqrt(np.maximum(distance2, 0.0)) * (1.0 + 4.0 * gamma)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(gap >= 0, gap / distance, -np.inf)
        ratio[rows, ids] = np.inf
        radii[start:start + block] = ratio.min(1)
    return radii


def into_box_edge(z: np.ndarray, box: float) -> np.ndarray:
    """Inputs of a head without a bias scaled by powers of two (exact) as far into the box as
    they go: the ball around ``t z`` in a cone grows with ``t``."""
    peak = np.abs(z).max(1, keepdims=True)
    nonzero = peak > 0
    return z * np.where(nonzero, np.exp2(np.floor(np.log2(box / np.where(nonzero, peak, 1.0)))),
                        1.0)


def ball_certificate(weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
                     weights: np.ndarray, box: float) -> Certificate | None:
    """The duality bound on ``r*`` from convex weights over ``support`` (module doc), with the
    rounding of ``g``, ``c_a`` and the norms: kind "ball", ``bound`` >= the exact ratio."""
    if not valid_weights(weights, support, k):
        return None
    g, c_a, size, rounding = combination(weight, bias, k, support, weights)
    gamma = _gamma(len(support) + weight.shape[1] + 2)
    c_size = 0.0 if bias is None else float(weights @ np.abs(bias[k] - bias[support]))
    numerator = box * (float(np.abs(g).sum()) + rounding) + c_a + gamma * c_size
    lengths = np.linalg.norm(weight[k] - weight[support], axis=1)
    denominator = float(weights @ lengths) * (1.0 - gamma)
    if denominator <= 0:
        return None
    bound = numerator / denominator
    bound += abs(bound) * 2.0 * gamma  # the division and the sums' own rounding
    residual = float(np.abs(g).sum()) / max(size, np.finfo(np.float64).tiny)
    return Certificate(support=support, weights=weights, kind="ball", residual=residual,
                       bound=bound)


def _ball_lp(weight: np.ndarray, bias: np.ndarray | None, k: int, rows: np.ndarray,
             box: float) -> tuple[np.ndarray, float, np.ndarray]:
    """``(z, r, duals)`` of the Chebyshev LP over ``rows`` (duals >= 0, summing to 1)."""
    diffs = weight[k] - weight[rows]
    gaps = np.zeros(len(rows)) if bias is None else bias[k] - bias[rows]
    return solve_margin_lp(diffs, gaps, np.linalg.norm(diffs, axis=1), box,
                           f"ball LP of class {k}")


def decide_ball(
    weight: np.ndarray, bias: np.ndarray | None, k: int, start_rows: np.ndarray, box: float,
    min_radius: float, tol: float, *, add_rows: int = 64, max_rounds: int = 200,
    row_squares: np.ndarray | None = None,
) -> Decision:
    """The Chebyshev LP with constraint generation, then the verdict of the module doc.
    ``row_squares``: ``|w_i|^2`` per row, passed once by callers deciding many classes."""
    squares = row_squares_of(weight) if row_squares is None else row_squares
    lengths = np.sqrt(np.maximum(squares[k] + squares - 2.0 * (weight @ weight[k]), 0.0))
    nearest = np.argsort(np.where(np.arange(len(weight)) == k, np.inf, lengths))
    rows = np.union1d(start_rows[start_rows != k], nearest[: min(add_rows, len(weight) - 1)])
    gaps = np.zeros(len(weight)) if bias is None else bias[k] - bias
    outside = np.ones(len(weight), dtype=bool)
    outside[k] = False
    for _ in range(max_rounds):
        z, r, duals = _ball_lp(weight, bias, k, rows, box)
        outside[rows] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            slack = (weight[k] @ z - weight @ z + gaps) / lengths
        candidates = np.flatnonzero(outside & (slack < r - 1e-12 * abs(r)))
        if len(candidates) == 0:
            break
        rows = np.concatenate([rows, candidates[np.argsort(slack[candidates])[:add_rows]]])
    radius = float(ball_radii(weight, bias, np.array([k]), z[None])[0])
    keep = duals > 0
    certificate = ball_certificate(weight, bias, k, rows[keep], duals[keep], box)
    bound = np.inf if certificate is None else certificate.bound
    values = weight[k] @ z - weight @ z + gaps
    values[k] = np.inf
    margin = float(values.min())
    if radius >= min_radius:
        return Decision("argmaxable", witness=z, margin=margin, rows=len(rows))
    if bound < min_radius * (1.0 - tol):
        return Decision("unargmaxable", witness=z, margin=margin, certificate=certificate,
                        rows=len(rows))
    if radius >= min_radius * (1.0 - tol) and bound <= min_radius * (1.0 + tol):
        return Decision("tie", witness=z, margin=margin, certificate=certificate,
                        rows=len(rows))
    return Decision("unknown", witness=z, margin=margin, rows=len(rows))
