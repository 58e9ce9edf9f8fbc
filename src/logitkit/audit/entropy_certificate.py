"""Certificates for interior classes from the minimiser of the smooth bound (no bias).

For class ``k`` and ``F(z) = log sum_{i != k} exp(w_i . z) - w_k . z`` (see
:mod:`~logitkit.audit.smooth_witness`), the gradient is ``sum_i p_i w_i - w_k`` with
``p = softmax_{i != k}(W z)``. Where ``grad F = 0``, the weights ``p`` are a convex combination of
the other rows equal to ``w_k``: a certificate that ``k`` never wins (the maximum-entropy one; it
exists exactly when ``w_k`` lies inside the hull of the other rows). Near the minimiser, one
Newton step in the weights makes the combination exact. For a target ``t`` (``w_k``, or ``w_k``
pushed outward by the tolerance) put ``r = sum_i a_i w_i - t`` and ``s = sum_i a_i - 1``; the
smallest change ``delta`` in the norm ``sum_i delta_i^2 / p_i`` with ``sum_i delta_i w_i = -r``
and ``sum_i delta_i = -s`` is

    delta_i = p_i ((w_i - mu) . y - s),   H y = -(r - s mu),

with ``mu = sum_i p_i w_i`` and ``H = sum_i p_i (w_i - mu)(w_i - mu)^T`` (the Hessian of ``F``).
``p``, ``mu``, ``H``, its Cholesky factor and the step come from a float32 copy of the head; the
residuals ``r, s`` are float64, and the step is repeated (iterative refinement) until they stop
falling. Where a weight would turn negative (``z`` not yet close enough), a damped Newton step on
``z`` comes first and the Hessian is formed again. The certificate is used only if every weight
stays ``>= 0`` and :func:`~logitkit.audit.verify.hull_certificate` accepts it.

The Gram matrix behind ``H`` is most of the work. So the step is first confined to the
``3 (d + 1)`` rows ``T`` with the largest weights (the other weights stay ``p_i``): the same
smallest change over ``T`` alone is ``delta_i = p_i ((w_i - mu_T) . y - s / P_T)``,
``H_T y = -(r - s mu_T)``, with ``P_T = sum_T p_i``, ``mu_T = sum_T p_i w_i / P_T`` and ``H_T``
the Hessian's sum over ``T`` (3/8 of the pool's Gram matrix). It must reach the rounding level with
every weight ``>= 0``; where it does not, the step over the whole pool above takes over. On a
151936 x 896 head (lognormal row norms) five interior classes in six need no more, and 400 of
them took 15.3 s instead of 19.5 s with two processes. ``T``'s Gram matrix is summed about the
pool's mean, ``G_T = sum_T p_i (w_i - mu)(w_i - mu)^T``, so that ``H_T = G_T - P_T (mu_T - mu)
(mu_T - mu)^T`` and the whole pool's first ``H`` (the same ``p``) is ``G_T`` plus the rows off
``T``: 5/8 of a Gram matrix, not all of it. The damped Newton step's line search forms the pool's
float64 logits at ``z`` and along the step once, so each trial length is a sum of two vectors, not
a product over the pool. The two took the exact stage of a GPT-2-shaped head (50257 x 768,
lognormal row norms, sigma 1, 6358 classes) from 275 to 242 s with two processes.

Pools: all of this runs on the ``8 (d + 1)`` rows with the largest logits at ``z`` (``F`` restricted
to them has its own minimiser, which the Newton steps find; a pool whose hull misses ``w_k`` is
replaced by one 4 times larger). A pool keeps the Gram matrix at ``8 (d + 1) d^2`` instead of
``V d^2`` and, above all, keeps the certificate's float64 rounding allowance ``gamma_{|S|+2}``
small: a dense sum over all rows of a 151936-row head has ``gamma ~ 1.7e-11``, more than the
``tol / 64 = 1.6e-11`` a certificate may miss by at the default ``tol``, so such heads got no
entropy certificates at all. Pools never exceed :func:`largest_support` rows (35181 at the
default ``tol``). A pool is gathered into a copy only where it has at most 1/8 of the head's
rows; a larger one is read from the head a block of rows at a time, and each step's float64 sum
is taken in the pass that forms the step (:class:`PoolRows`): on a 12000-class sample of a
151936 x 896 head the audit's peak with its two workers, 972 MiB in the exact stage, became the
witness search's 884 MiB (the exact stage under it), in the same time (142.6 and 144.5 s).

Example::

    import numpy as np
    from logitkit.audit.entropy_certificate import entropy_certificate
    W = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0.1, 0.2]])
    cert = entropy_certificate(W, 4, np.zeros(2), tol=1e-9)
    assert cert is not None and abs(cert.weights @ W[cert.support] - W[4]).max() < 1e-12
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.lapack import spotrf

from logitkit.audit.exact_rows import ExactRows
from logitkit.audit.verify import (
    RESIDUAL_SHARE,
    UNIT_ROUNDOFF_64,
    Certificate,
    hull_certificate,
    rounding_share,
)

REFINEMENTS = 6  # float64 refinement steps at most (a matrix-vector pair over the moved rows)
ROUNDING_LEVEL = 1e-14  # |residual|_1 / |target|_1 at which refinement stops
NEWTON_STEPS = 8  # where the weight step leaves the simplex: a damped Newton step on z, again
POOL_PER_DIMENSION = 8  # the first pool: the 8 (d + 1) rows with the largest logits at z
POOL_GROWTH = 4  # the next pool where one gives no certificate
SUBSET_PER_DIMENSION = 3  # the first weight step: over the 3 (d + 1) rows with most weight
CONVERGED = 1e-13  # |residual|_1 / |target|_1 that step must reach (else the whole pool's)
ROUNDING_ROOM = 4  # a certificate's rounding allowance stays below 1/4 of what tol allows
GRAM_BLOCK_BYTES = 2**24  # centred pool rows per block of the Hessian (16 MB)
UPCAST_BLOCK = 256  # float32 pool rows upcast per block for a float64 sum (in cache)
GATHER_BLOCK = 1024  # rows gathered per block for their logits or sums (in cache)
POOL_COPY_SHARE = 8  # a pool is gathered once where it has at most 1/8 of the head's rows


def largest_support(tol: float) -> int:
    """The most rows a certificate can have at ``tol``: ``gamma_{n+2} <= tol / 64 / 4``."""
    n = int(tol * RESIDUAL_SHARE / ROUNDING_ROOM / UNIT_ROUNDOFF_64) - 3
    while n > 0 and rounding_share(n) > tol * RESIDUAL_SHARE / ROUNDING_ROOM:
        n -= 1
    return max(n, 0)


def entropy_certificate(
    weight: np.ndarray, k: int, z: np.ndarray, *, tol: float,
    shift: np.ndarray | None = None, weight32: np.ndarray | None = None,
    rows: np.ndarray | None = None, exact32: bool = False,
) -> Certificate | None:
    """A certificate that ``sum_i a_i w_i = w_k + shift`` (``i != k``) from the point ``z``.

    ``weight``: float64 rows (an array, or :class:`~logitkit.audit.exact_rows.ExactRows`; a
    head without a bias); ``z`` a point near the minimiser of ``F``
    (module doc); ``shift`` the push of row ``k`` by the tolerance (a "depth" certificate, see
    :func:`~logitkit.audit.verify.hull_certificate`), None for a plain "hull" certificate.
    ``weight32``, a float32 copy of ``weight``, is reused for the logits if given; ``rows``,
    sorted row ids, the candidates for the pools (None: all rows; ``k`` never is one);
    ``exact32``: ``weight32`` holds ``weight`` exactly
    (:func:`~logitkit.audit.verify.float32_copy`), so the float64 sums over a pool are taken
    from its float32 rows, a block at a time, and no float64 copy of the pool is gathered (half
    the memory traffic of the refinement).
    The rows (the *pool*) are the ``8 (d + 1)`` with the largest logits at ``z``; where that pool
    gives no certificate, one 4 times larger, and so on up to all rows or
    :func:`largest_support` (so the certificate's rounding stays well inside the tolerance).
    Returns None when no pool gives a certificate or ``tol`` is too small for a pool of
    ``2 (d + 1)`` rows; the caller then falls back to an exact method.
    """
    d = weight.shape[1]
    candidates = np.delete(np.arange(len(weight)), k) if rows is None else rows[rows != k]
    most = min(largest_support(tol), len(candidates))
    if most < min(2 * (d + 1), len(candidates)):
        return None  # the rounding allowance of a full-dimensional pool exceeds the tolerance
    target = weight[k] if shift is None else weight[k] + shift
    rows32 = weight.astype(np.float32) if weight32 is None else weight32
    size = min(POOL_PER_DIMENSION * (d + 1), most)
    z32 = z.astype(np.float32)
    logits = (rows32 @ z32)[candidates] if rows is None else \
        PoolRows(weight, rows32, candidates, exact32).logits32(z32)
    while True:
        pool = _pool(candidates, logits, size)
        combination = _pool_combination(pool_rows(weight, rows32, pool, exact32), target, z)
        if combination is not None:
            keep = np.flatnonzero(combination > 0)
            certificate = hull_certificate(weight, None, k, pool[keep],
                                           combination[keep] / combination[keep].sum(), tol,
                                           shift=shift)
            if certificate is not None:
                return certificate
        if size >= most:
            return None
        size = min(POOL_GROWTH * size, most)


class PoolRows:
    """Rows of a head for the steps over a pool: ``ids`` of ``weight`` (None: all its rows).

    ``weight``: float64 rows (an array or :class:`~logitkit.audit.exact_rows.ExactRows`; None
    where ``exact32``); ``weight32`` their float32 copy; ``exact32``: ``weight32`` holds
    ``weight`` exactly, so the float64 rows are its rows upcast. Rows named by ``ids`` are
    gathered a cache-sized block at a time for each pass and let go (:func:`pool_rows` decides
    which pools are read so).
    """

    def __init__(self, weight: np.ndarray | ExactRows | None, weight32: np.ndarray,
                 ids: np.ndarray | None, exact32: bool) -> None:
        self.weight, self.weight32, self.ids, self.exact32 = weight, weight32, ids, exact32

    def __len__(self) -> int:
        return len(self.weight32) if self.ids is None else len(self.ids)

    def part(self, positions: np.ndarray) -> PoolRows:
        """The rows at ``positions`` of this pool."""
        ids = positions if self.ids is None else self.ids[positions]
        return PoolRows(self.weight, self.weight32, ids, self.exact32)

    def blocks(self, rows: int = GATHER_BLOCK):
        """``(positions, float32 rows)`` for consecutive blocks of ``rows`` rows (views of
        ``weight32`` where ``ids`` is None: read only)."""
        for start in range(0, len(self), rows):
            part = slice(start, start + rows)
            yield part, self.weight32[part if self.ids is None else self.ids[part]]

    def _blocks64(self):
        """``(positions, float32 rows, float64 rows)`` for blocks of ``UPCAST_BLOCK`` rows."""
        for part, block in self.blocks(UPCAST_BLOCK):
            if self.exact32:
                yield part, block, block.astype(np.float64)
            else:
                yield part, block, np.asarray(self.weight[part if self.ids is None else
                                                          self.ids[part]], dtype=np.float64)

    def logits32(self, y32: np.ndarray) -> np.ndarray:
        """``w_i . y`` for each row, in float32."""
        if self.ids is None:
            return self.weight32 @ y32
        out = np.empty(len(self), dtype=np.float32)
        for part, block in self.blocks():
            out[part] = block @ y32
        return out

    def mean32(self, p: np.ndarray) -> np.ndarray:
        """``sum_i p_i w_i`` summed in float32, returned as float64."""
        p32 = p.astype(np.float32)
        if self.ids is None:
            return (p32 @ self.weight32).astype(np.float64)
        total = np.zeros(self.weight32.shape[1], dtype=np.float32)
        for part, block in self.blocks():
            total += p32[part] @ block
        return total.astype(np.float64)

    def sum64(self, a: np.ndarray) -> np.ndarray:
        """``sum_i a_i w_i`` in float64 (the float32 rows upcast where they are exact)."""
        if self.ids is None and not self.exact32:
            return a @ self.weight
        total = np.zeros(self.weight32.shape[1])
        for part, _, block in self._blocks64():
            total += a[part] @ block
        return total

    def products64(self, x: np.ndarray) -> np.ndarray:
        """``W x`` in float64 for ``x`` of shape (d, m): (len, m)."""
        if self.ids is None and not self.exact32:
            return self.weight @ x
        out = np.empty((len(self), x.shape[1]))
        for part, _, block in self._blocks64():
            out[part] = block @ x
        return out

    def moved_by(self, y: np.ndarray, mass: np.ndarray,
                 offset: float) -> tuple[np.ndarray, np.ndarray]:
        """The weight step ``delta_i = mass_i (w_i . y - offset)`` (``w_i . y`` in float32) and
        its float64 sum ``sum_i delta_i w_i``, in one pass over the rows."""
        y32 = y.astype(np.float32)
        if self.ids is None and not self.exact32:
            step = mass * ((self.weight32 @ y32).astype(np.float64) - offset)
            return step, step @ self.weight
        step, total = np.empty(len(self)), np.zeros(self.weight32.shape[1])
        for part, block32, block in self._blocks64():
            step[part] = mass[part] * ((block32 @ y32).astype(np.float64) - offset)
            total += step[part] @ block
        return step, total


def pool_rows(weight: np.ndarray | ExactRows, weight32: np.ndarray, pool: np.ndarray,
              exact32: bool) -> PoolRows:
    """The rows ``pool`` of the head: a gathered copy where its float32 rows fit in
    ``1 / POOL_COPY_SHARE`` of the head's, else read from the head a block at a time.

    A copy serves the many passes over a pool fastest (each pass over a pool read in place
    gathers its rows again: 10-14 ms more per pass over 35181 rows of d = 896); but the
    largest pools, 35181 rows at the default ``tol``, are 126 MB in float32 at d = 896 (twice
    that in float64): a worker rose 100-120 MB with each such pool on a sample of a 151936 x
    896 head, and a whole audit of it rose 230 MB above its usual level once."""
    if len(pool) * POOL_COPY_SHARE > len(weight32):
        return PoolRows(weight, weight32, pool, exact32)
    return PoolRows(None if exact32 else np.asarray(weight[pool], dtype=np.float64),
                    weight32[pool], None, exact32)


def _pool_combination(pool: PoolRows, target: np.ndarray, z: np.ndarray) -> np.ndarray | None:
    """Convex weights over the ``pool`` combining to ``target`` to rounding, by the steps of
    the module doc from ``z``: over the heaviest rows first, then over all with Newton steps on
    ``z``; None if none.

    The pool's first Hessian has the same ``p`` and centre ``mu`` as the subset's Gram matrix
    (:func:`_subset_step`), so it adds only the rows off the subset to it."""
    p, mu = _softmax_mean(pool, z)
    heaviest = SUBSET_PER_DIMENSION * (pool.weight32.shape[1] + 1)
    hessian = None
    if heaviest < len(p):
        subset = np.sort(np.argpartition(-p, heaviest - 1)[:heaviest])
        a, subset_gram = _subset_step(pool, target, p, mu, subset)
        if a is not None:
            return a
        off = np.setdiff1d(np.arange(len(p)), subset)
        hessian = subset_gram + _gram(pool.part(off), p[off], mu)
    for _ in range(NEWTON_STEPS):
        factor = _cholesky(_gram(pool, p, mu) if hessian is None else hessian)
        hessian = None
        if factor is None:
            return None
        a = _refined(pool, target, p, mu, factor)
        if a is not None:
            return a
        z = _damped_newton(pool, target, z, -_solve(factor, mu - target), mu - target)
        p, mu = _softmax_mean(pool, z)
    return None


def _subset_step(pool: PoolRows, target: np.ndarray, p: np.ndarray, mu: np.ndarray,
                 subset: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The weight step confined to the rows ``subset`` (module doc), refined to the rounding
    level (None where a weight turns negative or the residual stays above ``CONVERGED``), and
    the subset's Gram matrix centred at the pool's mean ``mu``, ``G_T = sum_T p_i (w_i - mu)
    (w_i - mu)^T``: ``H_T = G_T - P_T (mu_T - mu)(mu_T - mu)^T``."""
    mass, heaviest = p[subset], pool.part(subset)
    total = float(mass.sum())
    mean = heaviest.mean32(mass) / total
    gram = _gram(heaviest, mass, mu)
    off = (mean - mu).astype(np.float32)
    factor = _cholesky(gram - np.float32(total) * np.outer(off, off))
    if factor is None:
        return None, gram
    return _refined(pool, target, p, mean, factor, subset=subset, total=total,
                    required=CONVERGED), gram


def _pool(candidates: np.ndarray, logits: np.ndarray, size: int) -> np.ndarray:
    """Ids of the ``size`` candidate rows with the largest logits (one per candidate), sorted."""
    if size >= len(candidates):
        return candidates
    return np.sort(candidates[np.argpartition(-logits, size - 1)[:size]])


def _damped_newton(pool: PoolRows, target: np.ndarray, z: np.ndarray, step: np.ndarray,
                   gradient: np.ndarray) -> np.ndarray:
    """``z + t step`` with the largest ``t`` in 1, 1/2, ... passing Armijo's test on ``F``.

    ``F(z + t step) = LSE(l + t m) - target . (z + t step)`` over the pool, in float64, from
    ``l = W z`` and ``m = W step``, formed once: one pass over the pool serves every ``t``."""
    products = pool.products64(np.stack([z, step], axis=1))
    logits, change = products[:, 0], products[:, 1]
    along = float(target @ step)

    def bound(t: float) -> float:
        moved = logits + t * change
        top = moved.max()
        return float(top + np.log(np.exp(moved - top).sum()) - t * along)

    start, slope, t = bound(0.0), float(gradient @ step), 1.0
    while t > 1e-4 and bound(t) > start + 1e-4 * t * slope:
        t /= 2
    return z + t * step


def _softmax_mean(pool: PoolRows, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p = softmax(W_pool z)`` and ``mu = sum_i p_i w_i`` from the float32 rows: any
    positive ``p`` serves (the refinement computes its residuals in float64)."""
    logits = pool.logits32(z.astype(np.float32)).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return p, pool.mean32(p)


def _gram(rows: PoolRows, p: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``sum_i p_i (w_i - centre)(w_i - centre)^T`` over ``rows`` (``p`` one weight per row),
    in float32, summed over blocks of ``GRAM_BLOCK_BYTES`` of rows. With ``centre = mu =
    sum_i p_i w_i`` over the whole pool it is ``H``, the Hessian of ``F``."""
    centre32, root = centre.astype(np.float32), np.sqrt(p).astype(np.float32)
    d = rows.weight32.shape[1]
    gram = np.zeros((d, d), dtype=np.float32)
    for part, block in rows.blocks(max(1, GRAM_BLOCK_BYTES // (4 * d))):
        # a gathered block is a copy: centred in place; a view of a gathered pool is not
        centred = np.subtract(block, centre32, out=block if rows.ids is not None else None)
        centred *= root[part, None]
        gram += centred.T @ centred
    return gram


def _cholesky(hessian32: np.ndarray):
    """Cholesky factor of the float32 ``H``, in float32 where that succeeds.

    ``H`` itself carries float32 rounding, so a float64 factor of it steers the refinement no
    better, and costs twice as much (0.1 s at d = 2304). Where float32 finds ``H`` not positive
    definite, the float64 factor of ``H`` plus ``1e-12 trace(H)`` on its diagonal is tried; None
    where that fails too (the rows with weight span less than the space)."""
    factor, info = spotrf(hessian32, lower=False, clean=False)
    if info == 0:
        return factor, False
    hessian = hessian32.astype(np.float64)
    hessian[np.diag_indices_from(hessian)] += 1e-12 * np.trace(hessian)
    try:
        return cho_factor(hessian, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def _solve(factor, rhs: np.ndarray) -> np.ndarray:
    """``H^-1 rhs`` (float64) from :func:`_cholesky`'s factor, in the factor's precision."""
    return cho_solve(factor, rhs.astype(factor[0].dtype), check_finite=False).astype(np.float64)


def _refined(pool: PoolRows, target: np.ndarray, p: np.ndarray, mu: np.ndarray, factor, *,
             subset: np.ndarray | None = None, total: float = 1.0,
             required: float | None = None) -> np.ndarray | None:
    """``p`` plus the weight step of the module doc, refined with float64 residuals (the step
    itself may be rounded: the next residual corrects it; each step's float64 sum is taken in
    the same pass over the rows as the step); None if a weight turns negative.
    ``subset``: the step is confined to these rows (``mu`` and ``total`` their mean and mass);
    ``required``: None also where the relative residual stays above it."""
    a, best, best_size = p, p, np.inf
    scale = float(np.abs(target).sum())
    moved, mass = (pool, p) if subset is None else (pool.part(subset), p[subset])
    r = pool.sum64(p) - target
    for _ in range(REFINEMENTS):
        s = a.sum() - 1.0
        size = float(np.abs(r).sum()) + abs(s) * scale
        if size >= best_size:  # at the rounding level
            break
        best, best_size = a, size
        if size <= ROUNDING_LEVEL * scale:
            break
        y = _solve(factor, -(r - s * mu))
        step, change = moved.moved_by(y, mass, mu @ y + s / total)
        if subset is None:
            a = a + step
        else:
            a = a.copy()
            a[subset] += step
        if not a.min() >= 0:  # a weight turned negative (or the step overflowed)
            return None
        r = r + change  # the residual of the new weights: the step's float64 sum added
    if required is not None and not best_size <= required * scale:
        return None
    return best
