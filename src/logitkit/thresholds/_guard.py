"""Over-fitting guard: shrink tuned log-weights toward a target, the amount chosen out of fold.

    v(lam) = lam * v_target + (1 - lam) * v_tuned        (v = log w; lam in SHRINK_GRID)

``v_target`` is the prior-ratio correction ``log(pi_val / pi_train)`` when the training prior is
known, else 0 (plain argmax). K stratified folds of the validation data: on each, the weights
are tuned on the other K - 1 folds and every ``lam`` predicts the held-out fold; the ``lam`` whose
pooled out-of-fold metric is best wins (ties: the larger ``lam``, closer to the target), and is
applied to the weights tuned on all the data. So the tuned weights are used only as far as they
beat the target on data they were not tuned on. This is cross-validated model selection (Stone
1974) over five candidates; with tiny validation sets the out-of-fold estimate is itself noisy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from logitkit.thresholds._coordinate import log_probs
from logitkit.thresholds.metrics import Metric, class_metric

SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def shrunk(v_tuned: np.ndarray, v_target: np.ndarray, lam: float) -> np.ndarray:
    """``lam * v_target + (1 - lam) * v_tuned`` (exactly one of them at 0 and 1)."""
    if lam == 1:
        return v_target.copy()
    if lam == 0:
        return v_tuned.copy()
    return lam * v_target + (1 - lam) * v_tuned


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id of each row: rows shuffled within each class, classes laid end to end, then dealt
    out in turn, so every class is spread over as many folds as it has rows."""
    order = np.lexsort((rng.permutation(y.size), y))
    fold = np.empty(y.size, dtype=np.int64)
    fold[order] = np.arange(y.size) % folds
    return fold


def choose_shrink(
    p: np.ndarray,
    y: np.ndarray,
    sw: np.ndarray | None,
    metric: Metric,
    tune: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    folds: int,
    rng: np.random.Generator,
) -> tuple[float, dict[float, float]]:
    """The ``lam`` of SHRINK_GRID with the best pooled out-of-fold metric, and every lam's metric.

    ``tune(rows)`` returns ``(v_tuned, v_target)`` fitted on those rows only.
    """
    n = p.shape[1]
    L = log_probs(p)
    fold = stratified_folds(y, folds, rng)
    preds = {lam: np.empty(y.size, dtype=np.int64) for lam in SHRINK_GRID}
    for f in range(folds):
        train, held_out = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if np.unique(y[train]).size < 2:
            raise ValueError(f"shrink='cv': a training part of the {folds} folds has fewer than "
                             "2 classes; use fewer folds or more validation data")
        v_tuned, v_target = tune(train)
        for lam in SHRINK_GRID:
            v = shrunk(v_tuned, v_target, lam)
            preds[lam][held_out] = np.argmax(L[held_out] + v, axis=1)
    scores = {lam: class_metric(y, preds[lam], n, metric, sw) for lam in SHRINK_GRID}
    best = max(scores.values())
    return max(lam for lam, score in scores.items() if score >= best), scores
