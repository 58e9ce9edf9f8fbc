"""Polished certificate weights: a converged corral whose weights miss ``sum_i a_i d_i = -shift``
by more than a certificate allows (an ill-conditioned corral of ``d + 1`` rows) is refined to
rounding level; the refinement never turns a winning class into a certificate.

Found on the lognormal sigma-1 GPT-2-shaped head: class 42001's corral (769 rows, smallest weight
4e-8) missed by 3.2e-11 relative, the certificate allows tol / 64 = 1.6e-11, and the class came out
"unknown". References are written in the tests: hull membership by an LP over all rows
(``tests/audit_references.py``), the combination summed again row by row."""

import numpy as np
import pytest

from logitkit.audit import check_argmaxable
from logitkit.audit import exact as exact_module
from logitkit.audit.exact import decide_hull, polished_weights
from logitkit.audit.hull import HullOutcome, nearest_point
from logitkit.audit.verify import hull_certificate
from tests.audit_references import hull_reference, in_hull_of_others, spread_head

TOL = 1e-9


def push(weight, k, tol=TOL):
    """``tol`` times ``w_k`` minus the centroid of the other rows (the outward push)."""
    others = np.delete(weight, k, axis=0)
    return tol * (weight[k] - others.mean(0))


def relative_residual(weight, k, support, a, shift):
    """``|sum_i a_i w_i - (w_k + shift)|_1 / sum_i a_i |w_k - w_i|_1``, summed row by row."""
    combined = np.zeros(weight.shape[1])
    size = 0.0
    for ai, i in zip(a.tolist(), support.tolist(), strict=True):
        combined += ai * weight[i]
        size += ai * np.abs(weight[k] - weight[i]).sum()
    return np.abs(combined - weight[k] - shift).sum() / size


def jittered(weights, seed, size=1e-6):
    """Weights off by a relative ``size`` each, still on the simplex."""
    noisy = weights * (1 + size * np.random.default_rng(seed).uniform(-1, 1, len(weights)))
    return noisy / noisy.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jittered_corral_weights_are_polished_to_a_certificate(seed):
    weight = spread_head(seed)
    interior = [k for k in range(40) if in_hull_of_others(weight, k)]
    assert len(interior) >= 5
    for k in interior:
        shift = push(weight, k)
        outcome = nearest_point(weight, None, k, np.arange(len(weight)), TOL,
                                row_sum=weight.sum(0))
        assert outcome.converged, k
        rough = jittered(outcome.weights / outcome.weights.sum(), seed + k)
        assert relative_residual(weight, k, outcome.support, rough, shift) > TOL / 64
        assert hull_certificate(weight, None, k, outcome.support, rough, TOL, shift=shift) is None
        polished = polished_weights(weight, None, k, outcome.support, rough, shift)
        assert polished is not None and np.all(polished >= 0)
        assert abs(polished.sum() - 1) < 1e-12
        assert relative_residual(weight, k, outcome.support, polished, shift) < 1e-13
        assert hull_certificate(weight, None, k, outcome.support, polished, TOL,
                                shift=shift) is not None


def test_no_polish_when_the_affine_solution_leaves_the_simplex():
    # w_3 = (2, 2) is outside the hull of (1, 0), (0, 1), (0, 0): its affine weights are
    # (2, 2, -3), so no certificate exists and none is made.
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    assert polished_weights(weight, None, 3, np.array([0, 1, 2]), np.full(3, 1 / 3)) is None


@pytest.fixture
def rough_corrals(monkeypatch):
    """Every minimum-norm point the exact stage computes comes back with jittered weights."""
    real = exact_module.nearest_point

    def with_rough_weights(*args, **kwargs):
        outcome = real(*args, **kwargs)
        if not len(outcome.weights):
            return outcome
        return HullOutcome(x=outcome.x, support=outcome.support,
                           weights=jittered(outcome.weights, len(outcome.support)),
                           support_norms=outcome.support_norms,
                           virtual_weight=outcome.virtual_weight,
                           converged=outcome.converged, iterations=outcome.iterations,
                           pool_size=outcome.pool_size)

    monkeypatch.setattr(exact_module, "nearest_point", with_rough_weights)


@pytest.mark.parametrize("seed", [0, 3])
def test_decisions_from_rough_corrals_match_the_lp(rough_corrals, seed):
    weight = spread_head(seed)
    row_sum = weight.sum(0)
    everyone = np.arange(len(weight))
    for k in range(40):
        decision = decide_hull(weight, None, k, everyone, None, TOL, row_sum)
        if in_hull_of_others(weight, k):
            assert decision.status == "unargmaxable", k
            cert = decision.certificate
            assert relative_residual(weight, k, cert.support, cert.weights,
                                     push(weight, k)) <= TOL / 64
        else:
            assert decision.status == "argmaxable", k
            logits = weight @ decision.witness
            assert logits[k] > np.delete(logits, k).max()


def test_decisions_with_a_bias_from_rough_corrals_match_the_lp(rough_corrals):
    weight = spread_head(4, d=8)
    bias = np.random.default_rng(4).normal(size=len(weight))
    everyone = np.arange(len(weight))
    statuses = []
    for k in range(40):
        decision = decide_hull(weight, bias, k, everyone, None, TOL, weight.sum(0))
        statuses.append(decision.status)
        if not hull_reference(weight, bias, k):
            assert decision.status == "unargmaxable", k
            cert = decision.certificate
            assert relative_residual(weight, k, cert.support, cert.weights, 0.0) <= TOL / 64
            assert cert.weights @ (bias[k] - bias[cert.support]) < 0
        else:
            assert decision.status == "argmaxable", k
            logits = weight @ decision.witness + bias
            assert logits[k] > np.delete(logits, k).max()
    assert statuses.count("unargmaxable") >= 3


@pytest.mark.slow
def test_the_sigma_one_class_that_came_out_unknown_is_certified():
    rng = np.random.default_rng(0)  # the benchmark's GPT-2-shaped head, built here again
    weight = rng.normal(size=(50257, 768)).astype(np.float32) * np.float32(0.1)
    weight = weight * np.exp(rng.normal(size=(50257, 1))).astype(np.float32)
    result = check_argmaxable(weight, classes=[42001], show_progress=False)
    assert result.status.tolist() == ["unargmaxable"]
    cert = result.certificates[42001]
    assert len(cert.support) == 769 and np.all(cert.weights >= 0)
    w64 = weight.astype(np.float64)
    assert relative_residual(w64, 42001, cert.support, cert.weights, push(w64, 42001)) <= TOL / 64


@pytest.mark.parametrize("masked_bias", [0.0, -1e9, -1e300])
def test_polish_with_a_bias_that_is_flat_on_the_support(masked_bias):
    # the centre of a square, bias 0 on the square (only a masked token elsewhere): its
    # certificate needs c_a = 0, and the flat bias row must not break the least squares
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0], [5.0, 5.0]])
    bias = np.array([0.0, 0.0, 0.0, 0.0, 0.0, masked_bias])
    rough = np.array([0.26, 0.24, 0.25, 0.25])
    with np.errstate(all="raise"):
        polished = polished_weights(weight, bias, 4, np.arange(4), rough)
    assert polished is not None
    assert np.abs(polished @ weight[:4] - weight[4]).max() < 1e-15
    assert abs(polished.sum() - 1) < 1e-15
