"""`estimate_statuses` and `logitkit audit --sample`: exact intervals from a sample of classes."""

import json

import numpy as np
import pytest
from scipy.stats import beta, binomtest, hypergeom

from logitkit.audit import check_argmaxable
from logitkit.audit.estimate import estimate_statuses, population_interval
from logitkit.cli import main


def planted_head(outer: int, inner: int, seed: int = 0) -> np.ndarray:
    """``outer`` points on the unit circle (argmaxable) and ``inner`` points strictly inside
    their hull (unargmaxable): the true share of unargmaxable classes is inner / (outer+inner).
    The outer points are evenly spaced, so for outer >= 5 their hull holds the disc of radius
    cos(pi / 5) > 0.5, where the inner points lie; the rows are shuffled."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, outer, endpoint=False)
    ring = np.c_[np.cos(angles), np.sin(angles)]
    radius = 0.5 * np.sqrt(rng.uniform(0, 1, inner))  # inside the disc of radius 0.5
    theta = rng.uniform(0, 2 * np.pi, inner)
    inside = np.c_[radius * np.cos(theta), radius * np.sin(theta)]
    order = rng.permutation(outer + inner)
    return np.vstack([ring, inside])[order]


def brute_force_interval(x: int, n: int, total: int, confidence: float) -> tuple[int, int]:
    alpha = 1 - confidence
    kept = [k for k in range(total + 1)
            if hypergeom(total, k, n).sf(x - 1) > alpha / 2
            and hypergeom(total, k, n).cdf(x) > alpha / 2]
    return min(kept), max(kept)


@pytest.mark.parametrize(("x", "n", "total", "confidence"),
                         [(0, 10, 40, 0.95), (3, 10, 40, 0.95), (10, 10, 40, 0.9),
                          (7, 25, 60, 0.99), (12, 30, 30, 0.95), (1, 1, 7, 0.8)])
def test_interval_matches_a_brute_force_reference(x, n, total, confidence):
    assert population_interval(x, n, total, confidence) == brute_force_interval(
        x, n, total, confidence)


@pytest.mark.parametrize(("x", "n"), [(0, 50), (3, 50), (25, 50), (50, 50)])
def test_interval_tends_to_clopper_pearson_for_a_large_head(x, n):
    total = 200_000
    low, high = population_interval(x, n, total)
    reference = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
    # the beta quantiles of Clopper and Pearson, written out
    cp_low = beta.ppf(0.025, x, n - x + 1) if x > 0 else 0.0
    cp_high = beta.ppf(0.975, x + 1, n - x) if x < n else 1.0
    assert reference.low == pytest.approx(cp_low) and reference.high == pytest.approx(cp_high)
    assert low / total == pytest.approx(cp_low, abs=2e-3)
    assert high / total == pytest.approx(cp_high, abs=2e-3)
    # without replacement the interval is no wider than Clopper-Pearson's
    assert cp_low * total - 1 <= low and high <= cp_high * total + 1


def test_interval_rejects_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        population_interval(1, 5, 10, confidence=1.0)
    with pytest.raises(ValueError, match="count <= sample"):
        population_interval(6, 5, 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_covers_the_planted_share(seed):
    W = planted_head(outer=30, inner=30)  # half the classes are unargmaxable
    estimate = estimate_statuses(W, sample=20, seed=seed, show_progress=False)
    sampled = estimate.classes
    assert len(np.unique(sampled)) == 20 and sampled.min() >= 0 and sampled.max() < 60
    unargmaxable = estimate.statuses["unargmaxable"]
    assert unargmaxable.count == estimate.result.counts["unargmaxable"]
    assert unargmaxable.fraction == unargmaxable.count / 20
    assert unargmaxable.implied == unargmaxable.count * 60 / 20
    assert unargmaxable.implied_low <= 30 <= unargmaxable.implied_high
    assert unargmaxable.low <= 0.5 <= unargmaxable.high
    assert estimate.statuses["unknown"].count == 0
    for name, value in estimate.statuses.items():  # each interval is the reference's
        assert (value.implied_low, value.implied_high) == brute_force_interval(
            value.count, 20, 60, 0.95), name


def test_full_sample_is_the_full_audit_and_the_draw_is_reproducible():
    W = planted_head(outer=12, inner=8, seed=3)
    full = check_argmaxable(W, show_progress=False)
    estimate = estimate_statuses(W, sample=20, seed=5, show_progress=False)
    assert estimate.classes.tolist() == list(range(20))
    assert estimate.result.counts == full.counts == {"argmaxable": 12, "tie": 0,
                                                     "unargmaxable": 8, "unknown": 0}
    for name, value in estimate.statuses.items():
        assert value.implied_low == value.implied_high == full.counts[name]
        assert value.implied == full.counts[name]
    again = estimate_statuses(W, sample=7, seed=11, show_progress=False)
    other = estimate_statuses(W, sample=7, seed=11, show_progress=False)
    assert again.classes.tolist() == other.classes.tolist()
    assert again.statuses == other.statuses
    assert again.result.status.tolist() == full.status[again.classes].tolist()
    assert estimate_statuses(W, sample=7, seed=12, show_progress=False).classes.tolist() != \
        again.classes.tolist()


def test_bad_arguments_are_value_errors():
    W = planted_head(outer=5, inner=2)
    for sample in (0, 8, -1):
        with pytest.raises(ValueError, match=r"sample must lie in \[1, V\]"):
            estimate_statuses(W, sample=sample, show_progress=False)
    with pytest.raises(ValueError, match="integer"):
        estimate_statuses(W, sample=2.5, show_progress=False)
    with pytest.raises(ValueError, match="classes"):
        estimate_statuses(W, sample=2, classes=[0, 1], show_progress=False)
    with pytest.raises(ValueError, match="confidence"):
        estimate_statuses(W, sample=2, confidence=0.0, show_progress=False)
    with pytest.raises(ValueError, match=r"shape \(V, d\)"):
        estimate_statuses(W[0], sample=1, show_progress=False)


def test_cli_sample_prints_and_writes_the_estimate(tmp_path, capsys):
    path, out = tmp_path / "head.npy", tmp_path / "out.json"
    np.save(path, planted_head(outer=10, inner=10))
    assert main(["audit", str(path), "--sample", "8", "--seed", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "audited 8 classes of a 20 x 2 head" in printed
    assert "estimate from a sample of 8 of 20 classes (seed 4), exact 95% intervals:" in printed
    payload = json.loads(out.read_text())
    estimate = estimate_statuses(np.load(path), sample=8, seed=4, show_progress=False)
    assert payload["n_classes"] == 8 and payload["counts"] == estimate.result.counts
    assert {k: payload["estimate"][k] for k in ("sample", "n_total", "seed", "confidence")} == {
        "sample": 8, "n_total": 20, "seed": 4, "confidence": 0.95}
    unargmaxable = payload["estimate"]["statuses"]["unargmaxable"]
    assert unargmaxable == vars(estimate.statuses["unargmaxable"])
    assert unargmaxable["implied_low"] <= 10 <= unargmaxable["implied_high"]


def test_cli_sample_usage_errors(tmp_path, capsys):
    path = tmp_path / "head.npy"
    np.save(path, planted_head(outer=5, inner=2))
    assert main(["audit", str(path), "--sample", "3", "--classes", "0,1"]) == 2
    assert "cannot be combined with --classes" in capsys.readouterr().err
    assert main(["audit", str(path), "--seed", "3"]) == 2
    assert "--seed needs --sample" in capsys.readouterr().err
    assert main(["audit", str(path), "--sample", "8"]) == 2
    assert "sample must lie in [1, V] = [1, 7]" in capsys.readouterr().err


def test_cli_sample_and_verify_refuse_torchrun(tmp_path, capsys, monkeypatch):
    """Under torchrun every rank would draw, print and write: one process only."""
    path = tmp_path / "head.npy"
    np.save(path, planted_head(outer=5, inner=2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert main(["audit", str(path), "--sample", "3"]) == 2
    assert "without torchrun" in capsys.readouterr().err
