"""The checks behind every verdict: witnesses in float64 with rounding bounds, certificates.

Notation, for the audited class ``k`` and every other row ``i``: ``d_i = w_k - w_i`` and
``c_i = b_k - b_i`` (``c = 0`` without a bias); the logits are ``l = W z + b``.

Witness. ``l`` is computed in float64 with NumPy (whatever torch's matmul precision or TF32 mode
is); each computed logit is within ``e_i = gamma (|w_i|_2 |z|_2 + |b_i|)`` of the exact one,
``gamma = n u / (1 - n u)``, ``n = d + 2``, ``u = 2^-53`` (any summation order). ``z`` wins for the
exact weights when ``l_k - l_i > 2 (e_k + e_i)`` for every ``i`` (the factor 2 covers the
subtraction). The bound is per pair, so one huge logit (a masked token with bias -1e9) does not
blunt the check for the others, and scaling ``W, b`` by a power of two scales both sides alike.
A box ``|z|_inf <= B`` is checked in float64 too.

Certificate. For ``a`` on the simplex over a support ``S`` put ``g = sum_i a_i d_i`` and
``c_a = sum_i a_i c_i``. For every ``z``, ``min_i (d_i . z + c_i) <= g . z + c_a``: with
``g = 0`` and ``c_a <= 0`` class ``k`` never wins. Computed ``g`` carries rounding error and the
solver's residual, so a certificate is accepted when ``|g|_1 <= tol / 64 * sum_i a_i |d_i|_1``: the
verdict is then exact for a head whose row ``k`` differs from yours by that relative amount
(backward error). The tolerance is per class and relative to the rows in the certificate, so it
does not change when ``W, b`` are scaled or when an unrelated row has an extreme bias. With a box
the certificate bounds the best margin by ``B |g|_1 + c_a`` directly (LP duality).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF_64 = 2.0**-53
RESIDUAL_SHARE = 1.0 / 64  # a certificate's residual stays below tol / 64, so that a push of
# tol (see :mod:`logitkit.audit.exact`) is never mistaken for rounding


@dataclass(frozen=True)
class Certificate:
    """``weights`` (on the simplex) over the rows ``support`` prove that ``k`` cannot win.

    ``kind`` is "hull" (``sum_i a_i d_i = 0``: no strict win, up to ``residual``) or "depth"
    (``sum_i a_i d_i = -shift``: ``k`` stays unargmaxable when pushed outward by the tolerance)
    or "box" (``bound = B |g|_1 + c_a`` bounds the best margin in the box). ``residual`` is
    ``|g|_1`` relative to ``sum_i a_i |d_i|_1``.
    """

    support: np.ndarray
    weights: np.ndarray
    kind: str
    residual: float
    bound: float = 0.0

    def to_dict(self) -> dict:
        return {"support": self.support.tolist(), "weights": self.weights.tolist(),
                "kind": self.kind, "residual": self.residual, "bound": self.bound}


def _gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF_64 / (1.0 - n * UNIT_ROUNDOFF_64)


def witness_margins(
    weight: np.ndarray, bias: np.ndarray | None, classes: np.ndarray, z: np.ndarray,
    *, block: int = 256, rivals: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each ``classes[j]`` and input ``z[j]``: ``(margin, verified, top rivals)``, float64.

    ``margin_j = l_k - max_{i != k} l_i`` at ``z[j]``; ``verified_j`` is True when the rounding
    bounds (module doc, with ``|w_i| . |z| <= |w_i|_2 |z|_2``) prove that ``k`` wins strictly for
    the exact weights. ``rivals > 0`` also returns the ids of the ``rivals`` rows with the largest
    logits besides ``k`` (else an empty array). ``block`` inputs go per matrix product.
    """
    weight = np.asarray(weight, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    gamma = _gamma(weight.shape[1] + 2)
    margins = np.full(len(classes), -np.inf)
    verified = np.zeros(len(classes), dtype=bool)
    top = np.zeros((len(classes), rivals), dtype=np.int64)
    row_norms = np.sqrt((weight * weight).sum(1))
    for start in range(0, len(classes), block):
        part = slice(start, start + block)
        ids, zs = classes[part], z[part]
        finite = np.all(np.isfinite(zs), axis=1)
        logits = weight @ zs.T  # (V, B)
        if bias is not None:
            logits += bias[:, None]
        columns = np.arange(len(ids))
        own = logits[ids, columns].copy()
        logits[ids, columns] = -np.inf
        margins[part] = np.where(finite, own - logits.max(0), -np.inf)
        errors = np.outer(row_norms, np.linalg.norm(zs, axis=1))
        if bias is not None:
            errors += np.abs(bias)[:, None]
        errors *= 2.0 * gamma
        own_error = errors[ids, columns].copy()
        logits += errors
        verified[part] = finite & (own - own_error - logits.max(0) > 0)
        if rivals:
            logits -= errors
            top[part] = np.argpartition(-logits.T, rivals - 1, axis=1)[:, :rivals]
    return margins, verified, top


def in_box(z: np.ndarray, box: float | None) -> np.ndarray:
    """``|z|_inf <= box`` per row, compared in float64 (True without a box)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    if box is None:
        return np.ones(len(z), dtype=bool)
    return np.abs(z).max(1) <= float(box)


def relative_margin(margin: np.ndarray | float, logits_gap: np.ndarray | float) -> np.ndarray:
    """A margin as a fraction of the median logit gap at the same input (scale-free)."""
    return np.asarray(margin) / np.maximum(np.asarray(logits_gap), np.finfo(np.float64).tiny)


def combination(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, float, float, float]:
    """``(g, c_a, size, rounding)``: ``g = sum a_i d_i``, ``c_a``, ``sum a_i |d_i|_1`` and a
    bound on the float64 rounding error of ``|g|_1`` (so ``|g_exact|_1 <= |g|_1 + rounding``)."""
    diffs = weight[k] - weight[support]
    g = weights @ diffs
    magnitude = weights @ np.abs(diffs)
    size = float(magnitude.sum())
    rounding = _gamma(len(support) + 2) * size
    c_a = 0.0 if bias is None else float(weights @ (bias[k] - bias[support]))
    return g, c_a, size, rounding


def valid_weights(weights: np.ndarray, support: np.ndarray, k: int) -> bool:
    return (len(support) > 0 and bool(np.all(weights >= 0)) and not np.any(support == k)
            and abs(float(weights.sum()) - 1.0) <= 1e-9)


def hull_certificate(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray, tol: float, shift: np.ndarray | float | None = None,
) -> Certificate | None:
    """Check ``sum_i a_i (d_i, c_i) = -shift`` up to the relative tolerance (no box).

    ``shift`` is None for a plain "hull" certificate (``g = 0``, ``c_a <= 0``: no strict win);
    a vector (no bias: ``eps u``) or a number (bias: ``delta``) for a "depth" certificate.
    """
    if not valid_weights(weights, support, k):
        return None
    g, c_a, size, rounding = combination(weight, bias, k, support, weights)
    if bias is None and shift is not None:
        g = g + np.asarray(shift)
    residual = (float(np.abs(g).sum()) + rounding) / max(size, np.finfo(np.float64).tiny)
    if residual > tol * RESIDUAL_SHARE:
        return None
    if bias is not None:
        limit = 0.0 if shift is None else -float(shift)
        if c_a > limit + tol * float(weights @ np.abs(bias[k] - bias[support])):
            return None
    kind = "hull" if shift is None else "depth"
    return Certificate(support=support, weights=weights, kind=kind, residual=residual,
                       bound=c_a)


def box_certificate(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray, box: float,
) -> Certificate | None:
    """``bound = B |g|_1 + c_a`` (plus rounding) bounds the best margin over ``|z|_inf <= B``."""
    if not valid_weights(weights, support, k):
        return None
    g, c_a, size, rounding = combination(weight, bias, k, support, weights)
    c_size = 0.0 if bias is None else float(weights @ np.abs(bias[k] - bias[support]))
    bound = box * (float(np.abs(g).sum()) + rounding) + c_a + _gamma(len(support) + 2) * c_size
    residual = float(np.abs(g).sum()) / max(size, np.finfo(np.float64).tiny)
    return Certificate(support=support, weights=weights, kind="box", residual=residual,
                       bound=bound)


def box_tolerance(weight: np.ndarray, bias: np.ndarray | None, k: int, rows: np.ndarray,
                  box: float, tol: float) -> float:
    """``tau = tol * (B max_S |d_i|_1 + max_S |c_i|)`` over ``rows``: the per-class scale of a
    margin in the box, from the rows that matter (never from an unrelated extreme bias)."""
    size = box * float(np.abs(weight[k] - weight[rows]).sum(1).max())
    if bias is not None:
        size += float(np.abs(bias[k] - bias[rows]).max())
    return tol * size
