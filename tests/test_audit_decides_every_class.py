"""method="exact" decides every class: near-degenerate heads get a verdict with checked evidence.

Every witness and certificate is checked again here in exact rational arithmetic (Python's
``fractions``; floats are exact rationals), independently of the audit's own float64 checks:
a witness must make ``k`` win strictly; a certificate's combination must meet its kind's
equations within ``tol / 64`` of its size (the convention of ``EVIDENCE_CONVENTION``)."""

from fractions import Fraction

import numpy as np
import pytest

from logitkit.audit import check_argmaxable
from logitkit.audit.argmaxable import smallest_tolerance

TOL = 1e-9


def exact(values) -> list:
    return [Fraction(float(v)) for v in np.ravel(values)]


def exact_logits(weight, bias, z):
    zs = exact(z)
    return [sum((w * x for w, x in zip(exact(row), zs, strict=True)), Fraction(0))
            + (Fraction(0) if bias is None else Fraction(float(bias[i])))
            for i, row in enumerate(weight)]


def distinct_mean_of_others(weight, k):
    others = {tuple(row) for i, row in enumerate(weight.tolist()) if row != weight[k].tolist()}
    rows = [exact(row) for row in others]
    return [sum(column, Fraction(0)) / len(rows) for column in zip(*rows, strict=True)]


def median_bias_gap(bias, k):
    gaps = np.abs(bias[k] - bias)
    return float(np.median(gaps)) or float(gaps.max())


def check_evidence_exactly(weight, bias, result, tol=TOL):
    """Every verdict's evidence, checked with rationals; returns the statuses by class."""
    for k, status in zip(result.classes.tolist(), result.status.tolist(), strict=True):
        assert status != "unknown", f"class {k} left unknown"
        if status == "argmaxable":
            logits = exact_logits(weight, bias, result.witnesses[k])
            assert all(logits[k] > value for i, value in enumerate(logits) if i != k), k
            continue
        cert = result.certificates[k]
        a = exact(cert.weights)
        rows = cert.support.tolist()
        assert k not in rows and all(x >= 0 for x in a)
        total = sum(a, Fraction(0))
        a = [x / total for x in a]
        wk = exact(weight[k])
        g = [sum((ai * (wk[j] - Fraction(float(weight[i, j]))) for ai, i in zip(a, rows,
                                                                               strict=True)),
                 Fraction(0)) for j in range(weight.shape[1])]
        size = sum((ai * sum(abs(wk[j] - Fraction(float(weight[i, j])))
                             for j in range(weight.shape[1]))
                    for ai, i in zip(a, rows, strict=True)), Fraction(0))
        direction = {"depth": 1, "inner": -1, "hull": 0}[cert.kind]
        if bias is None and direction:
            mean = distinct_mean_of_others(weight, k)
            g = [gj + direction * Fraction(tol) * (wk[j] - mean[j]) for j, gj in enumerate(g)]
        assert sum(abs(x) for x in g) <= Fraction(tol) / 64 * size, (k, cert.kind)
        if bias is not None:
            c_a = sum((ai * (Fraction(float(bias[k])) - Fraction(float(bias[i])))
                       for ai, i in zip(a, rows, strict=True)), Fraction(0))
            csize = sum((ai * abs(Fraction(float(bias[k])) - Fraction(float(bias[i])))
                         for ai, i in zip(a, rows, strict=True)), Fraction(0))
            delta = Fraction(tol) * Fraction(median_bias_gap(bias, k))
            assert c_a <= -direction * delta + Fraction(tol) * csize, (k, cert.kind)
        expected = {"unargmaxable": ("depth",), "tie": ("hull", "inner")}[status]
        assert cert.kind in expected, (k, status, cert.kind)
    return dict(zip(result.classes.tolist(), result.status.tolist(), strict=True))


def head(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize(("seed", "d"), [(1, 4), (2, 7), (3, 11)])
@pytest.mark.parametrize("eps", [1e-8, 1e-10, 1e-12, 1e-14])
def test_a_row_a_hair_inside_a_vertex_is_decided(seed: int, d: int, eps: float) -> None:
    weight = head(seed, 28, d)
    vertex = int(np.argmax(np.linalg.norm(weight, axis=1)))
    k = (vertex + 5) % len(weight)
    centre = np.delete(weight, k, axis=0).mean(0)
    weight[k] = (1 - eps) * weight[vertex] + eps * centre  # inside the hull, eps from w_vertex
    statuses = check_evidence_exactly(weight, None, check_argmaxable(weight,
                                                                     show_progress=False))
    assert statuses[k] == ("unargmaxable" if eps > 3 * TOL else "tie")
    assert statuses[vertex] == "argmaxable"


@pytest.mark.parametrize("eps", [1e-10, 1e-13, 1e-15])
def test_a_row_a_hair_outside_a_vertex_is_decided(eps: float) -> None:
    weight = head(4, 26, 6)
    vertex = int(np.argmax(np.linalg.norm(weight, axis=1)))
    centre = np.delete(weight, vertex, axis=0).mean(0)
    beyond = (1 + eps) * weight[vertex] - eps * centre  # a new vertex just past the old one
    weight = np.vstack([weight, beyond])
    statuses = check_evidence_exactly(weight, None, check_argmaxable(weight,
                                                                     show_progress=False))
    assert statuses[len(weight) - 1] in ("argmaxable", "tie")
    assert statuses[vertex] in ("unargmaxable", "tie")  # now a hair inside the new vertex


@pytest.mark.parametrize("relative_gap", [1e-11, 1e-13, 1e-15])
def test_a_duplicate_row_with_a_slightly_lower_bias_is_decided(relative_gap: float) -> None:
    weight = head(5, 22, 5)
    bias = np.random.default_rng(6).normal(size=22)
    j = 4
    weight = np.vstack([weight, weight[j]])
    bias = np.append(bias, bias[j] - relative_gap * abs(bias[j]))
    result = check_argmaxable(weight, bias, show_progress=False)
    statuses = check_evidence_exactly(weight, bias, result)
    assert statuses[len(weight) - 1] in ("tie", "unargmaxable")  # never above its twin
    assert statuses[j] in ("argmaxable", "tie")


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_a_half_precision_head_spanning_twelve_decades_is_decided(seed: int) -> None:
    rng = np.random.default_rng(seed)
    norms = np.exp(rng.uniform(np.log(1e-7), np.log(2e4), size=(32, 1)))
    weight = (rng.normal(size=(32, 6)) / 4 * norms).astype(np.float16).astype(np.float64)
    assert np.all(np.isfinite(weight)) and np.abs(weight).max() > 1e3
    statuses = check_evidence_exactly(weight, None, check_argmaxable(weight,
                                                                     show_progress=False))
    smallest = int(np.argmin(np.linalg.norm(weight, axis=1)))
    assert statuses[smallest] == "unargmaxable"  # a speck at the origin, deep inside


@pytest.mark.parametrize("extreme", [-1e200, -1e150, 1e120])
def test_an_extreme_bias_on_one_row_is_decided(extreme: float) -> None:
    weight = head(8, 24, 5)
    bias = np.random.default_rng(9).normal(size=24)
    vertex = int(np.argmax(np.linalg.norm(weight, axis=1)))
    bias[vertex] = extreme
    result = check_argmaxable(weight, bias, show_progress=False)
    statuses = check_evidence_exactly(weight, bias, result)
    assert statuses[vertex] == "argmaxable"  # a vertex wins for a large enough input


@pytest.mark.parametrize("d", [3, 64])
def test_a_tolerance_float64_cannot_honour_is_refused(d: int) -> None:
    weight = head(10, 2 * d + 4, d)
    floor = smallest_tolerance(d)
    assert 1e-14 < floor < 1e-10
    with pytest.raises(ValueError, match=f"tol must be at least {floor:.3g}"):
        check_argmaxable(weight, tol=floor / 2, show_progress=False)
    result = check_argmaxable(weight, tol=floor, show_progress=False)
    check_evidence_exactly(weight, None, result, tol=floor)


def test_an_inner_certificate_is_written_and_verified_again_from_the_json() -> None:
    import json

    from logitkit.audit.reverify import verify_saved_result

    weight = head(4, 26, 6)
    vertex = int(np.argmax(np.linalg.norm(weight, axis=1)))
    centre = np.delete(weight, vertex, axis=0).mean(0)
    weight = np.vstack([weight, (1 + 1e-15) * weight[vertex] - 1e-15 * centre])
    result = check_argmaxable(weight, show_progress=False)
    k = len(weight) - 1  # outside the hull by less than float64 can show: a tie, pushed inward
    assert result.status_of(k) == "tie" and result.certificates[k].kind == "inner"
    payload = json.loads(result.to_json(include_evidence=True))
    assert "inner" in payload["evidence_convention"]
    assert verify_saved_result(weight, None, payload).ok
    payload["certificates"][str(k)]["weights"] = [1.0] + [0.0] * (
        len(payload["certificates"][str(k)]["weights"]) - 1)  # all weight on one row
    failures = verify_saved_result(weight, None, payload).failures
    assert any(f"class {k} (tie)" in line and "|g - s|_1" in line for line in failures), failures


def test_the_callers_head_is_never_written() -> None:
    import torch

    weight = head(11, 40, 5) * 3.0  # rescaled by a power of two inside the audit
    bias = np.random.default_rng(12).normal(size=40)
    for given in (weight.copy(), torch.tensor(weight), weight.astype(np.float32)):
        before = np.asarray(given, dtype=np.float64).copy()
        check_argmaxable(given, bias, show_progress=False)
        assert np.array_equal(np.asarray(given, dtype=np.float64), before)
