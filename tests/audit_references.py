"""Naive references shared by the audit tests (written here, never imported from src)."""

import numpy as np
from scipy.optimize import linprog


def in_hull_of_others(weight, k):
    """Is w_k a convex combination of the other rows? (feasibility LP, HiGHS)"""
    others = np.delete(weight, k, axis=0)
    a_eq = np.vstack([others.T, np.ones(len(others))])
    res = linprog(np.zeros(len(others)), A_eq=a_eq, b_eq=np.append(weight[k], 1.0),
                  bounds=(0, None), method="highs")
    return res.status == 0


def spread_head(seed, n=300, d=12, sigma=1.0):
    """Gaussian directions with lognormal row norms: small rows sink into the hull."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.exp(sigma * rng.normal(size=(n, 1)))
