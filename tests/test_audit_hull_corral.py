"""Wolfe's corral: its QR factorisation, kept by Gram-Schmidt as points join and by
``qr_delete`` (in place) as they leave, stays a factorisation of the corral's columns
``(p_i, rho)`` with orthonormal ``Q``, through a corral that fills the space (square ``Q``) and
empties again; its affine minimiser and point match a KKT solve and a row sum written here."""

import numpy as np
import pytest

from logitkit.audit.hull import _Corral


def affine_minimiser_reference(points: np.ndarray) -> np.ndarray:
    """``argmin |sum_i a_i p_i|^2`` with ``sum_i a_i = 1``, from the KKT system."""
    c = len(points)
    system = np.zeros((c + 1, c + 1))
    system[:c, :c] = 2 * points @ points.T
    system[:c, c] = system[c, :c] = 1.0
    rhs = np.zeros(c + 1)
    rhs[c] = 1.0
    return np.linalg.solve(system, rhs)[:c]


def check(corral: _Corral, pool: np.ndarray) -> None:
    c = len(corral.index)
    q, r = corral.basis[:c].T, corral.r
    columns = np.vstack([pool[corral.index].T, np.full(c, corral.rho)])
    assert r.shape == (c, c) and np.allclose(np.tril(r, -1), 0.0)
    assert np.abs(q.T @ q - np.eye(c)).max() < 1e-12
    assert np.abs(q @ r - columns).max() < 1e-12 * np.abs(columns).max()
    assert np.array_equal(corral.points[:c], pool[corral.index])
    if c > 1:
        assert np.allclose(corral.affine_minimiser(),
                           affine_minimiser_reference(pool[corral.index]), atol=1e-9)
    total = sum(w * pool[i] for w, i in zip(corral.weights.tolist(), corral.index, strict=True))
    assert np.allclose(corral.point(), total, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_corral_stays_a_qr_factorisation_of_its_columns(seed):
    rng = np.random.default_rng(seed)
    d = 6
    pool = rng.normal(size=(40, d)) * np.exp(rng.normal(size=(40, 1)))
    corral = _Corral(pool[0], 0, rho=float(np.abs(pool).max()))
    check(corral, pool)
    largest = 1
    for j in range(1, 40):
        if corral.add(pool[j], j):
            corral.weights = np.full(len(corral.index), 1.0 / len(corral.index))
            check(corral, pool)
            largest = max(largest, len(corral.index))
        if rng.uniform() < 0.2 and len(corral.index) > 1:  # one or two leave at random
            leaving = rng.choice(len(corral.index), size=min(2, len(corral.index) - 1),
                                 replace=False)
            corral.remove(leaving)
            check(corral, pool)
    assert largest == d + 1  # the corral was full on the way (square Q: a full factorisation)
    while len(corral.index) > 1:
        corral.remove(np.array([0]))
        check(corral, pool)


def test_a_full_corral_refuses_points_and_a_dependent_point_is_refused():
    pool = np.array([[1.0, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0, 0, 1], [1, 1, 1], [0.3, -2, 5]])
    corral = _Corral(pool[0], 0, rho=1.0)
    assert corral.add(pool[1], 1)
    assert not corral.add(pool[2], 2)  # on the line through the first two
    assert corral.add(pool[3], 3)
    assert corral.add(pool[4], 4)  # four affinely independent points in R^3
    assert len(corral.index) == 4 == corral.basis.shape[0]
    assert not corral.add(pool[5], 5)  # Q is square: no room
    corral.weights = np.full(4, 0.25)
    check(corral, pool)
    corral.remove(np.array([1]))  # from a square Q (qr_delete returns a full factorisation)
    check(corral, pool)
    assert corral.index == [0, 3, 4] and corral.add(pool[5], 5)  # room again
    check(corral, pool)
