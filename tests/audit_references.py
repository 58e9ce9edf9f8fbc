"""Naive references shared by the audit tests (written here, never imported from src)."""

import tracemalloc

import numpy as np
from scipy.optimize import linprog


def traced_peak(call) -> int:
    """The peak bytes tracemalloc sees while ``call()`` runs (NumPy reports its buffers to it)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def hull_reference(weight, bias, k):
    """Can k win (unbounded inputs)? k is unargmaxable iff some a >= 0, sum a = 1 over i != k has
    sum a_i w_i = w_k and sum a_i (b_k - b_i) <= 0 (minimise the latter over that polytope)."""
    others = np.array([i for i in range(len(weight)) if i != k])
    a_eq = np.vstack([weight[others].T, np.ones((1, len(others)))])
    b_eq = np.concatenate([weight[k], [1.0]])
    cost = np.zeros(len(others)) if bias is None else bias[k] - bias[others]
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status == 2:  # infeasible: w_k is a vertex of the hull, so it wins
        return True
    return res.fun > 1e-9


def in_hull_of_others(weight, k):
    """Is w_k a convex combination of the other rows?"""
    return not hull_reference(weight, None, k)


def spread_head(seed, n=300, d=12, sigma=1.0):
    """Gaussian directions with lognormal row norms: small rows sink into the hull."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.exp(sigma * rng.normal(size=(n, 1)))
