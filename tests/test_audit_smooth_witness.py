"""The log-sum-exp witness search: finds witnesses for open argmaxable classes, never for others,
and settles near the minimiser of its bound for classes inside the hull.

References are brute-force margin LPs over all rows, written here."""

import numpy as np
import pytest
from scipy.optimize import linprog

import logitkit.audit.certify as certify
import logitkit.audit.smooth_witness as sw
from logitkit.audit import check_argmaxable
from logitkit.audit.smooth_witness import (
    POOL_SETTLED_GRADIENT,
    SETTLED_GRADIENT,
    pooled_smooth_witnesses,
    smooth_witnesses,
)
from tests.audit_references import spread_head, traced_peak


def best_margin(weight, k):
    """max t s.t. (w_k - w_i) . z >= t for all i != k, |z|_inf <= 1 (HiGHS, all rows)."""
    diffs = weight[k] - np.delete(weight, k, axis=0)
    a_ub = np.hstack([-diffs, np.ones((len(diffs), 1))])
    cost = np.zeros(a_ub.shape[1])
    cost[-1] = -1.0
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(len(diffs)),
                  bounds=[(-1, 1)] * weight.shape[1] + [(None, None)], method="highs")
    return -res.fun


def strictly_wins(weight, k, z):
    logits = weight @ z
    return bool(logits[k] > np.delete(logits, k).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_witnesses_for_argmaxable_classes_and_nothing_for_the_others(seed):
    weight = spread_head(seed)
    weight32 = weight.astype(np.float32)
    weight = weight32.astype(np.float64)
    margins = np.array([best_margin(weight, k) for k in range(len(weight))])
    offered = []

    def accept(ids, z):
        verdicts = np.array([strictly_wins(weight, k, zk) for k, zk in zip(ids, z, strict=True)])
        offered.extend(zip(ids.tolist(), verdicts.tolist(), strict=True))
        return verdicts

    classes = np.random.default_rng(seed).permutation(len(weight))
    outcome = smooth_witnesses(weight32, classes, accept, max_evaluations=200, block=64)
    found, settled, z = outcome.found, outcome.settled, outcome.points
    accepted = {k for k, ok in offered if ok}
    assert set(classes[found].tolist()) == accepted and all(margins[k] > 0 for k in accepted)
    assert not any(ok for k, ok in offered if margins[k] <= 0)  # never a win inside the hull
    assert sorted(z) == np.flatnonzero(settled).tolist()  # a point per settled class only
    argmaxable = margins[classes] > 1e-6
    assert (margins <= 0).sum() > 50 and argmaxable.sum() > 50
    assert found[argmaxable].mean() >= 0.95
    # Inside the hull the search settles where the softmax mean of the other rows is near w_k.
    interior = margins[classes] <= 1e-9  # the LP margin is 0 at z = 0 for these
    assert not (found & settled).any() and settled[interior].mean() >= 0.9
    for j in np.flatnonzero(settled):
        k = classes[j]
        logits = np.delete(weight, k, axis=0) @ z[j]
        p = np.exp(logits - logits.max())
        mean = (p / p.sum()) @ np.delete(weight, k, axis=0)
        assert np.abs(mean - weight[k]).sum() <= 2 * SETTLED_GRADIENT * np.abs(weight[k]).sum()


def test_fast_stage_uses_the_search_and_keeps_every_verdict(monkeypatch):
    weight = spread_head(7, n=400, d=10)
    results = []

    def recording(*args, **kwargs):
        outcome = pooled_smooth_witnesses(*args, **kwargs)
        results.append(outcome.found)
        return outcome

    monkeypatch.setattr(certify, "pooled_smooth_witnesses", recording)
    audit = check_argmaxable(weight, show_progress=False)
    found = np.concatenate(results)
    assert found.sum() >= 5 and not found.all()  # it decided some, the rest went further
    dense = [c for c in audit.certificates.values() if len(c.support) > weight.shape[1] + 1]
    assert len(dense) >= 5  # entropy certificates from the settled points
    for k, status in zip(audit.classes.tolist(), audit.status.tolist(), strict=True):
        margin = best_margin(weight, k)
        assert status == ("argmaxable" if margin > 1e-7 else "unargmaxable"), (k, margin)
        if status == "argmaxable":
            assert strictly_wins(weight, k, audit.witnesses[k])


def test_fast_stage_holds_the_search_results_without_views_of_its_batches():
    """The search's witnesses go straight into the fast stage's inputs and its settled points
    are copies: nothing keeps a whole batch of candidates (or the search's points) alive."""
    weight = spread_head(7, n=400, d=10)
    fast = certify.certify_fast(weight, None, np.arange(400), keep_witnesses=False)
    assert len(fast.settled) >= 5 and all(z.base is None for z in fast.settled.values())
    logits = weight @ np.stack([fast.witness(j) for j in fast.held]).T
    for column, j in enumerate(fast.held.tolist()):
        if fast.certified[j]:  # proved after stage 1: by the search, its input held
            assert logits[j, column] > np.delete(logits[:, column], j).max()
    assert fast.certified[fast.held].sum() >= 5


@pytest.mark.parametrize("box", [0.3, 4.0])
def test_search_witnesses_respect_a_box(box):
    weight = spread_head(3, n=300, d=10)
    audit = check_argmaxable(weight, box=box, show_progress=False)
    for k in audit.argmaxable.tolist():
        z = audit.witnesses[k]
        assert np.abs(z).max() <= box and strictly_wins(weight, k, z)


@pytest.mark.parametrize("seed", [1, 2])  # heads where the pool lets a class win wrongly
def test_the_pooled_search_decides_like_the_lp_and_settles_over_its_pool(monkeypatch, seed):
    """A small pool (88 of 600 rows): witnesses win over the whole head, classes settle only
    inside the hull, and near the softmax mean of the pool rows they settled over; classes the
    pool lets win wrongly come back with the rows that beat them (a second pass)."""
    monkeypatch.setattr(sw, "POOL_ROWS", 40)  # the pool: max(40, 8 (d + 1)) = 88 rows
    monkeypatch.setattr(sw, "POOL_CHUNK", 50)  # plus 50 classes searched over it at a time
    monkeypatch.setattr(sw, "POOL_GROWTH", 8)  # rows a class turned down brings along
    weight = spread_head(seed, n=600, d=10)
    weight32 = weight.astype(np.float32)
    weight = weight32.astype(np.float64)
    margins = np.array([best_margin(weight, k) for k in range(len(weight))])
    passes = []
    original = sw.smooth_witnesses

    def recording(rows32, ids, accept, **kwargs):
        passes.append((len(rows32), kwargs.get("starts") is not None))
        return original(rows32, ids, accept, **kwargs)

    monkeypatch.setattr(sw, "smooth_witnesses", recording)

    accepted = set()

    def accept(ids, z):
        verdicts = np.array([strictly_wins(weight, k, zk) for k, zk in zip(ids, z, strict=True)])
        accepted.update(ids[verdicts].tolist())
        return verdicts

    classes = np.random.default_rng(seed).permutation(len(weight))
    outcome = pooled_smooth_witnesses(weight32, classes, accept)
    assert any(restart for _, restart in passes)  # the pool grew and the search went on
    argmaxable = margins[classes] > 1e-6
    interior = margins[classes] <= 1e-9
    assert outcome.found[argmaxable].mean() >= 0.95 and not outcome.found[interior].any()
    assert not outcome.settled[argmaxable].any() and outcome.settled[interior].mean() >= 0.9
    assert set(classes[outcome.found].tolist()) == accepted  # found: a witness that won
    assert sorted(outcome.points) == np.flatnonzero(outcome.settled).tolist()
    # the settled points wait on disk (read back per access), not in memory
    assert outcome.points.bytes_on_disk == 4 * weight.shape[1] * outcome.settled.sum()
    over_a_pool = np.flatnonzero(outcome.settled & (outcome.pool >= 0))
    assert len(over_a_pool) >= 0.5 * outcome.settled.sum()
    for j in over_a_pool:
        k = classes[j]
        rows = outcome.pools[outcome.pool[j]]
        rows = rows[rows != k]
        assert len(rows) < len(weight) - 1  # a pool, not the whole head
        logits = weight[rows] @ outcome.points[j]
        p = np.exp(logits - logits.max())
        mean = (p / p.sum()) @ weight[rows]
        assert np.abs(mean - weight[k]).sum() <= 2 * POOL_SETTLED_GRADIENT * np.abs(
            weight[k]).sum()


def test_a_pass_releases_its_last_classes_at_their_last_point():
    """``release_below``: once every class has started and fewer are left than that, they stop
    unfinished at their last point (not found, not settled); without it, or with no more
    classes than slots, every class runs to its end."""
    weight = spread_head(4, n=400, d=10)
    weight32 = weight.astype(np.float32)
    classes = np.arange(len(weight))
    checked = []

    def accept(ids, z):
        checked.append(len(ids))
        return np.array([strictly_wins(weight32.astype(np.float64), k, zk)
                         for k, zk in zip(ids, z, strict=True)])

    whole = smooth_witnesses(weight32, classes, accept, block=64)
    cut = smooth_witnesses(weight32, classes, accept, block=64, release_below=16)
    assert not whole.released.any() and 0 < cut.released.sum() < 16
    assert not (cut.released & (cut.found | cut.settled | cut.rejected)).any()
    assert (cut.found | cut.settled).sum() >= (whole.found | whole.settled).sum() - 16
    for j in np.flatnonzero(cut.released):  # the point it had reached: F there beats the start
        k = classes[j]
        logits = np.delete(weight, k, axis=0) @ cut.points[j]
        value = logits.max() + np.log(np.exp(logits - logits.max()).sum()) - \
            weight[k] @ cut.points[j]
        assert np.isfinite(value) and np.abs(cut.points[j]).sum() > 0
    few = smooth_witnesses(weight32, classes[:64], accept, block=64, release_below=16)
    assert not few.released.any()  # no more classes than slots: never released


def test_classes_turned_down_in_different_chunks_are_searched_again_together(monkeypatch):
    """Classes a pass turns down wait across chunks and fill one pass together, from the points
    where they were turned down, and are found there."""
    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    monkeypatch.setattr(sw, "POOL_CHUNK", 50)
    monkeypatch.setattr(sw, "POOL_GROWTH", 8)
    weight = spread_head(1, n=600, d=10)
    weight32 = weight.astype(np.float32)
    weight = weight32.astype(np.float64)
    classes = np.random.default_rng(1).permutation(len(weight))
    chunk_of = {int(k): j // 50 for j, k in enumerate(classes)}
    row_of = {weight32[i].tobytes(): i for i in range(len(weight32))}
    restarts = []
    original = sw.smooth_witnesses

    def recording(rows32, ids, accept, **kwargs):
        outcome = original(rows32, ids, accept, **kwargs)
        if kwargs.get("starts") is not None:
            searched = [row_of[rows32[i].tobytes()] for i in ids.tolist()]
            restarts.append({chunk_of[k] for k in searched})
        return outcome

    monkeypatch.setattr(sw, "smooth_witnesses", recording)

    offered, accepted = set(), set()

    def accept(ids, z):  # every class's first candidate is turned down, as if a row beat it
        first = [k not in offered for k in ids.tolist()]
        offered.update(ids.tolist())
        verdicts = np.array([not new and strictly_wins(weight, k, zk)
                             for k, zk, new in zip(ids, z, first, strict=True)])
        accepted.update(ids[verdicts].tolist())
        return verdicts

    outcome = pooled_smooth_witnesses(weight32, classes, accept)
    assert any(len(chunks) > 1 for chunks in restarts)
    assert outcome.found.sum() >= 0.9 * len(offered)  # found on a later pass
    assert set(classes[outcome.found].tolist()) == accepted


def test_a_class_turned_down_again_brings_twice_the_rows(monkeypatch):
    """The rows a class brings into its next pool: ``POOL_GROWTH`` after its first turn-down,
    twice as many after each one that follows (capped by the head)."""
    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    monkeypatch.setattr(sw, "POOL_CHUNK", 50)
    monkeypatch.setattr(sw, "POOL_GROWTH", 8)
    monkeypatch.setattr(sw, "POOL_RELEASE", 0)  # every pass runs its classes to their end
    weight = spread_head(3, n=600, d=10)
    weight32 = weight.astype(np.float32)
    weight = weight32.astype(np.float64)
    turned_down: dict[int, int] = {}
    brought = []
    original = sw.rivals_at

    def recording(weight32, bias32, ids, z, n_rivals, block):
        brought.extend((turned_down[k], n_rivals) for k in ids.tolist())
        return original(weight32, bias32, ids, z, n_rivals, block)

    monkeypatch.setattr(sw, "rivals_at", recording)

    def accept(ids, z):  # the first four candidates of a class are turned down
        verdicts = []
        for k, zk in zip(ids.tolist(), z, strict=True):
            verdicts.append(turned_down.get(k, 0) >= 4 and strictly_wins(weight, k, zk))
            turned_down[k] = turned_down.get(k, 0) + (not verdicts[-1])
        return np.array(verdicts, dtype=bool)

    pooled_smooth_witnesses(weight32, np.random.default_rng(3).permutation(len(weight)), accept)
    assert {turn for turn, _ in brought} >= {1, 2, 3, 4}
    assert all(rows == min(8 * 2 ** (turn - 1), len(weight) - 1) for turn, rows in brought)


def test_a_class_at_its_last_evaluation_settles_under_the_looser_test(monkeypatch):
    """``last_settled_gradient``: a class still searching at its last evaluation settles there
    where ``F > 0`` and ``|grad F|_1 <= last_settled_gradient |w_k|_1`` (float64, written here);
    nothing else changes; the pooled search gives its passes the whole head's test."""
    weight = spread_head(2, n=300, d=8)
    weight32 = weight.astype(np.float32)
    weight = weight32.astype(np.float64)
    classes = np.arange(len(weight))

    def accept(ids, z):
        return np.array([strictly_wins(weight, k, zk) for k, zk in zip(ids, z, strict=True)])

    def search(last):
        return smooth_witnesses(weight32, classes, accept, settled_gradient=0.0,
                                max_evaluations=12, last_settled_gradient=last)

    plain, late = search(0.0), search(0.3)
    assert not plain.settled.any() and late.settled.any() and not late.settled.all()
    assert (late.found == plain.found).all() and not (late.found & late.settled).any()
    for j in np.flatnonzero(late.settled):
        others = np.delete(weight, j, axis=0)
        logits = others @ late.points[j].astype(np.float64)
        p = np.exp(logits - logits.max())
        value = logits.max() + np.log(p.sum()) - weight[j] @ late.points[j]
        gradient = (p / p.sum()) @ others - weight[j]
        assert value > 0
        assert np.abs(gradient).sum() <= 0.3 * np.abs(weight[j]).sum() * (1 + 1e-4)
    seen = []
    original = sw.smooth_witnesses

    def recording(rows32, ids, accept, **kwargs):
        if kwargs.get("stop_when_rejected"):  # a pass over a pool
            seen.append(kwargs.get("last_settled_gradient"))
        return original(rows32, ids, accept, **kwargs)

    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    monkeypatch.setattr(sw, "smooth_witnesses", recording)
    pooled_smooth_witnesses(spread_head(1, n=600, d=10).astype(np.float32), np.arange(100),
                            lambda ids, z: np.zeros(len(ids), dtype=bool))
    assert seen and all(g == SETTLED_GRADIENT for g in seen)


@pytest.mark.parametrize("pool_rows", [40, 10**6])
def test_relaxation_runs_only_where_the_search_is_not_pooled(monkeypatch, pool_rows):
    """Without a bias the relaxation is skipped on heads the search takes over pools (its first
    pass proves those classes for less) and kept where it searches the whole head; with a bias
    (no search follows) it always runs. Every proof stands either way."""
    monkeypatch.setattr(sw, "POOL_ROWS", pool_rows)
    weight = spread_head(5, n=500, d=10)
    bias = np.random.default_rng(5).normal(size=500) * 0.1
    for b in (None, bias):
        phases = []
        fast = certify.certify_fast(weight, b, np.arange(500),
                                    on_phase=lambda name, _total, seen=phases: seen.append(name))
        assert ("relaxation" in phases) == (b is not None or pool_rows > 500)
        logits = fast.witnesses @ weight.T + (0 if b is None else b)
        for j in np.flatnonzero(fast.certified):
            assert logits[j, j] > np.delete(logits[j], j).max()


def test_audits_through_a_small_pool_match_the_lp(monkeypatch):
    """The whole audit with the pooled search and pool-first entropy certificates: every verdict
    as the brute-force LP says, every certificate and witness checked here."""
    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    monkeypatch.setattr(sw, "POOL_CHUNK", 50)
    weight = spread_head(5, n=500, d=10)
    audit = check_argmaxable(weight, show_progress=False)
    assert audit.counts["unargmaxable"] > 50 and audit.counts["unknown"] == 0
    for k, status in zip(audit.classes.tolist(), audit.status.tolist(), strict=True):
        margin = best_margin(weight, k)
        assert status == ("argmaxable" if margin > 1e-7 else "unargmaxable"), (k, margin)
        if status == "argmaxable":
            assert strictly_wins(weight, k, audit.witnesses[k])
        else:
            cert = audit.certificates[k]
            assert k not in cert.support and cert.weights.min() >= 0
            assert abs(cert.weights.sum() - 1) < 1e-12
            assert np.abs(cert.weights @ weight[cert.support] - weight[k]).max() < 1e-6


def two_loop(gradient, pairs):
    """The textbook L-BFGS direction for one row; ``pairs``: (s, y) oldest first."""
    q = gradient.copy()
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y = pairs[-1]
        q *= (s @ y) / (y @ y)
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - (y @ q) / (s @ y)) * s
    direction = -q
    return direction if direction @ gradient < 0 else -gradient


def test_direction_reads_each_rows_ring_like_the_textbook_recursion():
    rng = np.random.default_rng(4)
    memory, slots, d = sw.MEMORY, 6, 5
    steps = np.zeros((memory, slots, d))
    changes = np.zeros_like(steps)
    curvature = np.zeros((memory, slots))
    count = np.array([0, 1, 3, memory, memory + 5, 2 * memory + 3])  # empty, partial, wrapped
    history = []
    for row, n in enumerate(count):
        pairs = []
        for t in range(n):
            s = rng.normal(size=d)
            y = s + 0.3 * rng.normal(size=d)  # s . y > 0
            steps[t % memory, row], changes[t % memory, row] = s, y
            curvature[t % memory, row] = 1.0 / (s @ y)
            pairs.append((s, y))
        history.append(pairs[-memory:])
    gradient = rng.normal(size=(slots, d))
    rows = np.array([5, 0, 3, 1, 4, 2])  # any subset of slots, in any order
    got = sw._direction(gradient[rows], steps, changes, curvature, count[rows], rows)
    for j, row in enumerate(rows):
        np.testing.assert_allclose(got[j], two_loop(gradient[row], history[row]), rtol=1e-10,
                                   atol=1e-12)


def test_evaluate_matches_float64_log_sum_exp_far_from_the_origin():
    """At ``|z| = 60`` most exponentials would be subnormal floats; the floor on them moves
    ``F`` and its gradient by far less than float32 rounding."""
    rng = np.random.default_rng(5)
    weight = rng.normal(size=(300, 8)) * np.exp(rng.normal(size=(300, 1)))
    weight32 = weight.astype(np.float32)
    ids = np.array([3, 7, 11, 200])
    z = rng.normal(size=(4, 8))
    z *= 60.0 / np.linalg.norm(z, axis=1, keepdims=True)
    value, gradient, wins = sw._evaluate(weight32, ids, z, weight32[ids].astype(np.float64))
    for j, k in enumerate(ids):
        others = np.delete(np.arange(300), k)
        logits = weight32[others].astype(np.float64) @ z[j].astype(np.float32)
        top = logits.max()
        p = np.exp(logits - top)
        expected = top + np.log(p.sum()) - weight32[k].astype(np.float64) @ z[j].astype(np.float32)
        expected_gradient = (p / p.sum()) @ weight32[others] - weight32[k]
        assert abs(value[j] - expected) <= 1e-4 * (1 + abs(top))
        np.testing.assert_allclose(gradient[j], expected_gradient, atol=1e-4 * np.abs(weight).max())
        own = weight32[k].astype(np.float64) @ z[j].astype(np.float32)
        assert wins[j] == (own > top)


def test_candidates_checked_in_batches_end_each_search_as_one_by_one_checks_do(monkeypatch):
    """A search that stops at every candidate (``stop_when_rejected``) checks candidates in
    batches across rounds; each class must end exactly as with a check per round (found or
    rejected at the same point), and the checks must come in fewer, fuller calls."""
    weight = spread_head(3, n=300, d=6)
    weight32 = weight.astype(np.float32)
    pool = weight32[:120]  # winning over these 120 rows is not winning over all 300
    classes = np.arange(0, 120, 2)
    calls, offered = [], {}

    def accept(ids, z):
        calls.append(len(ids))
        offered.update((k, zk.copy()) for k, zk in zip(ids.tolist(), z, strict=True))
        return np.array([strictly_wins(weight, k, zk) for k, zk in zip(ids, z, strict=True)])

    outcomes = []
    for batch in (1, 256):
        monkeypatch.setattr(sw, "ACCEPT_BATCH", batch)
        calls.clear()
        offered = {}
        outcomes.append((smooth_witnesses(pool, classes, accept, stop_when_rejected=True,
                                          block=16), list(calls), offered))
    (one, one_calls, one_offered), (batched, batched_calls, batched_offered) = outcomes
    assert one.found.any() and one.rejected.any()  # both endings occur
    for name in ("found", "rejected", "settled"):
        np.testing.assert_array_equal(getattr(batched, name), getattr(one, name))
    for k in classes[one.found | one.rejected].tolist():  # the same candidate ended each search
        np.testing.assert_array_equal(batched_offered[k], one_offered[k])
    for j in np.flatnonzero(one.rejected):  # and the rejected keep it (float32) as their point
        assert batched.points[j].dtype == np.float32
        np.testing.assert_array_equal(batched.points[j],
                                      one_offered[classes[j]].astype(np.float32))
    assert sum(batched_calls) == sum(one_calls) and len(batched_calls) < len(one_calls)


def test_the_screen_marks_only_classes_a_screen_row_beats_at_their_own_row():
    """``z = w_k``: a class is marked only where some screen row ``i != k`` has ``w_i . w_k``
    above ``|w_k|^2`` (float64, here), and every class beaten by more than 1e-3 relative is."""
    rng = np.random.default_rng(4)
    weight32 = spread_head(6, n=700, d=12).astype(np.float32)
    top = int(np.argmax(np.linalg.norm(weight32, axis=1)))
    weight32[5] = weight32[top]  # a duplicate of the largest row: ties, never "beaten"
    screen_ids = np.union1d(rng.choice(700, 90, replace=False), [5, top])
    classes = np.arange(700)
    norms = np.linalg.norm(weight32.astype(np.float64), axis=1)
    marked = certify._beaten_in_screen(weight32.astype(np.float64),
                                       (screen_ids, weight32[screen_ids]), classes,
                                       weight32[classes], np.ones(700), norms)
    w = weight32.astype(np.float64)
    for k in classes.tolist():
        rivals = screen_ids[screen_ids != k]
        gap = (w[rivals] @ w[k]).max() - w[k] @ w[k]
        assert not marked[k] or gap > 0, k
        assert marked[k] or gap <= 1e-3 * (w[k] @ w[k]), k
    assert 50 < marked.sum() < 690 and not marked[[5, top]].any()


@pytest.mark.parametrize("keep", [False, True])
def test_the_stage_one_screen_changes_no_verdict_margin_or_rival(monkeypatch, keep):
    """Classes a pool's rows beat at ``z = w_k`` skip stage 1's whole-head check; those still
    open after the search get it after all: every proof, margin, rival and verdict is the one
    the unscreened fast stage gives."""
    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    monkeypatch.setattr(sw, "POOL_CHUNK", 100)
    weight = spread_head(7, n=900, d=10).astype(np.float32).astype(np.float64)
    classes = np.arange(900)
    marked = []
    screen = certify._beaten_in_screen

    def counted(*args):
        marked.append(screen(*args))
        return marked[-1]

    monkeypatch.setattr(certify, "_beaten_in_screen", counted)
    got = certify.certify_fast(weight, None, classes, keep_witnesses=keep)
    monkeypatch.setattr(certify, "_beaten_in_screen",
                        lambda weight, screen, ids, *rest: np.zeros(len(ids), dtype=bool))
    expected = certify.certify_fast(weight, None, classes, keep_witnesses=keep)
    screened = np.concatenate(marked)
    open_ = ~expected.certified
    assert screened.sum() > 100 and (screened & open_).sum() > 20  # some margins came late
    assert np.array_equal(got.certified, expected.certified)
    # float32 products of other batch shapes: the margins agree to float32 rounding
    np.testing.assert_allclose(got.margins, expected.margins, rtol=1e-5)
    assert np.isfinite(got.margins).all()
    assert np.array_equal(got.rivals[open_], expected.rivals[open_])
    assert got.settled.keys() == expected.settled.keys()
    if keep:
        np.testing.assert_array_equal(got.witnesses, expected.witnesses)


def _two_loop(gradient, pairs):
    """L-BFGS's H g for one row, float64, from its (s, y) pairs oldest first: the two-loop
    recursion over the pairs with s . y > 0 (the others left out), the initial H scaled by
    s.y / y.y of the newest pair where that is positive."""
    newest = pairs[-1] if pairs else None
    pairs = [(s, y) for s, y in pairs if s @ y > 0]
    q, alphas = gradient.copy(), []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    if newest is not None and newest[0] @ newest[1] > 0:
        q *= (newest[0] @ newest[1]) / (newest[1] @ newest[1])
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - (y @ q) / (s @ y)) * s
    return q


def test_direction_from_float32_rings_matches_the_two_loop_recursion():
    """The search keeps its curvature pairs in float32 rings (half the memory and traffic of
    float64: the direction itself took 2.3x less time); the direction still follows the two-loop
    recursion of those pairs in float64 to float32 accuracy, with inert pairs skipped, and falls
    back to -gradient where it would not descend."""
    rng = np.random.default_rng(5)
    memory, slots, d = sw.MEMORY, 12, 40
    steps = np.zeros((memory, slots, d), dtype=np.float32)
    changes = np.zeros_like(steps)
    curvature = np.zeros((memory, slots))
    count = rng.integers(0, 3 * memory, size=slots)
    count[0], count[1] = 0, 5  # no pair yet; a ring not yet full
    history = []
    for row in range(slots):
        matrix = rng.normal(size=(d, d))
        hessian = matrix @ matrix.T / d + np.eye(d)
        pairs = []
        for n in range(count[row]):
            s = rng.normal(size=d).astype(np.float32)
            y = (hessian @ s).astype(np.float32)
            if n % 7 == 3:
                y = -y  # negative curvature: the pair must be inert
            slot = n % memory
            steps[slot, row], changes[slot, row] = s, y
            sy = float(s.astype(np.float64) @ y.astype(np.float64))
            curvature[slot, row] = 1.0 / sy if sy > 0 else 0.0
            pairs.append((s.astype(np.float64), y.astype(np.float64)))
        history.append(pairs[-memory:])
    gradient = rng.normal(size=(slots, d))
    rows = np.arange(slots)
    direction = sw._direction(gradient, steps, changes, curvature, count, rows)
    assert direction.dtype == np.float64
    for row in rows:
        expected = -_two_loop(gradient[row], history[row])
        if expected @ gradient[row] >= 0:
            expected = -gradient[row]
        np.testing.assert_allclose(direction[row], expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max())
        assert direction[row] @ gradient[row] < 0


def test_search_keeps_its_curvature_pairs_in_float32():
    """Where the rings are the search's largest arrays (a small head, wide rows, many classes at
    once), its peak is under what float64 rings alone would take."""
    rng = np.random.default_rng(0)
    weight32 = rng.normal(size=(300, 512)).astype(np.float32)
    float64_rings = 2 * sw.MEMORY * 256 * 512 * 8  # 33.5 MB

    def accept(ids, z):
        return np.zeros(len(ids), dtype=bool)

    peak = traced_peak(lambda: smooth_witnesses(weight32, np.arange(256), accept,
                                                max_evaluations=3, block=256))
    assert peak < float64_rings, peak / 2**20  # 29 MB; 49 MB with float64 rings
