"""The seed's own baseline for per-class decision weights (seed 002), kept as written.

    loss(t) = -metric(labels, argmax(probs * (tanh(t) + 1) / 2))
    t* = scipy.optimize.minimize(loss, zeros(n), method="Powell",
                                 options={"xtol": 1e-10, "ftol": 1e-10, "maxiter": 100000}).x
    weights = (tanh(t*) + 1) / 2

At ``t = 0`` every weight is 1/2: the search starts at plain argmax. The weights are returned as
they come, in [0, 1] (an entry can be exactly 0 where tanh saturates). The only adaptation is the
call itself: ``xtol``, ``ftol`` and ``maxiter`` go through ``options`` (scipy's current API); with
``maxiter`` given and ``maxfev`` not, scipy puts no cap on function evaluations. The metric is
``logitkit.thresholds.metrics.class_metric`` (scikit-learn's accuracy / macro-F1 on these inputs).
"""

from __future__ import annotations

import numpy as np

from logitkit.thresholds.metrics import Metric, class_metric


def seed_powell(p: np.ndarray, y: np.ndarray, metric: Metric,
                sample_weight: np.ndarray | None) -> np.ndarray:
    """Weights ``(tanh(t*) + 1) / 2`` by Powell's method from ``t = 0`` (module docstring)."""
    from scipy.optimize import minimize  # here: `logitkit thresholds apply` must not need scipy

    n = p.shape[1]

    def loss(t: np.ndarray) -> float:
        weights = (np.tanh(t) + 1) / 2
        return -class_metric(y, np.argmax(p * weights, axis=1), n, metric, sample_weight)

    result = minimize(loss, np.zeros(n), method="Powell",
                      options={"xtol": 1e-10, "ftol": 1e-10, "maxiter": 100000})
    return (np.tanh(result.x) + 1) / 2
