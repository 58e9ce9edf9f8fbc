"""Entropy certificates: exact convex combinations for interior rows, nothing for the others.

References are written in the tests: the combination is summed independently, and the hull
membership of a row is decided by an LP over all rows (``tests/audit_references.py``)."""

import numpy as np
import pytest

from logitkit.audit.entropy_certificate import entropy_certificate
from logitkit.audit.exact import decide_hull
from tests.audit_references import in_hull_of_others, spread_head


def minimiser(weight, k, steps=2000):
    """Gradient descent with backtracking on F(z) = LSE_{i != k}(w_i . z) - w_k . z (float64)."""
    others = np.delete(weight, k, axis=0)

    def value_and_gradient(z):
        logits = others @ z
        top = logits.max()
        p = np.exp(logits - top)
        total = p.sum()
        return top + np.log(total) - weight[k] @ z, (p / total) @ others - weight[k]

    z = np.zeros(weight.shape[1])
    value, gradient = value_and_gradient(z)
    step = 1.0
    for _ in range(steps):
        while True:
            trial = z - step * gradient
            new_value, new_gradient = value_and_gradient(trial)
            if new_value <= value - 0.5 * step * gradient @ gradient or step < 1e-12:
                break
            step /= 2
        z, value, gradient = trial, new_value, new_gradient
        step *= 2
    return z


@pytest.mark.parametrize("copy_share", [1, 8])  # every pool gathered; these pools read in place
@pytest.mark.parametrize("seed,exact32", [(0, False), (1, False), (0, True)])
def test_interior_rows_get_exact_combinations(seed, exact32, copy_share, monkeypatch):
    """``exact32``: a head exact in float32, its float64 sums taken from the float32 rows;
    pools (136 rows of 400) gathered once, or read from the head a block at a time."""
    from logitkit.audit import entropy_certificate as ec

    monkeypatch.setattr(ec, "POOL_COPY_SHARE", copy_share)
    weight = spread_head(seed, n=400, d=16)
    weight32 = None
    if exact32:
        weight32 = weight.astype(np.float32)
        weight = weight32.astype(np.float64)
    interior = [k for k in range(60) if in_hull_of_others(weight, k)]
    assert len(interior) >= 10
    tol = 1e-9
    centroid_free = weight.sum(0)
    for k in interior:
        shift = tol * (weight[k] - (centroid_free - weight[k]) / (len(weight) - 1))
        cert = entropy_certificate(weight, k, minimiser(weight, k), tol=tol, shift=shift,
                                   weight32=weight32, exact32=exact32)
        assert cert is not None and cert.kind == "depth", k
        a, rows = cert.weights, cert.support
        assert k not in rows and np.all(a >= 0) and abs(a.sum() - 1) < 1e-12
        assert len(rows) > weight.shape[1] + 1  # dense: the maximum-entropy combination
        combined = sum(ai * weight[i] for ai, i in zip(a.tolist(), rows.tolist(), strict=True))
        scale = float(a @ np.abs(weight[k] - weight[rows]).sum(1))
        assert np.abs(combined - weight[k] - shift).sum() <= tol / 64 * scale


def test_certificates_drawn_from_given_rows_use_only_those_rows():
    """``rows`` (the pool a search settled over, which may hold ``k`` itself): the certificate's
    support lies in it, never holds ``k``, and still combines to the pushed row exactly; rows
    whose hull misses ``w_k`` give no certificate."""
    weight = spread_head(3, n=400, d=8)
    norms = np.linalg.norm(weight, axis=1)
    largest = np.argsort(-norms)[:120]
    tol = 1e-9
    checked = 0
    for k in np.argsort(norms)[:15].tolist():  # the smallest rows: inside the largest ones' hull
        rows = np.sort(np.append(largest, k))
        reduced = weight[rows[rows != k]]
        if not in_hull_of_others(np.vstack([reduced, weight[k]]), len(reduced)):
            continue
        shift = tol * (weight[k] - (weight.sum(0) - weight[k]) / (len(weight) - 1))
        z = minimiser(np.vstack([reduced, weight[k]]), len(reduced))
        cert = entropy_certificate(weight, k, z, tol=tol, shift=shift, rows=rows)
        assert cert is not None, k
        assert set(cert.support.tolist()) <= set(largest.tolist()) and k not in cert.support
        combined = sum(ai * weight[i] for ai, i in zip(cert.weights.tolist(),
                                                       cert.support.tolist(), strict=True))
        scale = float(cert.weights @ np.abs(weight[k] - weight[cert.support]).sum(1))
        assert np.abs(combined - weight[k] - shift).sum() <= tol / 64 * scale
        checked += 1
    assert checked >= 10
    top = int(np.argmax(norms))  # a vertex: no rows combine to it
    assert entropy_certificate(weight, top, np.zeros(8), tol=tol, rows=largest) is None


def test_a_plain_hull_certificate_without_a_shift():
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.1, 0.2]])
    cert = entropy_certificate(weight, 4, np.zeros(2), tol=1e-9)
    assert cert is not None and cert.kind == "hull"
    assert np.allclose(cert.weights @ weight[cert.support], weight[4], rtol=0, atol=1e-14)


@pytest.mark.parametrize("z_scale", [0.0, 1.0, 10.0])
def test_no_certificate_outside_the_hull_or_on_its_boundary(z_scale):
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(50, 6))
    weight[3] *= 3.0  # far outside the others: a vertex
    weight[7] = weight[3]  # twins: each in the hull of the others, on its boundary (ties)
    weight[8] *= 3.0  # far outside: argmaxable
    tol = 1e-9
    for k in (3, 7, 8):
        assert in_hull_of_others(weight, k) == (k != 8)  # the twins tie; 8 is a vertex
        shift = tol * (weight[k] - (weight.sum(0) - weight[k]) / (len(weight) - 1))
        z = z_scale * rng.normal(size=6)
        assert entropy_certificate(weight, k, z, tol=tol, shift=shift) is None


def test_a_failed_entropy_certificate_falls_back_to_the_exact_algorithm():
    weight = spread_head(5, n=200, d=8)
    row_sum = weight.sum(0)
    rivals = np.arange(len(weight))
    for k in range(40):
        expected = "unargmaxable" if in_hull_of_others(weight, k) else "argmaxable"
        far = np.full(weight.shape[1], 50.0)  # a useless start: the step leaves the simplex
        for start in (far, minimiser(weight, k)):
            decision = decide_hull(weight, None, k, rivals, None, 1e-9, row_sum, settled=start,
                                   weight32=weight.astype(np.float32))
            assert decision.status == expected, (k, decision.status)


def test_rows_that_miss_the_class_fall_back_to_all_rows():
    """``settled_rows`` whose hull misses ``w_k`` (the 20 smallest rows): the certificate comes
    from all rows: a dense entropy certificate (Wolfe's corral would hold at most d + 1 rows)."""
    weight = spread_head(4, n=300, d=8)
    norms = np.linalg.norm(weight, axis=1)
    smallest = np.sort(np.argsort(norms)[:20])
    row_sum = weight.sum(0)
    interior = [k for k in np.argsort(norms)[20:60].tolist() if in_hull_of_others(weight, k)]
    assert len(interior) >= 10
    for k in interior:
        decision = decide_hull(weight, None, k, np.arange(len(weight)), None, 1e-9, row_sum,
                               settled=minimiser(weight, k), settled_rows=smallest,
                               weight32=weight.astype(np.float32))
        assert decision.status == "unargmaxable", k
        support = decision.certificate.support
        assert len(support) > weight.shape[1] + 1 and not set(support.tolist()) <= set(
            smallest.tolist())


def test_a_pool_certifies_where_a_dense_sum_of_all_rows_could_not():
    weight = spread_head(2, n=2000, d=16)
    tol = 8e-12  # a sum over all 1999 rows carries rounding gamma_2001 > tol / 64
    assert tol / 64 < 2001 * 2.0**-53
    k = next(k for k in range(80) if in_hull_of_others(weight, k))
    cert = entropy_certificate(weight, k, minimiser(weight, k), tol=tol)
    assert cert is not None and cert.kind == "hull"
    assert len(cert.support) < 2000 * tol / 64 / 2.0**-53  # within what tol allows
    combined = sum(ai * weight[i] for ai, i in
                   zip(cert.weights.tolist(), cert.support.tolist(), strict=True))
    scale = float(cert.weights @ np.abs(weight[k] - weight[cert.support]).sum(1))
    assert np.abs(combined - weight[k]).sum() <= tol / 64 * scale


def test_a_tolerance_below_the_rounding_of_a_full_dimensional_pool_leaves_it_to_wolfe():
    weight = spread_head(0, n=400, d=16)
    k = next(k for k in range(60) if in_hull_of_others(weight, k))
    z = minimiser(weight, k)
    tol = 64 * 4 * 30 * 2.0**-53  # room for about 30 rows: fewer than 2 (d + 1)
    assert entropy_certificate(weight, k, z, tol=tol) is None
    assert entropy_certificate(weight, k, z, tol=1e3 * tol) is not None
    decision = decide_hull(weight, None, k, np.arange(len(weight)), None, tol, weight.sum(0),
                           settled=z)
    assert decision.status == "unargmaxable" and len(decision.certificate.support) <= 17


def test_float64_sums_from_float32_rows_match_those_from_float64_rows():
    """A pool's float64 sum ``sum_i a_i w_i`` over rows scattered through the head, from the
    float32 rows upcast (``exact32``) and from the float64 rows, in blocks."""
    from logitkit.audit import entropy_certificate as ec

    rng = np.random.default_rng(2)
    head32 = rng.normal(size=(5 * ec.UPCAST_BLOCK, 5)).astype(np.float32)
    ids = np.sort(rng.choice(len(head32), size=3 * ec.UPCAST_BLOCK + 11, replace=False))
    a = rng.random(len(ids))
    exact = np.array([np.sum(a * head32[ids, c].astype(np.float64)) for c in range(5)])
    for exact32 in (True, False):
        got = ec.PoolRows(head32.astype(np.float64), head32, ids, exact32).sum64(a)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, exact, rtol=1e-13)


def test_pools_past_an_eighth_of_the_head_are_read_in_place_smaller_ones_gathered():
    from logitkit.audit import entropy_certificate as ec

    head32 = np.random.default_rng(5).normal(size=(800, 6)).astype(np.float32)
    head = head32.astype(np.float64)
    small, large = np.arange(0, 800, 8), np.arange(0, 800, 7)  # 100 and 115 rows of 800
    for exact32 in (True, False):
        copied = ec.pool_rows(head, head32, small, exact32)
        assert copied.ids is None and np.array_equal(copied.weight32, head32[small])
        assert (copied.weight is None) == exact32
        read = ec.pool_rows(head, head32, large, exact32)
        assert read.ids is large and read.weight32 is head32
        a = np.linspace(0.0, 1.0, 100)
        np.testing.assert_allclose(copied.sum64(a), a @ head[small], rtol=1e-14)
        np.testing.assert_allclose(copied.part(np.arange(3, 60)).products64(np.eye(6)),
                                   head[small[3:60]], rtol=0)


def test_a_pool_is_read_a_block_at_a_time_never_gathered_whole(monkeypatch):
    """A pool of every row of a 20000 x 256 float32 head (20 MB), Gram blocks of 1 MB: the
    certificate's steps keep less than a quarter of the pool in memory at once (a gathered
    pool alone is 20 MB), and every pass over the pool agrees with the gathered rows' products
    (written here)."""
    from logitkit.audit import entropy_certificate as ec
    from tests.audit_references import traced_peak

    monkeypatch.setattr(ec, "GRAM_BLOCK_BYTES", 2**20)
    rng = np.random.default_rng(4)
    head32 = rng.normal(size=(20000, 256)).astype(np.float32)
    pool = ec.PoolRows(head32.astype(np.float64), head32, np.arange(1, 20000), True)
    gathered = head32[1:].astype(np.float64)
    z = 0.05 * rng.normal(size=256)
    p = np.exp(gathered @ z - (gathered @ z).max())
    p /= p.sum()
    np.testing.assert_allclose(pool.logits32(z.astype(np.float32)), gathered @ z, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(pool.mean32(p), p @ gathered, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pool.products64(np.stack([z, -z], 1)),
                               gathered @ np.stack([z, -z], 1), rtol=1e-12, atol=1e-12)
    target = head32[0].astype(np.float64)
    peak = traced_peak(lambda: ec._pool_combination(pool, target, z))
    assert peak < head32.nbytes / 4, peak


@pytest.mark.parametrize("exact32", [False, True])
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # from full Newton steps to short ones
def test_the_damped_newton_step_is_the_longest_halving_that_passes_armijos_test(exact32, scale):
    """Reference: ``F(z) = log sum_i exp(w_i . z) - t . z`` over the pool, evaluated here at
    each ``z + step / 2^j`` in float64; the step taken is the first that passes
    ``F(z + h step) <= F(z) + 1e-4 h grad . step`` (``h`` down to 1e-4, as the module's)."""
    from logitkit.audit import entropy_certificate as ec

    rng = np.random.default_rng(11)
    rows32 = (rng.normal(size=(3 * ec.UPCAST_BLOCK + 5, 7)) * np.exp(rng.normal(
        size=(3 * ec.UPCAST_BLOCK + 5, 1)))).astype(np.float32)
    rows = rows32.astype(np.float64)
    target = rows[:40].mean(0)
    z = rng.normal(size=7)
    p = np.exp(rows @ z - (rows @ z).max())
    p /= p.sum()
    gradient = p @ rows - target
    step = -scale * gradient / np.abs(gradient).max()

    def bound(x):
        logits = rows @ x
        return logits.max() + np.log(np.exp(logits - logits.max()).sum()) - target @ x

    h = 1.0
    while h > 1e-4 and bound(z + h * step) > bound(z) + 1e-4 * h * (gradient @ step):
        h /= 2
    pool = ec.PoolRows(rows, rows32, np.arange(len(rows)), exact32)
    got = ec._damped_newton(pool, target, z, step, gradient)
    np.testing.assert_allclose(got, z + h * step, rtol=0, atol=1e-12 * np.abs(step).max())


def test_the_step_over_the_heaviest_rows_is_the_smallest_change_confined_to_them(monkeypatch):
    """Reference: the smallest ``sum_T delta_i^2 / p_i`` with ``sum_T delta_i w_i = -r`` and
    ``sum_T delta_i = -s`` (``delta = 0`` off ``T``, the module doc's subset), by least squares
    in ``u = delta / sqrt(p)`` written here; the first refinement step must be that change. The
    subset's Gram matrix comes back centred at the pool's mean (the pool's first Hessian reuses
    it): ``sum_T p_i (w_i - mu)(w_i - mu)^T``, summed here in float64."""
    from logitkit.audit import entropy_certificate as ec

    rng = np.random.default_rng(7)
    rows = rng.normal(size=(300, 6)).astype(np.float32).astype(np.float64)
    p = rng.random(300) + 0.1
    p /= 1.002 * p.sum()  # weights off the simplex too
    target = p @ rows + 1e-3 * rng.normal(size=6)  # a residual to remove
    subset = np.sort(rng.choice(300, size=40, replace=False))
    monkeypatch.setattr(ec, "REFINEMENTS", 2)  # returns p plus the first step
    monkeypatch.setattr(ec, "CONVERGED", np.inf)  # whatever residual that step leaves
    mu = p @ rows / p.sum() + 0.3  # any centre: the Gram matrix is corrected to the subset's
    pool = ec.PoolRows(rows, rows.astype(np.float32), np.arange(300), True)
    got, gram = ec._subset_step(pool, target, p, mu, subset)
    mass = p[subset]
    residual, excess = p @ rows - target, p.sum() - 1.0
    scaled = np.vstack([rows[subset].T, np.ones(40)]) * np.sqrt(mass)
    u = np.linalg.lstsq(scaled, -np.append(residual, excess), rcond=None)[0]
    expected = p.copy()
    expected[subset] += np.sqrt(mass) * u
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(u).max())
    off = np.setdiff1d(np.arange(300), subset)
    np.testing.assert_array_equal(got[off], p[off])
    centred = rows[subset] - mu
    np.testing.assert_allclose(gram, (centred * mass[:, None]).T @ centred, rtol=1e-5,
                               atol=1e-6 * np.abs(gram).max())


def test_certificates_come_from_the_heaviest_rows_step_or_else_the_whole_pool(monkeypatch):
    """With a pool of every row (``z`` then near its minimiser), the step over the
    ``3 (d + 1)`` heaviest rows reaches the rounding level: one Gram matrix of that many rows;
    where it cannot (``CONVERGED = 0``), the whole pool's step takes over, its Hessian the
    subset's Gram matrix plus the 348 rows off the subset (not all 399 again). Exact either
    way."""
    from logitkit.audit import entropy_certificate as ec

    formed = []
    original = ec._gram

    def counting(rows, p, centre):
        formed.append(len(rows))
        return original(rows, p, centre)

    monkeypatch.setattr(ec, "_gram", counting)
    monkeypatch.setattr(ec, "POOL_PER_DIMENSION", 100)
    weight = spread_head(0, n=400, d=16)
    tol, default = 1e-9, ec.CONVERGED
    checked = 0
    for k in [k for k in range(60) if in_hull_of_others(weight, k)][:5]:
        z = minimiser(weight, k)
        for converged, expected in ((default, [51]), (0.0, [51, 348])):
            monkeypatch.setattr(ec, "CONVERGED", converged)
            formed.clear()
            cert = entropy_certificate(weight, k, z, tol=tol)
            assert cert is not None and formed[:2] == expected, (k, converged, formed)
            combined = sum(ai * weight[i] for ai, i in
                           zip(cert.weights.tolist(), cert.support.tolist(), strict=True))
            scale = float(cert.weights @ np.abs(weight[k] - weight[cert.support]).sum(1))
            assert np.abs(combined - weight[k]).sum() <= tol / 64 * scale
            checked += converged > 0 and formed == [51]
    assert checked >= 4  # the heaviest rows' step alone, for most classes


@pytest.mark.parametrize("block_bytes", [2**24, 7 * 4 * 8])  # one block; blocks of 7 rows
def test_the_hessian_factor_is_float32_and_float64_where_float32_finds_no_factor(
        monkeypatch, block_bytes):
    """The factor of ``H = sum_i p_i (w_i - mu)(w_i - mu)^T`` (written here) solves ``H y = b``
    to float32 accuracy, whether ``H`` is summed in one block of rows or in several, over all
    rows or over some (``ids``); rows spanning less than the space (a zero column: a zero pivot
    in float32) get the float64 factor of ``H + 1e-12 trace(H) I`` instead, not None."""
    from logitkit.audit import entropy_certificate as ec

    monkeypatch.setattr(ec, "GRAM_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    rows32 = rng.normal(size=(60, 8)).astype(np.float32)
    p = rng.random(60) + 0.1
    p /= p.sum()
    mu = p @ rows32.astype(np.float64)
    centred = rows32.astype(np.float64) - mu
    hessian = (centred * p[:, None]).T @ centred
    def pool(rows32):
        return ec.PoolRows(rows32.astype(np.float64), rows32, np.arange(len(rows32)), True)

    factor = ec._cholesky(ec._gram(pool(rows32), p, mu))
    assert factor[0].dtype == np.float32
    b = rng.normal(size=8)
    y = ec._solve(factor, b)
    assert y.dtype == np.float64
    np.testing.assert_allclose(hessian @ y, b, rtol=0, atol=1e-4 * np.abs(b).max())
    some = np.array([50, 3, 17, 4, 29, 30, 31, 8, 9, 59, 0])
    part = (centred[some] * p[some, None]).T @ centred[some]
    np.testing.assert_allclose(ec._gram(pool(rows32).part(some), p[some], mu), part, rtol=1e-5,
                               atol=1e-6 * np.abs(part).max())

    flat = rows32.copy()
    flat[:, 3] = 0.0
    factor = ec._cholesky(ec._gram(pool(flat), p, p @ flat.astype(np.float64)))
    assert factor is not None and factor[0].dtype == np.float64
    centred = flat.astype(np.float64) - p @ flat.astype(np.float64)
    regularised = (centred * p[:, None]).T @ centred
    regularised[np.diag_indices(8)] += 1e-12 * np.trace(regularised)
    y = ec._solve(factor, b)
    np.testing.assert_allclose(regularised @ y, b, rtol=0, atol=1e-4 * np.abs(b).max())
