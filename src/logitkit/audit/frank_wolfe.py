"""The blog's method: Frank-Wolfe on the simplex, batched over classes.

For class ``k`` (``d_i = w_k - w_i``, ``c_i = b_k - b_i``, ``a`` on the simplex over ``i != k``)::

    f(a) = r |sum_i a_i d_i|_2 + sum_i a_i c_i  =  max_{|z|_2 <= r} sum_i a_i (d_i . z + c_i)

and ``min_a f(a)`` is the best margin of ``k`` over the ball ``|z|_2 <= r``. With
``g = sum a_i d_i`` the gradient of ``f`` is ``(d_i . u + c_i)_i`` at ``u = r g / |g|``, so the
linear minimisation oracle is the rival ``j`` with the smallest margin at ``u``: one matmul
``W U`` per iteration for a block of classes. ``u`` is a candidate witness (a real one when that
smallest margin is positive) and ``a`` a candidate certificate once ``f(a) <= 0``; both are
re-checked by :mod:`logitkit.audit.verify` under the audit's own semantics (box or unbounded).
A class that neither check settles within the iteration budget is "unknown".

Compared with the exact method: FW converges sublinearly, and without a box a certificate needs
``g = 0`` to float64 accuracy (FW only approaches it), so it rarely certifies unargmaxable classes
there; with a box its L2-ball bound ``r |g|_2`` is weaker than the box bound ``B |g|_1``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from logitkit.audit.decision import Decision
from logitkit.audit.exact import bias_push
from logitkit.audit.verify import (
    box_certificate,
    box_tolerance,
    hull_certificate,
    in_box,
    witness_margins,
)


def _line_search(g, d_j, c_a, c_j, radius: float) -> torch.Tensor:
    """Exact minimiser over ``s in [0, 1]`` of ``h(s) = r |g + s e| + (1 - s) c_a + s c_j``.

    With ``e = d_j - g``, ``A = |e|^2``, ``B = g.e``, ``q(s) = |g + s e|^2`` and ``E = c_j - c_a``,
    ``h'(s) = r (A s + B) / sqrt(q) + E``. Since ``(A s + B)^2 = A q - D`` with
    ``D = A |g|^2 - B^2 >= 0``, ``h' = 0`` gives ``q = r^2 D / (r^2 A - E^2)`` and
    ``A s + B = -sign(E) sqrt(A q - D)``; when ``r^2 A <= E^2``, ``h`` is monotone (``s = 0`` or 1).
    """
    e = d_j - g
    a = (e * e).sum(1)
    b = (g * e).sum(1)
    slope_e = c_j - c_a
    gap = (a * (g * g).sum(1) - b * b).clamp_min(0)
    denominator = radius**2 * a - slope_e**2
    q = radius**2 * gap / denominator.clamp_min(1e-300)
    root = (a * q - gap).clamp_min(0).sqrt()
    stationary = (-b - torch.sign(slope_e) * root) / a.clamp_min(1e-300)
    monotone = torch.where(slope_e < 0, 1.0, 0.0).to(g.dtype)
    step = torch.where(denominator > 0, stationary, monotone)
    return torch.where(a > 0, step.clamp(0.0, 1.0), monotone)


def _certify(weight, bias, k, support, weights, box, tol) -> Decision | None:
    """An "unargmaxable" decision if the simplex point ``a`` proves it (box bound or depth)."""
    if box is not None:
        certificate = box_certificate(weight, bias, k, support, weights, box)
        if certificate is None:
            return None
        if certificate.bound < -box_tolerance(weight, bias, k, support, box, tol):
            return Decision("unargmaxable", certificate=certificate, rows=len(support))
        return None
    if bias is None:
        return None  # without a bias the hull point must be exact: FW only approaches it
    certificate = hull_certificate(weight, bias, k, support, weights, tol,
                                   shift=bias_push(bias, k, tol))
    return None if certificate is None else Decision("unargmaxable", certificate=certificate,
                                                     rows=len(support))


def frank_wolfe(
    weight: np.ndarray,
    bias: np.ndarray | None,
    classes: np.ndarray,
    *,
    radius: float,
    box: float | None,
    tol: float,
    iterations: int = 200,
    block: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> list[Decision]:
    """Run Frank-Wolfe for each class (module doc); verified answers only, else "unknown"."""
    w = torch.from_numpy(weight)
    b = None if bias is None else torch.from_numpy(bias)
    decisions = [Decision("unknown") for _ in classes]
    for start in range(0, len(classes), block):
        ids = torch.as_tensor(classes[start:start + block])
        rows = w[ids]
        own_bias = None if b is None else b[ids]
        columns = torch.arange(len(ids))
        open_ = np.ones(len(ids), dtype=bool)
        simplex = torch.zeros((len(ids), w.shape[0]), dtype=torch.float64)
        u = radius * rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-300)
        g = c_a = None
        for _ in range(iterations):
            logits = u @ w.T
            if b is not None:
                logits += b
            margins = logits[columns, ids][:, None] - logits
            margins[columns, ids] = torch.inf
            rival = margins.argmin(1)
            d_j = rows - w[rival]
            c_j = torch.zeros(len(ids), dtype=torch.float64) if b is None else own_bias - b[rival]
            if g is None:  # start at the vertex of the strongest rival of u = r w_k / |w_k|
                g, c_a = d_j, c_j
                simplex[columns, rival] = 1.0
            else:
                step = _line_search(g, d_j, c_a, c_j, radius)
                g = (1 - step)[:, None] * g + step[:, None] * d_j
                c_a = (1 - step) * c_a + step * c_j
                simplex *= (1 - step)[:, None]
                simplex[columns, rival] += step
            objective = radius * torch.linalg.vector_norm(g, dim=1) + c_a
            winning = np.flatnonzero(open_ & (margins.min(1).values > 0).numpy())
            if len(winning):
                z = u[winning].numpy()
                margin, verified, _ = witness_margins(weight, bias, classes[start + winning], z)
                verified &= in_box(z, box)
                for j, m, ok, zj in zip(winning, margin, verified, z, strict=True):
                    if ok:
                        decisions[start + j] = Decision("argmaxable", witness=zj.copy(),
                                                        margin=float(m))
                        open_[j] = False
            for j in np.flatnonzero(open_ & (objective <= 0).numpy()):
                support = torch.nonzero(simplex[j]).flatten().numpy()
                weights = simplex[j, support].numpy()
                decision = _certify(weight, bias, int(ids[j]), support, weights / weights.sum(),
                                    box, tol)
                if decision is not None:
                    decisions[start + j], open_[j] = decision, False
            if not open_.any():
                break
            norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            u = torch.where(norm > 0, radius * g / norm.clamp_min(1e-300), torch.zeros_like(g))
        if on_progress is not None:
            on_progress(len(ids))
    return decisions
