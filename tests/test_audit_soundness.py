"""Never a wrong verdict: matmul precision, box values, scaling, extreme biases, ties, FW vs exact.

Each test feeds the input that broke an earlier version and other values of the same kind; the
references (brute-force LPs over all rows) are written here.
"""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from logitkit.audit import check_argmaxable


def strict_win_reference(weight, bias, k, box=None):
    """max t s.t. (w_k - w_i).z + b_k - b_i >= t for ALL i != k (box, or |z|_inf <= 1 lifted)."""
    others = np.array([i for i in range(len(weight)) if i != k])
    diffs = weight[k] - weight[others]
    gaps = np.zeros(len(others)) if bias is None else bias[k] - bias[others]
    d = weight.shape[1]
    if box is None:  # homogeneous lift (y, s): d_i.y + c_i s >= t, |y| <= 1, 0 <= s <= 1
        a_ub = np.hstack([-diffs, -gaps[:, None], np.ones((len(others), 1))])
        bounds = [(-1, 1)] * d + [(0, 1), (None, 1)]
        b_ub = np.zeros(len(others))
    else:
        a_ub = np.hstack([-diffs, np.ones((len(others), 1))])
        bounds = [(-box, box)] * d + [(None, None)]
        b_ub = gaps
    cost = np.zeros(a_ub.shape[1])
    cost[-1] = -1.0
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    return -res.fun


def planted_head(seed, n=120, d=6, interior=20):
    """Rows of spread norms plus ``interior`` points planted strictly inside the hull."""
    rng = np.random.default_rng(seed)
    outer = rng.normal(size=(n, d)) * np.exp(0.7 * rng.normal(size=(n, 1)))
    mixes = rng.dirichlet(np.ones(n), size=interior)
    return np.vstack([outer, 0.9 * mixes @ outer])


def wins(weight, bias, k, z):
    logits = weight @ np.asarray(z, np.float64) + (0.0 if bias is None else bias)
    return logits[k] > np.delete(logits, k).max()


@pytest.mark.parametrize("precision", ["medium", "high"])
def test_low_matmul_precision_never_yields_a_false_witness(precision):
    weight = planted_head(0, n=300, d=64, interior=30)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        result = check_argmaxable(weight, show_progress=False)
        fast = check_argmaxable(weight.astype(np.float32), method="fast", show_progress=False)
    finally:
        torch.set_float32_matmul_precision(before)
    for audit in (result, fast):
        for k in audit.argmaxable:
            assert wins(weight.astype(np.float64), None, int(k), audit.witnesses[int(k)])
    assert set(range(300, 330)) <= set(result.unargmaxable.tolist())


@pytest.mark.parametrize("box", [0.3, 0.1, 1 / 3, 0.7, 2.2, 1e-3])
def test_box_witnesses_lie_in_the_box_for_values_not_exact_in_float32(box):
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(160, 5))
    for bias in (None, rng.normal(size=160)):
        result = check_argmaxable(weight, bias, box=box, show_progress=False)
        for k in result.argmaxable:
            z = result.witnesses[int(k)]
            assert np.abs(z).max() <= box  # float64 comparison, as a user would do it
            assert wins(weight, bias, int(k), z)


@pytest.mark.parametrize("box", [0.3, 1 / 3])
def test_box_verdicts_match_the_reference(box):
    rng = np.random.default_rng(8)
    weight = rng.normal(size=(30, 3))
    bias = rng.normal(size=30)
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    for k in range(30):
        best = strict_win_reference(weight, bias, k, box)
        if abs(best) > 1e-7:
            assert (result.status_of(k) == "argmaxable") == (best > 0)


@pytest.mark.parametrize("use_bias", [False, True])
def test_verdicts_do_not_change_under_power_of_two_scaling(use_bias):
    weight = planted_head(1)
    bias = np.random.default_rng(2).normal(size=len(weight)) if use_bias else None
    base = check_argmaxable(weight, bias, show_progress=False)
    assert base.counts["unknown"] == 0 and base.counts["unargmaxable"] >= 20
    for power in (-60, -20, -4, -1, 3, 20, 60):
        factor = 2.0**power
        scaled = check_argmaxable(weight * factor, None if bias is None else bias * factor,
                                  show_progress=False)
        assert (scaled.status == base.status).all(), power
        np.testing.assert_allclose(scaled.margin, base.margin, rtol=1e-12)


def test_scaling_by_other_factors_keeps_verdicts():
    weight = planted_head(3)
    base = check_argmaxable(weight, show_progress=False).status
    for factor in (1e-8, 0.0625 * 3, 1e8):
        assert (check_argmaxable(weight * factor, show_progress=False).status == base).all()


@pytest.mark.parametrize("masked", [0, 57, 139])
@pytest.mark.parametrize("value", [-1e9, -1e6, -1e12])
def test_one_extreme_bias_entry_changes_no_other_verdict(masked, value):
    weight = planted_head(5)
    bias = np.random.default_rng(6).normal(size=len(weight))
    base = check_argmaxable(weight, bias, show_progress=False)
    extreme = bias.copy()
    extreme[masked] = value
    result = check_argmaxable(weight, extreme, show_progress=False)
    others = np.arange(len(weight)) != masked
    assert (result.status[others] == base.status[others]).all()  # others keep their verdicts
    assert result.status[masked] == "unargmaxable"
    for k in result.argmaxable:
        assert wins(weight, extreme, int(k), result.witnesses[int(k)])


def test_masked_token_on_a_head_without_bias():
    weight = planted_head(7, n=40, d=3, interior=6)
    plain = check_argmaxable(weight, show_progress=False)
    bias = np.zeros(len(weight))
    bias[3] = -1e9
    masked = check_argmaxable(weight, bias, show_progress=False)
    # ordinary vertices stay argmaxable (the old global threshold called them unargmaxable)
    keep = np.arange(len(weight)) != 3
    assert (masked.status[keep][plain.status[keep] == "argmaxable"] == "argmaxable").all()


def test_verdicts_match_the_reference_on_planted_heads():
    for seed in range(3):
        for use_bias in (False, True):
            weight = planted_head(10 + seed, n=40, d=3, interior=8)
            bias = (np.random.default_rng(seed).normal(size=len(weight)) if use_bias else None)
            result = check_argmaxable(weight, bias, show_progress=False)
            assert result.counts["unknown"] == 0
            for k in range(len(weight)):
                best = strict_win_reference(weight, bias, k)
                assert (result.status_of(k) == "argmaxable") == (best > 1e-9), (seed, k)


def test_duplicates_and_facet_points_are_ties():
    square = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    weight = np.vstack([square, [0.5, 0.5], square[2], [0.0, 0.0], [0.25, 0.25]])
    # 4: midpoint of an edge (a facet in 2-D); 5: a copy of 2; 6, 7: strictly inside
    result = check_argmaxable(weight, show_progress=False)
    assert result.status.tolist() == ["argmaxable", "argmaxable", "tie", "argmaxable", "tie",
                                      "tie", "unargmaxable", "unargmaxable"]
    assert [g.tolist() for g in result.duplicate_groups] == [[2, 5]]
    for k in (2, 4, 5):  # a tie input: k reaches the top, and some class is strictly below
        logits = weight @ result.witnesses[k]
        assert logits[k] >= logits.max() - 1e-12 and logits.min() < logits[k]
    for k in (0, 1, 3):
        assert wins(weight, None, k, result.witnesses[k])
    # a box changes nothing without a bias; greedy decoding picks id 2 over 5 on their tie
    boxed = check_argmaxable(weight, box=0.3, show_progress=False)
    assert (boxed.status == result.status).all()


def test_duplicate_groups_of_interior_rows_stay_unargmaxable():
    rng = np.random.default_rng(9)
    outer = rng.normal(size=(50, 3))
    inner = 0.1 * outer[:2].mean(0)
    weight = np.vstack([outer, inner, inner, inner])
    result = check_argmaxable(weight, show_progress=False)
    assert [g.tolist() for g in result.duplicate_groups] == [[50, 51, 52]]
    assert result.status[50:].tolist() == ["unargmaxable"] * 3


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_frank_wolfe_and_exact_agree(use_bias, seed):
    weight = planted_head(20 + seed, n=40, d=3, interior=6)
    weight = np.vstack([weight, weight[3]])  # a duplicate too
    bias = np.random.default_rng(seed).normal(size=len(weight)) if use_bias else None
    if bias is not None:
        bias[-1] = bias[3]
    exact = check_argmaxable(weight, bias, show_progress=False)
    for box in (None, 2.0):
        fw = check_argmaxable(weight, bias, method="frank_wolfe", box=box, fw_iterations=300,
                              show_progress=False)
        reference = exact if box is None else check_argmaxable(weight, bias, box=box,
                                                               show_progress=False)
        decided = fw.status != "unknown"
        assert decided.sum() >= 10
        assert (fw.status[decided] == reference.status[decided]).all()
    assert exact.status_of(3) == exact.status_of(len(weight) - 1)


def test_torch_bfloat16_and_float16_inputs():
    weight = planted_head(30, n=50, d=4, interior=5)
    for dtype in (torch.bfloat16, torch.float16):
        tensor = torch.from_numpy(weight).to(dtype)
        result = check_argmaxable(tensor, show_progress=False)
        exact = tensor.double().numpy()
        for k in result.argmaxable:
            assert wins(exact, None, int(k), result.witnesses[int(k)])


def test_worker_processes_give_the_same_verdicts():
    weight = planted_head(40, n=80, d=4, interior=15)
    one = check_argmaxable(weight, show_progress=False)
    two = check_argmaxable(weight, jobs=2, show_progress=False)
    assert (one.status == two.status).all() and one.counts["unargmaxable"] >= 15
    assert {k: c.support.tolist() for k, c in one.certificates.items()} == \
        {k: c.support.tolist() for k, c in two.certificates.items()}


@pytest.mark.parametrize("box", [None, 0.3])
def test_whole_head_shortcut_matches_the_per_class_path(box):
    weight = planted_head(41, n=300, d=5, interior=20)
    whole = check_argmaxable(weight, box=box, show_progress=False)  # symmetric W W^T pass
    order = np.random.default_rng(0).permutation(len(weight))
    part = check_argmaxable(weight, classes=order, box=box, show_progress=False)
    assert (part.status == whole.status[order]).all()
    assert (part.stage == whole.stage[order]).all()
    np.testing.assert_allclose(part.margin, whole.margin[order], rtol=1e-9)


@pytest.mark.parametrize("use_bias", [False, True])
def test_float32_check_proves_one_ulp_wins_and_rejects_one_ulp_losses(use_bias):
    from logitkit.audit.verify import float32_copy, witness_margins

    rng = np.random.default_rng(5)
    weight32 = (0.5 * rng.normal(size=(40, 8))).astype(np.float32)
    weight32[0] = np.abs(rng.normal(size=8)) + 1.0  # the two near-twins dominate the rest
    weight32[1] = weight32[0]
    weight32[1, 0] = np.nextafter(weight32[0, 0], np.float32(np.inf))  # one float32 ulp apart
    bias32 = rng.normal(size=40).astype(np.float32) * 1e-3 if use_bias else None
    if use_bias:
        bias32[:2] = 0.0
    weight = weight32.astype(np.float64)
    bias = None if bias32 is None else bias32.astype(np.float64)
    assert float32_copy(weight) is not None
    # at z = w_1 row 1 wins by one ulp * w_1[0] (far below the float32 rounding bound), at z = w_0
    # row 0 loses to row 1 by one ulp * w_0[0]: the float32 check must defer both to float64
    classes, z = np.array([1, 0]), weight[[1, 0]]
    plain = witness_margins(weight, bias, classes, z)
    fast = witness_margins(weight, bias, classes, z, weight32=weight32, bias32=bias32)
    assert plain[1].tolist() == fast[1].tolist() == [True, False]
    np.testing.assert_array_equal(plain[0], fast[0])
    for k, verified in zip(classes, fast[1], strict=True):
        assert wins(weight, bias, int(k), z[list(classes).index(k)]) == verified


def test_float32_check_agrees_with_float64_on_random_witnesses():
    from logitkit.audit.verify import witness_margins

    rng = np.random.default_rng(6)
    weight32 = rng.normal(size=(500, 16)).astype(np.float32)
    bias32 = rng.normal(size=500).astype(np.float32)
    classes = rng.integers(0, 500, size=300)
    z = (weight32[classes] * 4 + rng.normal(size=(300, 16)).astype(np.float32)).astype(np.float64)
    weight, bias = weight32.astype(np.float64), bias32.astype(np.float64)
    plain = witness_margins(weight, bias, classes, z, rivals=5)
    fast = witness_margins(weight, bias, classes, z, rivals=5, weight32=weight32, bias32=bias32)
    assert 50 < plain[1].sum() < 300  # both verdicts occur
    np.testing.assert_array_equal(plain[1], fast[1])
    np.testing.assert_allclose(plain[0], fast[0], rtol=1e-4, atol=1e-4)
    truth = [wins(weight, bias, int(k), zk) for k, zk in zip(classes, z, strict=True)]
    assert (fast[1] <= np.array(truth)).all()  # never a false witness


def test_progress_names_each_phase_of_a_long_audit(monkeypatch, capsys):
    monkeypatch.delenv("LOGITKIT_PROGRESS", raising=False)
    monkeypatch.setenv("LOGITKIT_HEARTBEAT_S", "0")  # a heartbeat line at every update
    check_argmaxable(planted_head(3, n=300, d=6, interior=20), show_progress=True)
    err = capsys.readouterr().err
    names = ["nearest rows", "relaxation", "smooth search", "exact stage"]
    assert [name for name in names if f"audit ({name})" in err] == names
    assert sorted(names, key=lambda name: err.index(f"audit ({name})")) == names


@pytest.mark.parametrize("use_bias", [False, True])
def test_combination_sums_support_of_many_blocks_exactly_enough(use_bias):
    """``g = sum a_i (w_k - w_i)``, ``c_a`` and ``sum a_i |w_k - w_i|_1`` over a support of
    several blocks, against ``math.fsum`` per coordinate; the reported rounding bound covers
    the error of ``|g|_1``."""
    import math

    from logitkit.audit import verify

    rng = np.random.default_rng(8)
    weight = rng.normal(size=(3000, 6)) * np.exp(rng.normal(size=(3000, 1)))
    bias = rng.normal(size=3000) if use_bias else None
    support = np.sort(rng.choice(np.arange(1, 3000), 2 * verify.COMBINATION_BLOCK + 37,
                                 replace=False))
    weights = rng.random(len(support))
    weights /= weights.sum()
    g, c_a, size, rounding = verify.combination(weight, bias, 0, support, weights)
    diffs = weight[0] - weight[support]
    exact = np.array([math.fsum(weights * diffs[:, c]) for c in range(6)])
    assert abs(np.abs(exact).sum() - np.abs(g).sum()) <= rounding
    assert size == pytest.approx(math.fsum((weights[:, None] * np.abs(diffs)).ravel()), rel=1e-12)
    if use_bias:
        assert c_a == pytest.approx(math.fsum(weights * (bias[0] - bias[support])), rel=1e-9)


@pytest.mark.parametrize("use_bias", [False, True])
def test_float32_check_rechecks_only_rows_it_cannot_rule_out_and_agrees_with_float64(
        use_bias, monkeypatch):
    """Rivals planted 1 to 20 float32 ulps apart among 3000 others, beyond what the float32
    bound can separate: the float64 recheck of the rows it cannot rule out must give the
    verdicts of the float64 check over every row, and never a false witness."""
    from logitkit.audit import verify

    rechecked = []
    recheck = verify._float64_recheck
    monkeypatch.setattr(verify, "_float64_recheck",
                        lambda *a: rechecked.append(a[2]) or recheck(*a))
    rng = np.random.default_rng(9)
    n, d = 3000, 8
    weight32 = (0.3 * rng.normal(size=(n, d))).astype(np.float32)
    top = (np.abs(rng.normal(size=d)) + 1.0).astype(np.float32)
    gaps = [1, -1, 3, 8, -8, 20]  # ulps of the first coordinate; the last row wins by 12 ulps
    for i, gap in enumerate(gaps):
        weight32[i] = top
        weight32[i, 0] = top[0] + np.float32(gap) * np.spacing(top[0])
    bias32 = np.zeros(n, dtype=np.float32) if use_bias else None
    weight = weight32.astype(np.float64)
    bias = None if bias32 is None else bias32.astype(np.float64)
    classes = np.arange(len(gaps))
    z = np.tile(np.eye(d)[0] + 1e-3, (len(gaps), 1)).astype(np.float32).astype(np.float64)
    plain = verify.witness_margins(weight, bias, classes, z)
    fast = verify.witness_margins(weight, bias, classes, z, weight32=weight32, bias32=bias32)
    assert 5 in rechecked  # the winner's 12 ulps are below the float32 bound
    np.testing.assert_array_equal(plain[1], fast[1])
    np.testing.assert_allclose(plain[0], fast[0], rtol=1e-6, atol=1e-12)
    assert fast[1].tolist() == [False] * (len(gaps) - 1) + [True]  # only the largest row wins
    for k in classes:
        assert wins(weight, bias, int(k), z[k]) >= fast[1][k]


@pytest.mark.parametrize("box", [None, 0.25])
def test_stage_one_on_float32_heads_proves_what_the_float64_pass_proves(box):
    """Without a bias, a head exact in float32 takes stage 1 (``z = alpha w_k``) through the
    float32 check; its proofs must be those of the float64 symmetric pass, including rows one
    float32 ulp apart (a win far below the float32 rounding bound), every proof a real win
    (exact products, correctly rounded sums), and the rivals the largest other logits."""
    import math

    from logitkit.audit.certify import _nearest_all, _nearest_float32
    from logitkit.audit.verify import float32_copy, row_norms_of

    rng = np.random.default_rng(8)
    weight32 = (rng.normal(size=(300, 6)) * np.exp(0.8 * rng.normal(size=(300, 1)))).astype(
        np.float32)
    twins = weight32[np.argsort(-np.linalg.norm(weight32, axis=1))[:20]]  # the longest rows,
    for twin in twins:  # each lengthened by one ulp in its largest entry
        j = np.abs(twin).argmax()
        twin[j] = np.nextafter(twin[j], np.float32(np.inf) * twin[j])
    weight = np.vstack([weight32, twins]).astype(np.float64)
    norms = row_norms_of(weight)
    classes = np.arange(len(weight))
    proved32, z, margins32, rivals, held, _ = _nearest_float32(
        weight, float32_copy(weight), classes, box, 8, norms, 64, None, "every")
    assert held is None  # every input kept
    proved64, margins64, alpha = _nearest_all(weight, box, 64, norms, None)
    np.testing.assert_array_equal(z, weight * alpha[:, None])
    np.testing.assert_array_equal(proved32, proved64)
    scale = (norms.max() * norms * alpha).max()  # float32 logits round at 1e-7 of this
    np.testing.assert_allclose(margins32, margins64 * alpha, rtol=0, atol=1e-6 * scale)
    assert proved32[300:].sum() >= 5  # one-ulp wins proved, through the float64 recheck
    for k in range(len(weight)):
        logits = [math.fsum(weight[i] * z[k]) for i in range(len(weight))]  # exact products
        own = logits[k]
        others = np.delete(np.array(logits), k)
        if proved32[k]:
            assert own > others.max()
        top = set(np.delete(np.arange(len(weight)), k)[np.argsort(-others)[:8]].tolist())
        assert len(top & set(rivals[k].tolist())) >= 7  # ties at the 8th place may swap
