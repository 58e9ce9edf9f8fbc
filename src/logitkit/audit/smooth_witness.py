"""Witness search without a bias: descend a smooth bound on the margin, many classes at once.

For class ``k`` put ``F(z) = log sum_{i != k} exp(w_i . z) - w_k . z``. Log-sum-exp exceeds the
maximum, so ``F(z) >= max_{i != k} w_i . z - w_k . z``: wherever ``F(z) < 0``, class ``k`` wins at
``z``. ``F`` is convex. If ``k`` is argmaxable, ``F`` falls without bound along a witness ``t z``
(``F(t z) ~ -t * margin``); if a convex combination ``a`` of the other rows equals ``w_k``,
Jensen's inequality gives ``F(z) >= H(a) >= 0`` everywhere, so the search can only ever stop at
real witnesses and never stands in for a certificate. Inside the hull ``F`` has a minimiser,
where ``grad F = sum_i softmax(W z)_i w_i - w_k = 0``: the search *settles* near it, and
:mod:`~logitkit.audit.entropy_certificate` turns that point into a certificate.

L-BFGS (memory 16, Armijo backtracking) runs on a block of classes at once: each round evaluates
one point per class, with two float32 matrix products ``Z W^T`` and ``P W`` over the whole head.
On GPT-2-shaped heads with lognormal row norms (sigma 1) it proves about 60% of the classes that
the cheap witnesses leave open (median 23 evaluations) and settles for nearly all of the others
(70 evaluations on average), each of which would otherwise take the exact minimum-norm point
(:mod:`~logitkit.audit.hull`) about a thousand major cycles. The caller verifies every
candidate (``accept``).

On large heads :func:`pooled_smooth_witnesses` searches over a pool first: the 8192 rows with
the largest norms (at least ``8 (d + 1)``) plus the classes searched with them, grown by the rows
that beat a candidate turned down on the whole head (column generation). ``F`` over a subset of
the rows is a lower bound of ``F``, so settling there still means "inside the hull", and the
certificate is sought among the same rows. On a GPT-2-shaped 50257 x 768 head (sigma 1) this
took the whole audit from 43 to 25 minutes, and the exact stage from 1.05 to 0.2 s per class on
a 151936 x 896 head (one Gram matrix per class instead of about four). Pools of 1024 classes
(not 4096) and exponentials floored at ``e^-60`` (``LOWEST_EXPONENT``: no subnormal floats,
which slowed every product that met them) then took the GPT-2-shaped head to 16 minutes;
checking the candidates that end a pooled search in batches (``ACCEPT_BATCH``) instead of in
a thin product over the head per round took its search from 205 to 175 s (on a faster
machine, where the whole audit of that head went from 9.5 to 8.2 minutes).

Example::

    import numpy as np
    from logitkit.audit.smooth_witness import smooth_witnesses
    W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    wins = lambda ids, z: (z @ W.T.astype(float)).argmax(1) == ids  # a check, for the example
    out = smooth_witnesses(W, np.array([0, 4]), accept=wins)  # class 4 lies inside the hull
    assert out.found.tolist() == [True, False] and out.settled.tolist() == [False, True]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from logitkit.audit.evidence_store import RowStore
from logitkit.audit.verify import inputs_per_product, largest_columns

MEMORY = 16  # L-BFGS curvature pairs
ARMIJO = 1e-4
SETTLED_GRADIENT = 5e-2  # |grad F|_1 / |w_k|_1 below this with F > 0: near the minimiser of F
POOL_SETTLED_GRADIENT = 5e-3  # the same over a pool, where a closer point saves Newton steps
ACCEPT_BATCH = 256  # candidates that end their class's search, checked together (one product)
# Logits below the top by more than 60 (row k's own -inf too) count as 60 below, a change of at
# most V e^-60 in F: their exponentials would otherwise be subnormal floats, on which products
# run several times slower (4x for the whole evaluation at |z| ~ 10, where interior classes
# settle)
LOWEST_EXPONENT = -60.0


@dataclass
class SmoothOutcome:
    """Per class: ``found`` (a witness ``accept`` took: only the caller keeps it), or ``settled``
    (``F > 0`` with a small gradient: ``points[j]`` is near the minimiser of ``F``, a starting
    point for a certificate), or ``rejected`` (``stop_when_rejected``: the candidate ``accept``
    turned down, in ``points[j]``), or ``released`` (``release_below``: still searching at the
    end, its last point in ``points[j]``), or none (the search gave up). ``points`` holds a
    float32 point for those three endings only, keyed by position in ``classes`` (a dense array
    of every class's point was the audit's largest array: 230000 x 2304 float64, 4.2 GB, on a
    256000 x 2304 head; float32 because each point only starts a search or the Newton steps of a
    certificate, whose logits are float32 products). ``pool``: the index in ``pools`` (arrays of
    row ids) of the rows a class settled over, -1 for the whole head. From
    :func:`pooled_smooth_witnesses`, the settled classes' points only, in a
    :class:`~logitkit.audit.evidence_store.RowStore` (on disk until read)."""

    found: np.ndarray
    settled: np.ndarray
    points: Mapping[int, np.ndarray]
    rejected: np.ndarray
    released: np.ndarray
    pool: np.ndarray
    pools: list[np.ndarray] = field(default_factory=list)


def _evaluate(weight32: np.ndarray, ids: np.ndarray, z: np.ndarray, own: np.ndarray):
    """``F``, its gradient and whether row ``k`` has the largest float32 logit, per class."""
    logits = z.astype(np.float32) @ weight32.T
    rows = np.arange(len(ids))
    own_logit = logits[rows, ids].astype(np.float64)
    logits[rows, ids] = -np.inf
    top = logits.max(1)
    finite = np.isfinite(top) & np.isfinite(own_logit)
    logits -= top[:, None]
    np.maximum(logits, LOWEST_EXPONENT, out=logits)  # no subnormal floats: they are slow
    weights = np.exp(logits, out=logits)
    total = weights.sum(1)
    weights /= total[:, None]
    gradient = weights @ weight32
    value = top.astype(np.float64) + np.log(total.astype(np.float64)) - own_logit
    value[~finite] = np.inf
    return value, gradient.astype(np.float64) - own, finite & (own_logit > top)


def _direction(gradient: np.ndarray, steps: np.ndarray, changes: np.ndarray,
               curvature: np.ndarray, count: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """L-BFGS two-loop recursion for the slots ``rows`` (each its own ring of ``count`` pairs in
    ``steps[:, row]``, ``changes[:, row]``; a pair with ``curvature == 0`` is inert), read in
    place (no copy of the rings), in the rings' precision (float32 in the search: half the
    memory and traffic of float64, 2.3x less time for 200 rows of 768, the direction good to
    float32 accuracy, all a search direction needs); float64 out, ``-gradient`` where that is
    not a descent direction."""
    memory = len(steps)
    q = gradient.astype(steps.dtype)
    pairs = []  # newest first: (alpha, curvature, ring slot) per row
    for age in range(min(int(count.max(initial=0)), memory)):
        slot = (count - 1 - age) % memory
        rho = np.where(age < count, curvature[slot, rows], 0.0).astype(q.dtype)
        alpha = rho * np.einsum("ij,ij->i", steps[slot, rows], q)
        q -= alpha[:, None] * changes[slot, rows]
        pairs.append((alpha, rho, slot))
    if pairs:  # scale by s.y / y.y of the newest pair
        s, y = steps[pairs[0][2], rows], changes[pairs[0][2], rows]
        sy = np.einsum("ij,ij->i", s, y, dtype=np.float64)
        yy = np.einsum("ij,ij->i", y, y, dtype=np.float64)
        usable = (count > 0) & (sy > 0) & (yy > 0)
        q *= np.where(usable, sy / np.where(usable, yy, 1.0), 1.0).astype(q.dtype)[:, None]
    for alpha, rho, slot in reversed(pairs):
        beta = rho * np.einsum("ij,ij->i", changes[slot, rows], q)
        q += (alpha - beta)[:, None] * steps[slot, rows]
    direction = -q.astype(np.float64)
    uphill = np.einsum("ij,ij->i", direction, gradient) >= 0
    direction[uphill] = -gradient[uphill]
    return direction


def smooth_witnesses(
    weight32: np.ndarray, classes: np.ndarray,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
    max_evaluations: int = 400, block: int = 256, stop_when_rejected: bool = False,
    starts: np.ndarray | None = None, settled_gradient: float = SETTLED_GRADIENT,
    release_below: int = 0, last_settled_gradient: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> SmoothOutcome:
    """Search each class's ``F`` for a witness (``found``) or its minimiser (``settled``).

    ``weight32`` is a float32 copy of the head (rounding only steers the search).
    ``accept(ids, z)`` returns, per row, whether ``z[j]`` is a verified witness for ``ids[j]``; it
    is called on the evaluated points where the class has the largest float32 logit. Each class
    starts at ``w_k`` minus the centroid of the other rows and gets at most ``max_evaluations``
    passes. It settles once ``F > 0`` and ``|grad F|_1 <= settled_gradient |w_k|_1`` (an interior
    class, or one on a facet where ``F`` levels off towards a limit at infinity); classes that
    neither win nor settle in time go to the exact stage. Every round evaluates one trial point
    for each of up to ``block`` classes (fewer where their float32 logits would pass 64 MB,
    :func:`~logitkit.audit.verify.inputs_per_product`: 110 on a 151936-row head, whose 256 took
    155 MB; a new L-BFGS step, or a shorter one after a failed Armijo test), all in one matrix
    product; a class that is done hands its place to the next.
    ``stop_when_rejected``: a class whose candidate ``accept`` turns down stops there
    (``rejected``; for searches over a subset of the rows, where winning over the subset does
    not mean winning over the head); its search ends at the candidate whatever ``accept`` says,
    so candidates are checked ``ACCEPT_BATCH`` at a time (one product over the head for many,
    instead of a thin one per round). ``starts``: a first point per class instead.
    ``release_below``: with more than ``block`` classes, once every class has started and fewer
    than this many are still searching, they stop (``released``, at their last point): a caller
    with more classes to search takes them up again in fuller products, instead of a tail of
    thin ones.
    ``last_settled_gradient``: a class still searching at its last evaluation settles there if
    ``F > 0`` and ``|grad F|_1 <= last_settled_gradient |w_k|_1`` (a looser test than
    ``settled_gradient``, where the alternative is a search over more rows).
    """
    n_rows, d = weight32.shape
    found = np.zeros(len(classes), dtype=bool)
    settled = np.zeros(len(classes), dtype=bool)
    rejected = np.zeros(len(classes), dtype=bool)
    released = np.zeros(len(classes), dtype=bool)
    points: dict[int, np.ndarray] = {}  # settled, rejected or released classes only
    column_sum = weight32.sum(0, dtype=np.float64)
    # Slots: a class holds one until it is decided or gives up, then the next class takes it,
    # so every matrix product serves about ``block`` classes until the last ones.
    size = min(inputs_per_product(block, n_rows), len(classes))
    position = np.full(size, -1)  # the class (index into ``classes``) in each slot; -1: free
    own = np.zeros((size, d))
    own_size = np.ones(size)
    z = np.zeros((size, d))
    value = np.full(size, np.inf)
    gradient = np.zeros((size, d))
    direction = np.zeros((size, d))
    length = np.zeros(size)
    steps = np.zeros((MEMORY, size, d), dtype=np.float32)  # see _direction
    changes = np.zeros_like(steps)
    curvature = np.zeros((MEMORY, size))
    count = np.zeros(size, dtype=np.int64)
    evaluations = np.zeros(size, dtype=np.int64)
    waiting = 0  # the next class to take a slot
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (classes, ids, candidates)

    def check_pending() -> None:
        """``accept`` on the candidates of classes stopped at them (found, or rejected)."""
        if pending:
            where, pending_ids, candidates = (np.concatenate(part)
                                              for part in zip(*pending, strict=True))
            good = accept(pending_ids, candidates)
            found[where[good]], rejected[where[~good]] = True, True
            _keep_points(points, where[~good], candidates[~good])
            pending.clear()

    while True:
        free = np.flatnonzero(position < 0)[: len(classes) - waiting]
        if len(free):  # new classes start at w_k minus the centroid of the other rows
            position[free] = np.arange(waiting, waiting + len(free))
            waiting += len(free)
            own[free] = weight32[classes[position[free]]]
            own_size[free] = np.maximum(np.abs(own[free]).sum(1), np.finfo(np.float64).tiny)
            start = own[free] - (column_sum - own[free]) / (n_rows - 1)
            if starts is not None:
                start = starts[position[free]]
            norms = np.linalg.norm(start, axis=1, keepdims=True)
            z[free] = start / np.where(norms > 0, norms, 1.0)
            length[free], count[free], evaluations[free] = 0.0, 0, 0
            steps[:, free], changes[:, free], curvature[:, free] = 0.0, 0.0, 0.0
        live = np.flatnonzero(position >= 0)
        if len(live) < release_below and waiting == len(classes) > size:
            released[position[live]] = True
            _keep_points(points, position[live], z[live])
            live = live[:0]
        if len(live) == 0:
            check_pending()
            break
        ids = classes[position[live]]
        every = slice(None) if len(live) == size else live  # a view, not a copy, when all are
        trial = z[every] + length[live, None] * direction[every]
        v, g, candidate = _evaluate(weight32, ids, trial, own[every])
        evaluations[live] += 1
        done = np.zeros(size, dtype=bool)
        hits = np.flatnonzero(candidate)
        if len(hits) and stop_when_rejected:  # the class stops either way: checked in batches
            pending.append((position[live[hits]], ids[hits], trial[hits]))
            done[live[hits]] = True
            if sum(len(where) for where, _, _ in pending) >= ACCEPT_BATCH:
                check_pending()
        elif len(hits):
            good = hits[accept(ids[hits], trial[hits])]
            found[position[live[good]]] = True
            done[live[good]] = True
        first = evaluations[live] == 1  # the start point: later rounds try steps from it
        value[live[first]], gradient[live[first]] = v[first], g[first]
        tried = ~first
        slope = np.einsum("ij,ij->i", direction[every], gradient[every])
        ok = tried & (v <= value[live] + ARMIJO * length[live] * slope)
        moved = live[ok]
        s = (trial[ok] - z[moved]).astype(np.float32)
        y = (g[ok] - gradient[moved]).astype(np.float32)
        slot = count[moved] % MEMORY
        sy = np.einsum("ij,ij->i", s, y, dtype=np.float64)  # of the pair as stored
        steps[slot, moved], changes[slot, moved] = s, y
        curvature[slot, moved] = np.where(sy > 0, 1.0 / np.where(sy > 0, sy, 1.0), 0.0)
        count[moved] += 1
        z[moved], value[moved], gradient[moved] = trial[ok], v[ok], g[ok]
        failed = live[tried & ~ok]
        length[failed] /= 4.0
        done[failed[length[failed] < 1e-12]] = True  # no descent left
        done[live] |= ~np.isfinite(value[live])
        last = evaluations[live] >= max_evaluations  # the looser test at a last evaluation
        limit = np.where(last, max(settled_gradient, last_settled_gradient), settled_gradient)
        flat = live[~done[live] & (value[live] > 0) &
                    (np.abs(gradient[every]).sum(1) <= limit * own_size[live])]
        settled[position[flat]] = True
        _keep_points(points, position[flat], z[flat])
        done[flat] = True
        done[live[last]] = True
        taken = np.concatenate([live[first], moved])
        taken = taken[~done[taken]]
        if len(taken):
            direction[taken] = _direction(gradient[taken], steps, changes, curvature,
                                          count[taken], taken)
            fresh = count[taken] == 0  # the first step moves z by about its own length
            length[taken] = np.where(fresh, 1.0 / np.maximum(
                np.linalg.norm(direction[taken], axis=1), 1e-300), 1.0)
        position[done] = -1
        if on_progress is not None and done.any():
            on_progress(int(done.sum()))
    return SmoothOutcome(found=found, settled=settled, points=points, rejected=rejected,
                         pool=np.full(len(classes), -1), released=released)


def _keep_points(points: dict[int, np.ndarray], where: np.ndarray, z: np.ndarray) -> None:
    """``points[where[i]] = z[i]``, each row its own float32 array (no view of ``z``)."""
    for j, row in zip(where.tolist(), z, strict=True):
        points[j] = np.array(row, dtype=np.float32)


POOL_ROWS = 8192  # rows of the cheap first pass (at least 8 (d + 1))
POOL_CHUNK = 1024  # classes per pass over one pool
POOL_ROUNDS = 8  # passes over a growing pool before the whole head takes the classes left
POOL_GROWTH = 128  # rows a class turned down brings into its next pool (those beating it
# most), twice as many each time it is turned down again
POOL_RELEASE = 32  # a pass with more to follow ends once fewer classes than this still search


def largest_rows_per_pool(d: int) -> int:
    """The rows of largest norm in every pool: ``max(POOL_ROWS, 8 (d + 1))``."""
    return max(POOL_ROWS, 8 * (d + 1))


def searched_over_pools(n_rows: int, d: int) -> bool:
    """Whether :func:`pooled_smooth_witnesses` searches a head of this shape over pools (at
    least twice the pool's largest rows), not whole."""
    return n_rows >= 2 * largest_rows_per_pool(d)


def pooled_smooth_witnesses(
    weight32: np.ndarray, classes: np.ndarray,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
    on_progress: Callable[[int], None] | None = None,
) -> SmoothOutcome:
    """:func:`smooth_witnesses` over a pool of rows first, over the whole head for the rest.

    A pool is the ``max(POOL_ROWS, 8 (d + 1))`` rows with the largest norms plus the classes
    searched with it (``POOL_CHUNK`` at a time), so one evaluation costs a fraction of a pass over a
    large head. ``F`` over a subset of the other rows is a lower bound of ``F`` over all of them, so
    a class that settles over the pool has ``w_k`` near the softmax mean of pool rows: near or
    inside the hull of the pool, so of the head (its certificate decides). It settles closer there
    (``POOL_SETTLED_GRADIENT``), and its certificate is first sought among the same rows (``pool``,
    ``pools``), computed and checked on the whole head. A class that wins over the pool is checked
    on the whole head by ``accept`` (a witness there is a witness); where that check fails, the
    class keeps the ``POOL_GROWTH`` rows that beat it most at that point (twice as many each time it
    is turned down again) and waits to be searched again from there (column generation), up to
    ``POOL_ROUNDS`` passes. Classes turned down wait together, across chunks, until ``POOL_CHUNK``
    of them fill a pass (their pool: the largest rows, their own rows and the rows each brought),
    and a pass with more to follow releases its last ``POOL_RELEASE`` classes to a later one:
    products stay full, where a pass per chunk's few hundred, then tens, mostly ran on a handful of
    classes. On a 151936 x 896 head (sigma 1, 4000 sampled classes) 128 rows per turn-down instead
    of 32 took the search from 39 to 34 s; with the waiting and releases, and no relaxation before
    it (:func:`~logitkit.audit.certify.certify_fast`), the fast stage of 6000 classes went from 97
    to 74 s and of the whole head from 2491 to 1605 s. A class whose pass ends at its last
    evaluation, not settled to ``POOL_SETTLED_GRADIENT``, settles if it meets the whole head's
    ``SETTLED_GRADIENT``. Classes still open at the end are searched over all rows, at 7-21 s a
    class on a 256000 x 2304 head: with the doubling growth and the late settling, none of a
    2000-class sample of that head reached it (it had 5), and the search of a 12000-class sample of
    a 151936 x 896 head took 137 s instead of 179 s. Heads with fewer than twice the pool's rows are
    searched whole.
    """
    n_rows, d = weight32.shape
    kept = RowStore(d)  # the settled classes' points, on disk until the exact stage reads them
    if not searched_over_pools(n_rows, d):
        outcome = smooth_witnesses(weight32, classes, accept, on_progress=on_progress)
        for i, z in outcome.points.items():
            kept.add(i, z)
        outcome.points = kept
        return outcome
    size = largest_rows_per_pool(d)
    found = np.zeros(len(classes), dtype=bool)
    settled = np.zeros(len(classes), dtype=bool)
    points: dict[int, np.ndarray] = {}  # a turned-down or released class's next start
    pool = np.full(len(classes), -1)
    pools: list[np.ndarray] = []
    passes = np.zeros(len(classes), dtype=np.int64)
    brought: dict[int, np.ndarray] = {}  # class position -> rows that beat its candidates
    largest_first = np.argsort(-np.einsum("ij,ij->i", weight32, weight32, dtype=np.float64))

    def search(batch: np.ndarray, restart: bool, release: bool) -> np.ndarray:
        """One pass over the pool of ``batch`` (positions); the positions turned down or
        released that get another pass, their rows brought."""
        in_pool = np.zeros(n_rows, dtype=bool)
        in_pool[classes[batch]] = True
        for j in batch.tolist():
            if j in brought:
                in_pool[brought[j]] = True
        in_pool[largest_first[~in_pool[largest_first]][:size]] = True
        rows = np.flatnonzero(in_pool)
        outcome = smooth_witnesses(
            np.ascontiguousarray(weight32[rows]), np.searchsorted(rows, classes[batch]),
            lambda ids, z: accept(rows[ids], z), stop_when_rejected=True,
            starts=np.stack([points.pop(j) for j in batch.tolist()]) if restart else None,
            settled_gradient=POOL_SETTLED_GRADIENT, last_settled_gradient=SETTLED_GRADIENT,
            release_below=POOL_RELEASE if release else 0)
        decided = outcome.found | outcome.settled
        found[batch], settled[batch] = outcome.found, outcome.settled
        for i, z in outcome.points.items():  # the settled, and those turned down or released
            if outcome.settled[i]:
                kept.add(int(batch[i]), z)
            else:
                points[int(batch[i])] = z
        if outcome.settled.any():
            pool[batch[outcome.settled]] = len(pools)
            pools.append(rows)
        if on_progress is not None:
            on_progress(int(decided.sum()))
        stopped = outcome.rejected | outcome.released
        turned_down = batch[stopped]
        passes[turned_down] += 1
        again = turned_down[passes[turned_down] < POOL_ROUNDS]
        for j in np.setdiff1d(turned_down, again).tolist():  # on to the whole head
            del points[j]
        for j in np.setdiff1d(batch, again).tolist():  # decided, or on to the whole head
            brought.pop(j, None)
        for turn in np.unique(passes[again]).tolist():  # 2^(turn - 1) POOL_GROWTH rows each
            group = again[passes[again] == turn]
            growth = rivals_at(weight32, None, classes[group],
                               np.array([points[j] for j in group.tolist()]).reshape(-1, d),
                               min(POOL_GROWTH << (turn - 1), n_rows - 1), block=256)
            for j, rivals in zip(group.tolist(), growth, strict=True):
                brought[j] = rivals if j not in brought else np.union1d(brought[j], rivals)
        return again

    chunks = [np.arange(start, min(start + POOL_CHUNK, len(classes)))
              for start in range(0, len(classes), POOL_CHUNK)][::-1]
    waiting = np.zeros(0, dtype=np.int64)  # positions to search again from their ``points``
    while chunks or len(waiting):
        restart = len(waiting) >= POOL_CHUNK or not chunks
        if restart:
            batch, waiting = waiting[:POOL_CHUNK], waiting[POOL_CHUNK:]
        else:
            batch = chunks.pop()
        more = bool(chunks) or len(waiting) > 0
        waiting = np.concatenate([waiting, search(batch, restart, release=more)])
    rest = np.flatnonzero(~(found | settled))
    if len(rest):
        outcome = smooth_witnesses(weight32, classes[rest], accept, on_progress=on_progress)
        found[rest], settled[rest] = outcome.found, outcome.settled
        for i, z in outcome.points.items():
            kept.add(int(rest[i]), z)
    return SmoothOutcome(found=found, settled=settled, points=kept,
                         rejected=np.zeros(len(classes), dtype=bool),
                         released=np.zeros(len(classes), dtype=bool), pool=pool, pools=pools)


def rivals_at(weight32: np.ndarray, bias32: np.ndarray | None, ids: np.ndarray, z: np.ndarray,
              n_rivals: int, block: int) -> np.ndarray:
    """The ``n_rivals`` rows with the largest logits at each ``z[j]`` besides ``ids[j]``,
    ``block`` inputs per product (fewer on heads where their logits would pass 64 MB).

    A heuristic (rivals seed the relaxation, the exact stage and the pool's growth; no verdict
    rests on them), so the logits come from ``weight32`` and ``bias32``, float32 copies (rounded
    if need be) of the head: half the time of the float64 product.
    """
    out = np.zeros((len(ids), n_rivals), dtype=np.int64)
    block = inputs_per_product(block, len(weight32))
    for start in range(0, len(ids), block):
        part = slice(start, start + block)
        logits = z[part].astype(np.float32) @ weight32.T  # (B, V), rows contiguous
        if bias32 is not None:
            logits += bias32
        logits[np.arange(len(logits)), ids[part]] = -np.inf
        out[part] = largest_columns(logits, n_rivals)
        del logits  # before the next block's: one block of logits alive, not two
    return out
