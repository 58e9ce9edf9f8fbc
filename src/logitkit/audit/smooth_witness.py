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

Example::

    import numpy as np
    from logitkit.audit.smooth_witness import smooth_witnesses
    W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    wins = lambda ids, z: (z @ W.T.astype(float)).argmax(1) == ids  # a check, for the example
    out = smooth_witnesses(W, np.array([0, 4]), accept=wins)  # class 4 lies inside the hull
    assert out.found.tolist() == [True, False] and out.settled.tolist() == [False, True]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEMORY = 16  # L-BFGS curvature pairs
ARMIJO = 1e-4
SETTLED_GRADIENT = 5e-2  # |grad F|_1 / |w_k|_1 below this with F > 0: near the minimiser of F


@dataclass
class SmoothOutcome:
    """Per class: ``found`` (an accepted witness, in ``z``) or ``settled`` (``F > 0`` with a small
    gradient: ``z`` is near the minimiser of ``F``, a starting point for a certificate), or
    neither (the search gave up; ``z`` is then meaningless)."""

    found: np.ndarray
    settled: np.ndarray
    z: np.ndarray


def _evaluate(weight32: np.ndarray, ids: np.ndarray, z: np.ndarray, own: np.ndarray):
    """``F``, its gradient and whether row ``k`` has the largest float32 logit, per class."""
    logits = z.astype(np.float32) @ weight32.T
    rows = np.arange(len(ids))
    own_logit = logits[rows, ids].astype(np.float64)
    logits[rows, ids] = -np.inf
    top = logits.max(1)
    finite = np.isfinite(top) & np.isfinite(own_logit)
    weights = np.exp(logits - top[:, None])
    total = weights.sum(1)
    gradient = (weights / total[:, None]) @ weight32
    value = top.astype(np.float64) + np.log(total.astype(np.float64)) - own_logit
    value[~finite] = np.inf
    return value, gradient.astype(np.float64) - own, finite & (own_logit > top)


def _direction(gradient: np.ndarray, steps: np.ndarray, changes: np.ndarray,
               curvature: np.ndarray, count: np.ndarray) -> np.ndarray:
    """L-BFGS two-loop recursion for each row (its own ring of ``count`` pairs; a pair with
    ``curvature == 0`` is inert); ``-gradient`` where that is not a descent direction."""
    memory = len(steps)
    rows = np.arange(len(gradient))
    newest_first = [(count - 1 - i) % memory for i in range(memory)]
    valid = [(i < count).astype(np.float64) for i in range(memory)]
    q = gradient.copy()
    alphas = []
    for i, slot in enumerate(newest_first):
        alpha = valid[i] * curvature[slot, rows] * (steps[slot, rows] * q).sum(1)
        q -= alpha[:, None] * changes[slot, rows]
        alphas.append(alpha)
    last = newest_first[0]
    sy = (steps[last, rows] * changes[last, rows]).sum(1)
    yy = (changes[last, rows] ** 2).sum(1)
    usable = (count > 0) & (sy > 0) & (yy > 0)
    q *= np.where(usable, sy / np.where(usable, yy, 1.0), 1.0)[:, None]
    for i in reversed(range(memory)):
        slot = newest_first[i]
        beta = valid[i] * curvature[slot, rows] * (changes[slot, rows] * q).sum(1)
        q += (alphas[i] - beta)[:, None] * steps[slot, rows]
    direction = -q
    uphill = (direction * gradient).sum(1) >= 0
    direction[uphill] = -gradient[uphill]
    return direction


def smooth_witnesses(
    weight32: np.ndarray, classes: np.ndarray,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
    max_evaluations: int = 400, block: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> SmoothOutcome:
    """Search each class's ``F`` for a witness (``found``) or its minimiser (``settled``).

    ``weight32`` is a float32 copy of the head (rounding only steers the search).
    ``accept(ids, z)`` returns, per row, whether ``z[j]`` is a verified witness for ``ids[j]``; it
    is called on the evaluated points where the class has the largest float32 logit. Each class
    starts at ``w_k`` minus the centroid of the other rows and gets at most ``max_evaluations``
    passes. It settles once ``F > 0`` and ``|grad F|_1 <= SETTLED_GRADIENT |w_k|_1`` (an interior
    class, or one on a facet where ``F`` levels off towards a limit at infinity); classes that
    neither win nor settle in time go to the exact stage. Every round evaluates one trial point
    for each of up to ``block`` classes (a new L-BFGS step, or a shorter one after a failed
    Armijo test), all in one matrix product; a class that is done hands its place to the next.
    """
    n_rows, d = weight32.shape
    found = np.zeros(len(classes), dtype=bool)
    settled = np.zeros(len(classes), dtype=bool)
    points = np.zeros((len(classes), d))
    column_sum = weight32.sum(0, dtype=np.float64)
    # Slots: a class holds one until it is decided or gives up, then the next class takes it,
    # so every matrix product serves about ``block`` classes until the last ones.
    size = min(block, len(classes))
    position = np.full(size, -1)  # the class (index into ``classes``) in each slot; -1: free
    own = np.zeros((size, d))
    own_size = np.ones(size)
    z = np.zeros((size, d))
    value = np.full(size, np.inf)
    gradient = np.zeros((size, d))
    direction = np.zeros((size, d))
    length = np.zeros(size)
    steps = np.zeros((MEMORY, size, d))
    changes = np.zeros_like(steps)
    curvature = np.zeros((MEMORY, size))
    count = np.zeros(size, dtype=np.int64)
    evaluations = np.zeros(size, dtype=np.int64)
    waiting = 0  # the next class to take a slot
    while True:
        free = np.flatnonzero(position < 0)[: len(classes) - waiting]
        if len(free):  # new classes start at w_k minus the centroid of the other rows
            position[free] = np.arange(waiting, waiting + len(free))
            waiting += len(free)
            own[free] = weight32[classes[position[free]]]
            own_size[free] = np.maximum(np.abs(own[free]).sum(1), np.finfo(np.float64).tiny)
            start = own[free] - (column_sum - own[free]) / (n_rows - 1)
            norms = np.linalg.norm(start, axis=1, keepdims=True)
            z[free] = start / np.where(norms > 0, norms, 1.0)
            length[free], count[free], evaluations[free] = 0.0, 0, 0
            steps[:, free], changes[:, free], curvature[:, free] = 0.0, 0.0, 0.0
        live = np.flatnonzero(position >= 0)
        if len(live) == 0:
            break
        ids = classes[position[live]]
        trial = z[live] + length[live, None] * direction[live]
        v, g, candidate = _evaluate(weight32, ids, trial, own[live])
        evaluations[live] += 1
        done = np.zeros(size, dtype=bool)
        hits = np.flatnonzero(candidate)
        if len(hits):
            good = hits[accept(ids[hits], trial[hits])]
            found[position[live[good]]] = True
            points[position[live[good]]] = trial[good]
            done[live[good]] = True
        first = evaluations[live] == 1  # the start point: later rounds try steps from it
        value[live[first]], gradient[live[first]] = v[first], g[first]
        tried = ~first
        slope = (direction[live] * gradient[live]).sum(1)
        ok = tried & (v <= value[live] + ARMIJO * length[live] * slope)
        moved = live[ok]
        s = trial[ok] - z[moved]
        y = g[ok] - gradient[moved]
        slot = count[moved] % MEMORY
        sy = (s * y).sum(1)
        steps[slot, moved], changes[slot, moved] = s, y
        curvature[slot, moved] = np.where(sy > 0, 1.0 / np.where(sy > 0, sy, 1.0), 0.0)
        count[moved] += 1
        z[moved], value[moved], gradient[moved] = trial[ok], v[ok], g[ok]
        failed = live[tried & ~ok]
        length[failed] /= 4.0
        done[failed[length[failed] < 1e-12]] = True  # no descent left
        done[live] |= ~np.isfinite(value[live])
        flat = live[~done[live] & (value[live] > 0) &
                    (np.abs(gradient[live]).sum(1) <= SETTLED_GRADIENT * own_size[live])]
        settled[position[flat]] = True
        points[position[flat]] = z[flat]
        done[flat] = True
        done[live[evaluations[live] >= max_evaluations]] = True
        taken = np.concatenate([live[first], moved])
        taken = taken[~done[taken]]
        if len(taken):
            direction[taken] = _direction(gradient[taken], steps[:, taken], changes[:, taken],
                                          curvature[:, taken], count[taken])
            fresh = count[taken] == 0  # the first step moves z by about its own length
            length[taken] = np.where(fresh, 1.0 / np.maximum(
                np.linalg.norm(direction[taken], axis=1), 1e-300), 1.0)
        position[done] = -1
        if on_progress is not None and done.any():
            on_progress(int(done.sum()))
    return SmoothOutcome(found=found, settled=settled, z=points)
