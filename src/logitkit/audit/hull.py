"""Exact stage without a box: is ``0`` in the convex hull of the points ``p_i``? (Wolfe's algorithm)

For class ``k`` the points are ``p_i = (d_i, c_i)`` with ``d_i = w_k - w_i`` and ``c_i = b_k - b_i``
(``i != k``; without a bias only ``d_i``). Let ``x`` be the point of ``conv{p_i}`` nearest to the
origin (the minimum-norm point). Optimality says ``p_i . x >= |x|^2`` for every ``i``, so

* ``x != 0``: every row loses to ``k`` at the input ``x`` (without a bias) or ``x_z / x_s``
  (with a bias, where ``x = (x_z, x_s)``; a virtual point ``(0, M)`` keeps ``x_s > 0``): a witness;
* ``x = 0``: a convex combination ``a`` of the rows with ``sum_i a_i d_i = 0`` (and
  ``sum_i a_i c_i <= 0``): a certificate that ``k`` never wins (Gordan/Motzkin).

Wolfe's algorithm (Wolfe 1976, "Finding the nearest point in a polytope", Math. Programming 11)
finds ``x`` exactly in finitely many steps: it keeps a *corral* (affinely independent points whose
affine hull's nearest point lies inside their hull), adds the point that most violates optimality,
and drops points whose weight would turn negative. The corral's Gram system is kept as an economic
QR factorisation updated in ``O(d c)`` per step (Gram-Schmidt twice as a point joins,
``scipy.linalg.qr_delete`` as one leaves).

The points are scaled to unit length first: ``0`` lies in the hull of the ``p_i`` exactly when it
lies in the hull of the ``p_i / |p_i|`` (the same conic combination, reweighted by ``1 / |p_i|``),
and a witness for one is a witness for the other. Rows whose differences span twelve decades
(fp16 heads, a bias of 1e200) then make a corral as well conditioned as rows of one size; the
returned weights are those of the points themselves.

Only rows that matter are ever touched: the algorithm runs on a *pool* of candidate rows; when it
converges there, one product ``W x`` over all rows finds the rows that violate optimality, the worst
join the pool, and the corral is kept (a warm start). An interior point needs ``d + 1`` rows in its
certificate, a vertex usually far fewer.

Tolerance as a perturbation of row ``k`` (``shift``): the points are shifted by ``s``, the same
vector for every ``i``. Without a bias ``s = eps u`` with ``u = w_k - mean_{i != k} w_i``, which
moves ``w_k`` away from the centroid of the other rows by the fraction ``eps``; with a bias ``s``
adds ``delta`` to every ``c_i`` (raises ``b_k``). A certificate for the shifted points proves
that ``k`` stays unargmaxable after that push ("unargmaxable"); a witness for them that fails for
the unshifted points shows that ``k`` comes within the tolerance of winning ("tie" or
"argmaxable").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import qr_delete, solve_triangular

from logitkit.audit.exact_rows import row_squares_of

POSITIVE = 1e-14  # corral weights at or below this are dropped


@dataclass
class HullOutcome:
    """``x``: the minimum-norm point (shifted points); ``support``/``weights``: its corral."""

    x: np.ndarray
    support: np.ndarray  # row ids of W
    weights: np.ndarray  # on the simplex; a virtual point (bias mode) is not listed
    support_norms: np.ndarray  # |p_i| of the support's points (the corral holds p_i / |p_i|)
    virtual_weight: float
    converged: bool
    iterations: int
    pool_size: int


class _Corral:
    """Affinely independent pool points with convex weights, and the economic QR factorisation
    ``Q R`` of their columns ``(p_i, rho)``: ``Q``'s columns are the first ``c`` rows of
    ``basis`` and ``R`` (``c x c``, upper triangular, Fortran order for the triangular solves)
    is ``r``. A joining point's column is orthogonalised against ``Q`` twice (classical
    Gram-Schmidt with one reorthogonalisation, as orthogonal as a Householder update) into
    preallocated rows; ``points`` holds the corral's points in order, so ``x`` needs no gather."""

    def __init__(self, point: np.ndarray, index: int, rho: float) -> None:
        size = len(point) + 1
        self.rho = rho
        self.index: list[int] = []
        self.weights = np.zeros(0)
        self.basis = np.empty((size, size))
        self.points = np.empty((size, len(point)))
        self.r = np.zeros((0, 0), order="F")
        self.add(point, index)  # a column with last entry rho > 0 is never refused
        self.weights = np.ones(1)

    def add(self, point: np.ndarray, index: int) -> bool:
        """Append a point; refused (False) if it is affinely dependent on the corral."""
        size = len(self.index)
        if size >= len(self.basis):
            return False
        column = np.append(point, self.rho)
        basis = self.basis[:size]
        coefficients = basis @ column
        residual = column - coefficients @ basis
        again = basis @ residual
        residual -= again @ basis
        length = float(np.linalg.norm(residual))
        if length <= 1e-12 * np.linalg.norm(column):  # in the span of the corral's columns
            return False
        self.basis[size] = residual / length
        r = np.zeros((size + 1, size + 1), order="F")
        r[:size, :size] = self.r
        r[:size, size] = coefficients + again
        r[size, size] = length
        self.r = r
        self.points[size] = point
        self.index.append(index)
        self.weights = np.append(self.weights, 0.0)
        return True

    def remove(self, positions: np.ndarray) -> None:
        for position in sorted(positions.tolist(), reverse=True):
            size = len(self.index)
            _, r = qr_delete(self.basis[:size].T, self.r, position, 1, which="col",
                             overwrite_qr=True, check_finite=False)  # Q in place in basis
            self.r = np.asfortranarray(r[:size - 1])  # R is square (full where Q was)
            self.points[position:size - 1] = self.points[position + 1:size]
            del self.index[position]
        self.weights = np.delete(self.weights, positions)
        self.weights /= self.weights.sum()

    def point(self) -> np.ndarray:
        """The corral's point ``sum_i weights_i p_i``."""
        return self.weights @ self.points[:len(self.index)]

    def affine_minimiser(self) -> np.ndarray:
        """Weights (summing to 1) of the point of the corral's affine hull nearest to 0."""
        ones = np.ones(len(self.index))
        y = solve_triangular(self.r, solve_triangular(self.r, ones, trans="T",
                                                      check_finite=False), check_finite=False)
        return y / y.sum()


def _minor_cycles(corral: _Corral) -> None:
    """Move the weights to the affine minimiser, dropping points whose weight would go negative.

    Each pass drops at least one point (the one whose weight reaches 0 first, or, when rounding
    leaves no positive step, the one with the smallest affine weight), so it ends."""
    while True:
        alpha = corral.affine_minimiser()
        if np.all(alpha > POSITIVE) or len(corral.index) == 1:
            corral.weights = alpha if np.all(alpha > POSITIVE) else np.ones(1)
            return
        lam = corral.weights
        falling = np.flatnonzero(alpha <= POSITIVE)
        room = lam[falling] - alpha[falling]
        ratios = np.where(room > 0, lam[falling] / np.where(room > 0, room, 1.0), 0.0)
        step = float(np.clip(ratios.min(), 0.0, 1.0))
        lam = lam + step * (alpha - lam)
        drop = lam <= POSITIVE
        if not drop.any():
            drop[falling[np.argmin(alpha[falling])]] = True
        corral.weights = np.where(drop, 0.0, lam)
        corral.remove(np.flatnonzero(drop))


def _wolfe(pool: np.ndarray, corral: _Corral, max_iterations: int,
           scale: float) -> tuple[int, bool]:
    """Wolfe's major cycles on the pool points (rows of ``pool``): ``(iterations, stalled)``;
    stalled means the best new point cannot join the corral (rounding at the optimum)."""
    best, since = np.inf, 0
    patience = 3 * (pool.shape[1] + 2)  # Wolfe's norm falls every major cycle (exactly)
    for iteration in range(1, max_iterations + 1):
        x = corral.point()
        values = pool @ x
        j = int(np.argmin(values))
        norm2 = float(x @ x)
        if norm2 - values[j] <= 1e-13 * scale * np.sqrt(norm2) or norm2 <= (1e-15 * scale) ** 2:
            return iteration, False
        if norm2 < best * (1.0 - 1e-12):
            best, since = norm2, 0
        else:
            since += 1
        if since > patience or j in corral.index or not corral.add(pool[j], j):
            return iteration, True  # rounding keeps it from improving: it is at the optimum
        _minor_cycles(corral)
    return max_iterations, False


def nearest_point(
    weight: np.ndarray,
    bias: np.ndarray | None,
    k: int,
    start_rows: np.ndarray,
    shift: float,
    *,
    row_sum: np.ndarray,
    row_squares: np.ndarray | None = None,
    add_rows: int = 256,
    max_iterations: int = 50_000,
) -> HullOutcome:
    """The minimum-norm point of the shifted points of class ``k`` (module doc), exactly.

    ``start_rows`` seed the pool; ``shift`` is ``eps`` (no bias) or ``delta`` (bias);
    ``row_sum`` is ``W.sum(0)`` (for the centroid); ``row_squares`` ``|w_i|^2`` per row (computed
    here if None; callers deciding many classes pass it once). Whatever it returns is checked
    again by the caller (:mod:`logitkit.audit.verify`).
    """
    n_rows, d = weight.shape
    wk = weight[k]
    lifted = bias is not None
    if lifted:
        gaps = bias[k] - bias
        start = start_rows[start_rows != k]
        typical_d = float(np.median(np.linalg.norm(wk - weight[start], axis=1))) or 1.0
        typical_c = float(np.median(np.abs(gaps[start]))) + shift
        ratio = typical_c / typical_d if typical_c > 0 else 1.0  # balances the s coordinate
        offset = np.zeros(d + 1)
        offset[-1] = shift / ratio
    else:
        centroid_gap = wk - (row_sum - wk) / (n_rows - 1)
        offset = shift * centroid_gap

    def points(rows: np.ndarray) -> np.ndarray:
        block = wk - weight[rows]
        if lifted:
            block = np.hstack([block, gaps[rows, None] / ratio])
        block += offset
        peak = np.abs(block).max(1, keepdims=True)  # scaled first: no overflow at 1e200
        block /= np.where(peak > 0, peak, 1.0)
        length = np.linalg.norm(block, axis=1)
        norms[rows] = peak[:, 0] * length
        return block / np.where(length > 0, length, 1.0)[:, None]

    rows = np.unique(start_rows[start_rows != k])
    norms = np.ones(n_rows)  # |p_i|: the points are scaled to unit length (conic invariance)
    in_pool = np.zeros(n_rows, dtype=bool)
    in_pool[rows] = True
    in_pool[k] = True
    pool = points(rows)
    base = 0
    if lifted:  # the virtual point (0, M) is pool row 0 and never leaves the pool; M is on the
        virtual = np.zeros(d + 1)  # scale of the pool's rows (any M > 0 keeps x_s > 0)
        virtual[-1] = float(np.abs(pool).max()) if len(pool) else 1.0
        pool = np.vstack([virtual, pool])
        base = 1
    scale = float(np.abs(pool).max()) or 1.0
    first = base + int(np.argmin((pool[base:] * pool[base:]).sum(1)))
    corral = _Corral(pool[first], first, rho=scale)
    iterations = 0
    converged = False
    previous = np.inf
    all_norms = None
    while iterations < max_iterations:
        used, stalled = _wolfe(pool, corral, max_iterations - iterations, scale)
        iterations += used
        x = corral.point()
        norm2 = float(x @ x)
        if norm2 <= (1e-15 * scale) ** 2 or (stalled and norm2 >= previous * (1.0 - 1e-9)):
            converged = True  # at 0, or stuck at the same point after new rows joined the pool
            break
        previous = norm2
        z = x[:d]
        values = wk @ z - weight @ z + offset[:d] @ z
        if lifted:
            values = values + (gaps + shift) * (x[d] / ratio)
        values[in_pool] = np.inf
        if all_norms is None:  # |p_i| of every row, from one product (ranking only)
            moved = wk + offset[:d]
            if row_squares is None:
                row_squares = row_squares_of(weight)
            squares = moved @ moved - 2.0 * (weight @ moved) + row_squares
            all_norms = np.sqrt(np.maximum(squares, np.finfo(np.float64).tiny))
            if lifted:
                all_norms = np.hypot(all_norms, (gaps + shift) / ratio)
        values /= all_norms
        violators = np.flatnonzero(values < norm2 * (1.0 - 1e-9))
        if len(violators) == 0:
            converged = True
            break
        worst = violators[np.argsort(values[violators])[:add_rows]]
        in_pool[worst] = True
        rows = np.concatenate([rows, worst])
        pool = np.vstack([pool, points(worst)])
    index = np.asarray(corral.index)
    real = index >= base
    weights = corral.weights.copy()  # on the unit points: a_i / |p_i| on the points themselves
    support = rows[index[real] - base]
    weights[real] /= np.where(norms[support] > 0, norms[support], 1.0)
    weights /= weights.sum()
    virtual_weight = float(weights[~real].sum())
    if lifted:
        x = np.append(x[:d], x[d] / ratio)
    return HullOutcome(x=x, support=support, weights=weights[real],
                       support_norms=norms[support],
                       virtual_weight=virtual_weight, converged=converged,
                       iterations=iterations, pool_size=len(rows))
