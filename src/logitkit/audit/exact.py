"""Exact decision for one class: argmaxable, tie or unargmaxable, each with verified evidence.

Without a box (or without a bias, where a box changes nothing: the problem is homogeneous) the
decision first tries, where the witness search settled near the minimiser of its bound (no bias),
an entropy certificate (:mod:`~logitkit.audit.entropy_certificate`) for the pushed row (step 1's
"unargmaxable"); otherwise, or if that fails, it uses the minimum-norm point of
:mod:`~logitkit.audit.hull` three times at most:

1. on the points pushed by the tolerance (``w_k`` moved away from the centroid of the other rows by
   the fraction ``tol``, or ``b_k`` raised by ``delta``): a certificate there means "unargmaxable"
   with room to spare; a witness there that also wins for the real head means "argmaxable";
2. otherwise on the real points: a witness means "argmaxable"; a certificate means "tie": ``k``
   cannot win, yet it wins after a push of the size of the tolerance (duplicate rows, points on a
   facet, and points closer to the hull's boundary than the tolerance);
3. where the real points give neither (a row outside the hull by less than the witness check's
   rounding bound can prove), on the points pushed *inward* by the tolerance: a certificate there
   (kind "inner") with an input where ``k`` comes within the tolerance of the top means "tie".

A converged corral whose weights miss the certificate's equations by more than rounding (an
ill-conditioned corral of ``d + 1`` rows) gets them polished by least squares
(:func:`polished_weights`) and is checked again; only :mod:`~logitkit.audit.verify` decides.

With a box and a bias, the margin LP ``max t s.t. d_i . z + c_i >= t, |z|_inf <= B`` is solved by
HiGHS with constraint generation (start with a few rival rows, add the rows the current ``z``
violates most); its optimum ``t*`` is the best margin: a verified witness if ``t* > 0``, a dual
certificate bounding it below ``-tau`` ("unargmaxable"), or both sides within ``tau`` ("tie"),
where ``tau = tol * (B max_S |d_i|_1 + max_S |c_i|)`` over the LP's rows ``S`` (a per-class scale).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing as mp
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from logitkit.audit.chebyshev import decide_ball
from logitkit.audit.decision import Decision, solve_margin_lp
from logitkit.audit.entropy_certificate import entropy_certificate
from logitkit.audit.evidence_store import RowStore
from logitkit.audit.exact_rows import row_squares_of
from logitkit.audit.hull import nearest_point
from logitkit.audit.verify import (
    Certificate,
    box_certificate,
    box_tolerance,
    float32_copy,
    homogeneous_into_box,
    hull_certificate,
    in_box,
    witness_margins,
)


def bias_push(bias: np.ndarray, k: int, tol: float) -> float:
    """``delta = tol * median_i |b_k - b_i|`` (a per-class logit scale a masked token leaves be)."""
    gaps = np.abs(bias[k] - bias)
    scale = float(np.median(gaps)) or float(gaps.max())
    return tol * scale if scale > 0 else float(np.finfo(np.float64).tiny)


def _input(x: np.ndarray, d: int, lifted: bool, box: float | None) -> np.ndarray | None:
    """The input behind a minimum-norm point: ``x`` or ``x_z / x_s``; powers of two into a box."""
    if lifted:
        z = x[:d] / x[d] if x[d] > 0 else None
        if z is None or (box is not None and np.abs(z).max() > box):
            return None
    else:
        z = homogeneous_into_box(x, box)[0]
    return z if np.all(np.isfinite(z)) else None


def _levelled(weight: np.ndarray, bias: np.ndarray | None, k: int, outcome, shift) -> np.ndarray:
    """The minimum-norm point ``x`` projected so that every point of its corral gets the same
    value ``q_i . x / |p_i|`` (``q_i = (d_i + s, c_i + delta)``; :mod:`~logitkit.audit.hull`
    works on the unit points ``p_i / |p_i|``, its ``support_norms``): the normal of the corral's
    affine hull.

    Where the push is of the size of the tolerance, ``x`` is that small too, and its absolute
    rounding error (of the size of the points, ``2^-53 |q_i|``) can turn it away from the true
    normal by more than the push; the normal computed from the corral's points (of the rows'
    size) is accurate relative to them. A corral that holds the virtual point is left as is."""
    if outcome.virtual_weight > 0 or len(outcome.support) < 2:
        return outcome.x
    rows = outcome.support
    points = weight[k] - weight[rows]
    if bias is None:
        points = points + (0.0 if shift is None else shift)
    else:
        points = np.hstack([points, (bias[k] - bias[rows] + (shift or 0.0))[:, None]])
    points /= outcome.support_norms[:, None]
    spans = points[1:] - points[0]
    try:
        return outcome.x - np.linalg.lstsq(spans, spans @ outcome.x, rcond=None)[0]
    except np.linalg.LinAlgError:
        return outcome.x


def _check(weight, bias, k, z, box) -> tuple[float, bool]:
    if z is None:
        return -np.inf, False
    margin, verified, _ = witness_margins(weight, bias, np.array([k]), z[None])
    return float(margin[0]), bool(verified[0] and in_box(z, box)[0])


def polished_weights(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray, shift: np.ndarray | float | None = None, *, slack: bool = False,
    rounds: int = 2,
) -> np.ndarray | None:
    """``weights`` refined until a certificate's equations hold to rounding; None if a weight
    turns negative. ``d_i = w_k - w_i``, ``c_i = b_k - b_i`` over ``support``:

    * no bias: ``sum_i a_i d_i = -shift`` (``shift`` a vector, None for 0), ``sum_i a_i = 1``;
    * bias: ``sum_i a_i d_i = 0``, ``sum_i a_i c_i + v = -shift`` (``shift`` the push
      ``delta``, None for 0) and ``sum_i a_i = 1``, with ``v >= 0`` where the corral held the
      virtual point (``slack``: ``c_a`` has room below ``-delta``) and ``v = 0`` where it did not.

    Wolfe's corral weights solve an affine system whose conditioning grows with the corral (an
    interior point needs ``d + 1`` rows, some with weights near 0); they can miss it by more
    than a certificate allows. Least squares on the residual, computed in float64 and solved by
    SVD (backward stable), brings it to rounding level in a round or two (iterative refinement).

    Example (the centre of a square, from rough weights)::

        W = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1], [0, 0]])
        a = polished_weights(W, None, 4, np.arange(4), np.array([0.3, 0.2, 0.25, 0.25]))
        assert abs(a @ W[:4] - W[4]).max() < 1e-15 and abs(a.sum() - 1) < 1e-15
    """
    d, m = weight.shape[1], len(support)
    lifted = bias is not None
    system = np.zeros((d + 1 + lifted, m + (lifted and slack)))
    target = np.zeros(len(system))
    system[:d, :m] = (weight[k] - weight[support]).T
    system[-1, :m] = 1.0
    target[-1] = 1.0
    start = weights.astype(np.float64)
    if not lifted and shift is not None:
        target[:d] = -np.asarray(shift)
    if lifted:
        gaps = bias[k] - bias[support]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            balance = np.linalg.norm(system[:d, :m]) / np.linalg.norm(gaps)  # rows of one size
        balance = float(balance) if np.isfinite(balance) and balance > 0 else 1.0
        system[d, :m] = balance * gaps
        target[d] = -balance * float(shift or 0.0)
        if slack:
            system[d, m] = balance
            start = np.append(start, max(target[d] - system[d, :m] @ start, 0.0) / balance)
    refined = start
    try:
        for _ in range(rounds):
            refined = refined + np.linalg.lstsq(system, target - system @ refined, rcond=None)[0]
    except np.linalg.LinAlgError:  # SVD did not converge: no polished weights, no certificate
        return None
    return refined[:m] if np.all(refined >= 0) else None


def _certificate(weight, bias, k, outcome, tol, shift, kind="depth") -> Certificate | None:
    """The corral of a converged minimum-norm point as a certificate, if it checks out (its
    weights polished by :func:`polished_weights` where they miss by more than rounding)."""
    total = float(outcome.weights.sum())
    if not outcome.converged or total <= 0:
        return None
    weights = outcome.weights / total
    certificate = hull_certificate(weight, bias, k, outcome.support, weights, tol, shift=shift,
                                   kind=kind)
    if certificate is not None:
        return certificate
    polished = polished_weights(weight, bias, k, outcome.support, weights, shift,
                                slack=outcome.virtual_weight > 0)
    if polished is None:
        return None
    return hull_certificate(weight, bias, k, outcome.support, polished / polished.sum(), tol,
                            shift=shift, kind=kind)


def _onto_ties(weight, bias, k, support, z) -> np.ndarray:
    """``z`` moved (least squares) so that ``k`` ties exactly with the certificate's rows:
    ``d_i . z + c_i = 0`` on the support. Removes the cancellation error of a near-zero
    minimum-norm point, so the tie shows at the scale of the rows, not of the rounding."""
    diffs = weight[k] - weight[support]
    residual = diffs @ z + (0.0 if bias is None else bias[k] - bias[support])
    return z - np.linalg.lstsq(diffs, residual, rcond=None)[0]


def decide_hull(
    weight: np.ndarray, bias: np.ndarray | None, k: int, start_rows: np.ndarray,
    box: float | None, tol: float, row_sum: np.ndarray, *,
    settled: np.ndarray | None = None, settled_rows: np.ndarray | None = None,
    weight32: np.ndarray | None = None, exact32: bool = False,
    row_squares: np.ndarray | None = None,
) -> Decision:
    """Steps 1-2 of the module doc (no box, or no bias). ``settled``: where the witness search
    settled for ``k`` (no bias), the start of an entropy certificate, sought first among the rows
    ``settled_rows`` the search settled over (if not None), then among all; ``weight32``: a float32
    copy of ``weight`` for its Gram matrix (``exact32``: an exact one, see
    :func:`~logitkit.audit.entropy_certificate.entropy_certificate`); ``row_squares``:
    ``|w_i|^2`` per row (computed by :func:`~logitkit.audit.hull.nearest_point` if None)."""
    d = weight.shape[1]
    lifted = bias is not None
    if lifted:
        push = bias_push(bias, k, tol)
        shift: np.ndarray | float = push
    else:
        push = tol
        shift = tol * (weight[k] - (row_sum - weight[k]) / (len(weight) - 1))
        row_sets = (None,) if settled_rows is None else (settled_rows, None)  # None: all rows
        for rows in row_sets if settled is not None else ():
            certificate = entropy_certificate(weight, k, settled, tol=tol, shift=shift,
                                              weight32=weight32, rows=rows, exact32=exact32)
            if certificate is not None:
                return Decision("unargmaxable", certificate=certificate,
                                rows=len(certificate.support))
    pushed = nearest_point(weight, bias, k, start_rows, push, row_sum=row_sum,
                           row_squares=row_squares)
    certificate = _certificate(weight, bias, k, pushed, tol, shift)
    if certificate is not None:
        return Decision("unargmaxable", certificate=certificate, rows=pushed.pool_size)
    near = _input(_levelled(weight, bias, k, pushed, shift), d, lifted, box) \
        if np.any(pushed.x) else None
    margin, verified = _check(weight, bias, k, near, box)
    if verified:
        return Decision("argmaxable", witness=near, margin=margin, rows=pushed.pool_size)
    seed = pushed.support if len(pushed.support) else start_rows
    plain = nearest_point(weight, bias, k, seed, 0.0, row_sum=row_sum,
                           row_squares=row_squares)
    rows = max(pushed.pool_size, plain.pool_size)
    if np.any(plain.x):
        z = _input(plain.x, d, lifted, box)
        plain_margin, verified = _check(weight, bias, k, z, box)
        if verified:
            return Decision("argmaxable", witness=z, margin=plain_margin, rows=rows)
    certificate = _certificate(weight, bias, k, plain, tol, None)
    if certificate is None and near is not None:  # outside by less than float64 can show?
        inner = nearest_point(weight, bias, k, seed, -push, row_sum=row_sum,
                           row_squares=row_squares)
        certificate = _certificate(weight, bias, k, inner, tol, -shift, kind="inner")
        rows = max(rows, inner.pool_size)
    if certificate is not None and near is not None:
        size = float(np.linalg.norm(weight[k] - weight[certificate.support], axis=1).max())
        for z in (near, _onto_ties(weight, bias, k, certificate.support, near)):
            tie_margin, _ = _check(weight, bias, k, z, box)
            scale = np.linalg.norm(z) * size + (0.0 if bias is None else push / tol)
            if tie_margin >= -tol * scale:
                return Decision("tie", witness=z, margin=tie_margin, certificate=certificate,
                                rows=rows)
    return Decision("unknown", witness=near, margin=margin, rows=rows)


@dataclass
class MarginLp:
    z: np.ndarray
    t: float
    duals: np.ndarray  # a_i >= 0 over the LP's rows, summing to 1


def solve_box_lp(weight: np.ndarray, bias: np.ndarray, k: int, rows: np.ndarray,
                 box: float) -> MarginLp:
    """``max t s.t. d_i . z + c_i >= t (i in rows), |z|_inf <= box`` with HiGHS."""
    z, t, duals = solve_margin_lp(weight[k] - weight[rows], bias[k] - bias[rows],
                                  np.ones(len(rows)), box, f"margin LP of class {k}")
    return MarginLp(z=z, t=t, duals=duals)


def decide_box(
    weight: np.ndarray, bias: np.ndarray, k: int, start_rows: np.ndarray, box: float,
    tol: float, *, add_rows: int = 64, max_rounds: int = 200,
) -> Decision:
    """The margin LP with constraint generation (box and bias; module doc)."""
    rows = np.unique(start_rows[start_rows != k])
    others = np.ones(len(weight), dtype=bool)
    others[k] = False
    best = Decision("unknown")
    for _ in range(max_rounds):
        lp = solve_box_lp(weight, bias, k, rows, box)
        tau = box_tolerance(weight, bias, k, rows, box, tol)
        margin, verified = _check(weight, bias, k, lp.z, box)
        if verified:
            return Decision("argmaxable", witness=lp.z, margin=margin, rows=len(rows))
        if margin > best.margin:
            best = Decision("unknown", witness=lp.z, margin=margin, rows=len(rows))
        keep = lp.duals > 0
        certificate = box_certificate(weight, bias, k, rows[keep], lp.duals[keep], box)
        if certificate is not None and certificate.bound < -tau:
            return Decision("unargmaxable", certificate=certificate, rows=len(rows))
        if certificate is not None and certificate.bound <= tau and best.margin >= -tau:
            return Decision("tie", witness=best.witness, margin=best.margin,
                            certificate=certificate, rows=len(rows))
        logits_gap = weight[k] @ lp.z - weight @ lp.z + (bias[k] - bias)
        outside = others.copy()
        outside[rows] = False
        candidates = np.flatnonzero(outside & (logits_gap < lp.t - 1e-12 * abs(lp.t)))
        if len(candidates) == 0:
            break
        rows = np.concatenate([rows, candidates[np.argsort(logits_gap[candidates])[:add_rows]]])
    best.rows = len(rows)
    return best


_SHARED: dict = {}  # the head, set before worker processes fork (they inherit it, no copy)


def _decide(task: tuple[int, int, np.ndarray, np.ndarray | None, int]) -> tuple[int, Decision]:
    j, k, rivals, settled, pool = task
    weight, bias, box, tol = _SHARED["weight"], _SHARED["bias"], _SHARED["box"], _SHARED["tol"]
    if _SHARED["min_radius"] is not None:
        return j, decide_ball(weight, bias, k, rivals, box, _SHARED["min_radius"], tol,
                              row_squares=_SHARED["row_squares"])
    if bias is None or box is None:
        return j, decide_hull(weight, bias, k, rivals, box, tol, _SHARED["row_sum"],
                              settled=settled, weight32=_SHARED["weight32"],
                              exact32=_SHARED["exact32"],
                              settled_rows=_SHARED["pools"][pool] if pool >= 0 else None,
                              row_squares=_SHARED["row_squares"])
    return j, decide_box(weight, bias, k, rivals, box, tol)


def decide_many(
    weight: np.ndarray, bias: np.ndarray | None, classes: np.ndarray, rivals: np.ndarray,
    box: float | None, tol: float, *, jobs: int = 1,
    on_done: Callable[[int], None] | None = None,
    settled: RowStore | None = None, min_radius: float | None = None,
    settled_pool: list[int] | None = None, pools: list[np.ndarray] | None = None,
    on_decision: Callable[[int, Decision], Decision] | None = None,
) -> list[Decision]:
    """Decide every class in ``classes`` (starting rows ``rivals[j]``), in ``jobs`` processes.

    With ``min_radius`` (and a box) the question is the Chebyshev-ball one of
    :mod:`~logitkit.audit.chebyshev`.

    ``settled.get(j)`` (no bias; None where absent) is the point where the witness search settled
    for ``classes[j]``, read back as its task is handed out (the points wait in a temporary
    file, not in memory), the start of an entropy certificate, sought first among the rows
    ``pools[settled_pool[j]]`` it settled over (where ``settled_pool[j] >= 0``). Classes are
    independent, so ``jobs > 1`` runs them in forked worker processes that share the head
    read-only (where the platform can fork; otherwise one process does all). Each process keeps
    its BLAS to one thread: the stage is a long chain of small products, which a second thread
    slows down (3.5x on 768-wide heads) instead of speeding up. ``on_decision(j, decision)``
    sees each decision as it arrives and returns the one kept (e.g. with its certificate moved
    to a :class:`~logitkit.audit.evidence_store.CertificateStore`).
    """
    starts = None if settled is None or bias is not None or min_radius is not None else settled
    certifies = starts is not None and len(starts) > 0  # entropy certificates need float32 rows
    weight32 = float32_copy(weight) if certifies else None
    exact32 = weight32 is not None
    if certifies and not exact32:
        weight32 = weight.astype(np.float32)  # rounded: steers the Newton steps only
    _SHARED.update(weight=weight, bias=bias, box=box, tol=tol, row_sum=weight.sum(0),
                   weight32=weight32, exact32=exact32, min_radius=min_radius, pools=pools or [],
                   row_squares=row_squares_of(weight))
    pool_of = [-1] * len(classes) if settled_pool is None else settled_pool
    tasks = ((j, int(k), rivals[j], None if starts is None else starts.get(j), pool_of[j])
             for j, k in enumerate(classes))  # made as the workers take them
    decisions: list[Decision | None] = [None] * len(classes)
    try:
        with threadpool_limits(limits=1):
            _run(tasks, decisions, jobs, on_done, on_decision)
    finally:
        _SHARED.clear()
    return decisions  # type: ignore[return-value]


def _before_fork() -> None:
    """Keep the forked workers from copying the parent's memory: its C heap's free pages go back
    to the system (glibc's ``malloc_trim``; the witness search left 117 MiB there on a 12000-class
    sample of a 151936 x 896 head), and its Python objects (a verdict per class) move out of the
    garbage collector's reach (``gc.freeze``), whose passes in a worker would write to every one
    of them and so copy their pages into that worker."""
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)
    gc.freeze()


def _run(tasks: Iterable[tuple], decisions: list, jobs: int,
         on_done: Callable[[int], None] | None,
         on_decision: Callable[[int, Decision], Decision] | None) -> None:
    """Decide ``tasks`` into ``decisions`` (by position; one task per entry), in ``jobs`` forked
    processes if > 1."""
    with contextlib.ExitStack() as stack:
        if jobs > 1 and len(decisions) > 1 and "fork" in mp.get_all_start_methods():
            if gc.get_freeze_count() == 0:  # (a caller's own frozen objects stay frozen)
                stack.callback(gc.unfreeze)
            _before_fork()
            pool = stack.enter_context(mp.get_context("fork").Pool(
                min(jobs, len(decisions)), initializer=threadpool_limits, initargs=(1,)))
            outcomes = pool.imap_unordered(_decide, tasks)
        else:
            outcomes = map(_decide, tasks)
        for j, decision in outcomes:
            decisions[j] = decision if on_decision is None else on_decision(j, decision)
            if on_done is not None:
                on_done(1)
