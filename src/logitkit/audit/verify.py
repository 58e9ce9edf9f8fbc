"""Checks that decide a class: a witness ``z`` or a convex-combination certificate ``a``.

Notation, for the audited class ``k`` and every other row ``i``: ``d_i = w_k - w_i`` and
``c_i = b_k - b_i`` (``c = 0`` without a bias). Class ``k`` wins strictly at ``z`` when its margin
``min_i d_i . z + c_i`` is positive.

Certificate (Gordan/Motzkin alternative). For ``a`` on the simplex (``a >= 0, sum a = 1``) put
``g = sum_i a_i d_i`` and ``c_a = sum_i a_i c_i``. For every ``z`` the margin is at most
``sum_i a_i (d_i . z + c_i) = g . z + c_a``, so the best margin is bounded by

* box ``|z|_inf <= B``:            ``B |g|_1 + c_a``
* no box, with bias (``z = y / s``, ``(y, s)`` normalised to ``|y|_inf <= 1, 0 <= s <= 1``):
  ``|g|_1 + max(0, c_a)``
* no box, no bias (scale-free, ``|z|_inf <= 1``): ``|g|_1``

and LP duality says the smallest such bound over the simplex equals the best margin. A class is
certified unargmaxable when the bound is at most ``tol * scale`` (``scale`` bounds any margin in the
normalised box), i.e. no input reaches a margin above that tolerance; with exact ``g = 0`` and
``c_a <= 0`` this is the textbook statement "0 lies in the convex hull of the ``d_i``".

Witness. The margin of ``z`` is computed in float64 and accepted only above a rigorous bound on
its rounding error, so an accepted witness wins for the exact (float64) weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF_64 = 2.0**-53


@dataclass(frozen=True)
class Certificate:
    """``weights`` (on the simplex) over the rows ``support``; ``bound`` >= the best margin."""

    support: np.ndarray
    weights: np.ndarray
    bound: float

    def to_dict(self) -> dict:
        return {
            "support": self.support.tolist(),
            "weights": self.weights.tolist(),
            "bound": self.bound,
        }


def margin_scale(weight: np.ndarray, bias: np.ndarray | None, box: float | None) -> float:
    """Upper bound on any margin in the normalised box: ``2 R max_i |w_i|_1 + 2 max_i |b_i|``."""
    radius = 1.0 if box is None else box
    scale = 2.0 * radius * float(np.abs(weight).sum(axis=1).max())
    if bias is not None:
        scale += 2.0 * float(np.abs(bias).max())
    return max(scale, np.finfo(np.float64).tiny)


def certificate_bound(
    weight: np.ndarray,
    bias: np.ndarray | None,
    k: int,
    support: np.ndarray,
    weights: np.ndarray,
    box: float | None,
) -> float:
    """The upper bound on class ``k``'s best margin implied by ``a`` (see the module docstring)."""
    if np.any(weights < 0) or abs(float(weights.sum()) - 1.0) > 1e-9 or np.any(support == k):
        return float("inf")
    g = weights @ (weight[k] - weight[support])
    c_a = 0.0 if bias is None else float(weights @ (bias[k] - bias[support]))
    g_norm = float(np.abs(g).sum())
    if box is not None:
        return box * g_norm + c_a
    return g_norm + max(0.0, c_a)


def witness_margin(
    weight: np.ndarray, bias: np.ndarray | None, k: int, z: np.ndarray
) -> tuple[float, float]:
    """``(margin, error_bound)`` of ``z`` for class ``k``, computed in float64.

    ``margin = l_k - max_{i != k} l_i`` with ``l = W z + b``. Each computed logit is within
    ``gamma (|w_i| . |z| + |b_i|)`` of the exact one, ``gamma = (d + 1) u / (1 - (d + 1) u)``
    (any summation order); a margin is a difference of two logits, and the factor 4 leaves room
    for the final subtraction. ``margin > error_bound`` proves that ``k`` wins strictly.
    """
    logits = weight @ z
    magnitude = np.abs(weight) @ np.abs(z)
    if bias is not None:
        logits = logits + bias
        magnitude = magnitude + np.abs(bias)
    own = logits[k]
    logits[k] = -np.inf
    n = weight.shape[1] + 1
    gamma = n * UNIT_ROUNDOFF_64 / (1.0 - n * UNIT_ROUNDOFF_64)
    return float(own - logits.max()), float(4.0 * gamma * magnitude.max())


def is_witness(
    weight: np.ndarray, bias: np.ndarray | None, k: int, z: np.ndarray, box: float | None
) -> bool:
    """True when ``z`` is finite, inside the box (if any) and wins for ``k`` beyond rounding."""
    if not np.all(np.isfinite(z)) or (box is not None and float(np.abs(z).max()) > box):
        return False
    margin, error = witness_margin(weight, bias, k, z)
    return margin > error
