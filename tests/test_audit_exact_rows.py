"""A float32 head audited without a float64 copy: the same verdicts as its float64 copy.

Heads stored in float32 (or fp16, bf16) are exact in float32, so the audit keeps only their
(power-of-two scaled) float32 rows and upcasts what each check asks for. The references here are
the float64 arrays themselves: rows compared exactly, products to float64 rounding, and whole
audits of the float32 head against audits of its float64 copy.
"""

import tracemalloc

import numpy as np
import pytest
import torch

from logitkit.audit import check_argmaxable
from logitkit.audit.exact_rows import ExactRows, logits_of, row_squares_of


def float32_head(seed: int, n: int = 300, d: int = 8, interior: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    outer = rng.normal(size=(n, d)) * np.exp(0.5 * rng.normal(size=(n, 1)))
    mixes = rng.dirichlet(np.ones(n), size=interior)
    return np.vstack([outer, 0.9 * mixes @ outer, outer[:2]]).astype(np.float32)


def test_rows_and_products_are_those_of_the_float64_array(monkeypatch):
    monkeypatch.setattr("logitkit.audit.exact_rows.BLOCK_ENTRIES", 40)  # blocks of 6 rows
    rng = np.random.default_rng(0)
    w32 = (rng.normal(size=(50, 6)) * 10.0 ** rng.integers(-5, 5, size=(50, 1))).astype(np.float32)
    w64, rows = w32.astype(np.float64), ExactRows(w32)
    assert rows.shape == (50, 6) and len(rows) == 50 and rows.dtype == np.float64
    for index in (3, slice(4, 19), np.array([0, 49, 7, 7]), np.arange(50) % 3 == 0):
        assert rows[index].dtype == np.float64 and np.array_equal(rows[index], w64[index])
    x, xs = rng.normal(size=6), rng.normal(size=(6, 4))
    scale = np.abs(w64) @ np.abs(xs)
    assert np.all(np.abs(rows @ x - w64 @ x) <= 1e-15 * (np.abs(w64) @ np.abs(x)))
    assert np.all(np.abs(rows @ xs - w64 @ xs) <= 1e-15 * scale)
    assert np.all(np.abs(logits_of(rows, xs.T) - xs.T @ w64.T) <= 1e-15 * scale.T)
    assert np.array_equal(logits_of(w64, xs.T), xs.T @ w64.T)
    np.testing.assert_allclose(rows.sum(0), w64.sum(0), rtol=1e-14)
    np.testing.assert_allclose(row_squares_of(rows), (w64**2).sum(1), rtol=1e-15)
    np.testing.assert_allclose(row_squares_of(w64), (w64**2).sum(1), rtol=1e-15)
    with pytest.raises(ValueError, match="float32"):
        ExactRows(w64)
    with pytest.raises(ValueError, match="axis=0"):
        rows.sum(1)


def same_audit(a, b, *, margins_rtol=1e-9) -> None:
    assert a.status.tolist() == b.status.tolist() and a.stage.tolist() == b.stage.tolist()
    np.testing.assert_allclose(a.margin, b.margin, rtol=margins_rtol, atol=0)
    assert list(a.certificates) == list(b.certificates)
    for k, cert in a.certificates.items():
        assert cert.kind == b.certificates[k].kind
    assert [g.tolist() for g in a.duplicate_groups] == [g.tolist() for g in b.duplicate_groups]


@pytest.mark.parametrize("scale", [1.0, 2.0**-10, 3.0])
@pytest.mark.parametrize("bias", [False, True])
def test_a_float32_head_gets_the_verdicts_of_its_float64_copy(scale, bias):
    weight = float32_head(1) * np.float32(scale)  # 3.0: rows not a power-of-two multiple
    b = np.random.default_rng(2).normal(size=len(weight)).astype(np.float32) if bias else None
    if bias:
        b[-2:] = b[:2]  # the duplicates stay duplicates
    as32 = check_argmaxable(weight, b, show_progress=False)
    as64 = check_argmaxable(weight.astype(np.float64), None if b is None else
                            b.astype(np.float64), show_progress=False)
    assert as64.counts["unargmaxable"] >= 10 and len(as64.duplicate_groups) == 2
    same_audit(as32, as64)


def test_tensors_in_bf16_and_fp16_are_audited_as_their_exact_float32_values():
    weight = torch.from_numpy(float32_head(3)).to(torch.bfloat16)
    exact = weight.float().numpy().astype(np.float64)
    same_audit(check_argmaxable(weight, show_progress=False),
               check_argmaxable(exact, show_progress=False))
    half = torch.from_numpy(float32_head(4)).half()
    same_audit(check_argmaxable(half.numpy(), show_progress=False),  # a NumPy float16 array
               check_argmaxable(half.double().numpy(), show_progress=False))


def test_a_scaling_float32_cannot_hold_falls_back_to_float64():
    """Rows of norm about 2^100 with a few entries near float32's smallest normal: the scale
    2^-100 would push those below every float32, so the head is scaled in float64 instead."""
    weight = float32_head(5)
    weight *= np.float32(2.0**100)
    weight[:5, 0] = np.float32(2.0**-120)
    as32 = check_argmaxable(weight, show_progress=False)
    assert as32.settings["rescaled_by"] < 2.0**-95
    same_audit(as32, check_argmaxable(weight.astype(np.float64), show_progress=False))


def test_no_float64_copy_of_a_float32_head_is_made():
    """8000 x 1024 float32 (32 MB): a float64 copy (2x) beside the float32 rows the checks use
    (1x) would make 3x before any temporary; the audit's traced peak (its scaled float32 rows
    and the blocks of its checks; 2.4x when written) stays below that."""
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(8000, 1024)).astype(np.float32)
    tracemalloc.start()
    result = check_argmaxable(weight, keep_witnesses=False, show_progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.counts["argmaxable"] == 8000
    assert peak < 3 * weight.nbytes


@pytest.mark.parametrize("options", [{"method": "frank_wolfe"}, {"method": "fast"}, {"box": 2.0},
                                     {"box": 100.0, "min_radius": 1e-8}])
@pytest.mark.parametrize("bias", [False, True])
def test_every_method_and_question_reads_a_float32_head_as_its_float64_copy(options, bias):
    rng = np.random.default_rng(0)
    outer = rng.normal(size=(60, 4))
    weight = np.vstack([outer, 0.8 * rng.dirichlet(np.ones(60), 6) @ outer]).astype(np.float32)
    b = rng.normal(size=len(weight)).astype(np.float32) if bias else None
    as32 = check_argmaxable(weight, b, show_progress=False, **options)
    as64 = check_argmaxable(weight.astype(np.float64), None if b is None else
                            b.astype(np.float64), show_progress=False, **options)
    assert as32.status.tolist() == as64.status.tolist()
    np.testing.assert_allclose(as32.margin, as64.margin, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_the_callers_float32_head_is_read_never_written(scale):
    """Norms near 1 keep the power-of-two scale at 1, so the audit holds the caller's array
    itself: a read-only array must pass, unchanged."""
    weight = float32_head(8) / np.float32(np.median(np.linalg.norm(float32_head(8), axis=1)))
    weight *= np.float32(scale)
    before = weight.copy()
    weight.flags.writeable = False
    result = check_argmaxable(weight, show_progress=False)
    assert result.settings["rescaled_by"] == 1.0 / scale
    assert np.array_equal(weight, before) and result.counts["unargmaxable"] >= 10
