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


def recorded_heads(monkeypatch) -> list:
    """The head each audit hands to its fast stage, recorded."""
    import logitkit.audit.argmaxable as argmaxable_module

    seen, original = [], argmaxable_module.certify_fast

    def recording(weight, *args, **kwargs):
        seen.append(weight)
        return original(weight, *args, **kwargs)

    monkeypatch.setattr(argmaxable_module, "certify_fast", recording)
    return seen


@pytest.mark.parametrize("bias", [False, True])
def test_copy_false_scales_the_callers_head_in_place_and_back(monkeypatch, bias):
    """``copy=False``: the audit works on the caller's float32 array itself, scaled by its power
    of two (no second head), gets the verdicts of the default copy, and leaves the array with
    every bit it had."""
    weight = float32_head(9)[:-2] * np.float32(24.0)  # no twins; median norm about 2^6
    b = np.random.default_rng(9).normal(size=len(weight)).astype(np.float32) if bias else None
    before = weight.copy()
    seen = recorded_heads(monkeypatch)
    copied = check_argmaxable(weight, b, show_progress=False)
    lent = check_argmaxable(weight, b, show_progress=False, copy=False)
    assert lent.settings["rescaled_by"] <= 1.0 / 64
    assert not np.shares_memory(seen[0].rows32, weight)  # the default: a scaled copy
    assert seen[1].rows32 is weight  # copy=False: the caller's array, scaled
    assert np.array_equal(weight.view(np.uint32), before.view(np.uint32))
    same_audit(lent, copied, margins_rtol=0)
    assert lent.witnesses.keys() == copied.witnesses.keys()
    for k, z in lent.witnesses.items():
        assert np.array_equal(z, copied.witnesses[k])


def test_copy_false_restores_the_head_when_the_audit_fails(monkeypatch):
    import logitkit.audit.argmaxable as argmaxable_module

    weight = float32_head(10) * np.float32(24.0)
    before = weight.copy()

    def failing(weight, *args, **kwargs):
        assert not np.array_equal(weight.rows32, before)  # scaled while the audit runs
        raise KeyboardInterrupt

    monkeypatch.setattr(argmaxable_module, "certify_fast", failing)
    with pytest.raises(KeyboardInterrupt):
        check_argmaxable(weight, show_progress=False, copy=False)
    assert np.array_equal(weight.view(np.uint32), before.view(np.uint32))


def test_copy_false_copies_what_it_may_not_write(monkeypatch, tmp_path):
    """A read-only array, a memory-mapped file (writeable or not) and a head float32 cannot
    scale exactly are never written: a scaled copy (or float64) as by default."""
    weight = float32_head(11) * np.float32(24.0)
    seen = recorded_heads(monkeypatch)
    read_only = weight.copy()
    read_only.flags.writeable = False
    np.save(tmp_path / "head.npy", weight)
    mapped = np.load(tmp_path / "head.npy", mmap_mode="r+")
    tiny = weight.copy()
    tiny[:3, 0] = np.float32(3 * 2.0**-149)  # subnormal: scaled by 2^-6 it rounds to 0
    reference = check_argmaxable(weight, show_progress=False)
    for head in (read_only, mapped, mapped[:, :], tiny):
        before = np.array(head)
        result = check_argmaxable(head, show_progress=False, copy=False)
        assert np.array_equal(np.asarray(head).view(np.uint32), before.view(np.uint32))
        assert not np.shares_memory(getattr(seen[-1], "rows32", seen[-1]), head)
        if head is not tiny:
            same_audit(result, reference, margins_rtol=0)
    assert not isinstance(seen[-1], ExactRows)  # the inexact scaling: float64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_rows_are_moved_up_in_place_and_back(monkeypatch, seed):
    """Duplicates anywhere (first row, runs of them, the last row), moves of a few rows at a
    time (block 3): the distinct rows come out in order, in the array itself, and every row is
    back in place afterwards."""
    from logitkit.audit.argmaxable import _distinct_rows

    monkeypatch.setattr("logitkit.audit.exact_rows.BLOCK_ENTRIES", 3 * 4)  # 3 rows of 4
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(40, 4)).astype(np.float32)
    first = np.arange(40)
    twins = np.unique(np.r_[rng.choice(np.arange(1, 40), 8, replace=False), 39, 1, 2, 3])
    first[twins] = 0
    if seed == 2:  # a second set of equal rows: 5, 6 and 7 equal row 4
        first[[5, 6, 7]] = 4
    keep = first == np.arange(40)
    before = rows.copy()
    with _distinct_rows(ExactRows(rows), first, writeable=True) as distinct:
        assert np.shares_memory(distinct.rows32, rows)
        assert np.array_equal(distinct.rows32, before[keep])
    assert np.array_equal(rows, before)
    as64 = before.astype(np.float64)
    with _distinct_rows(as64, first, writeable=False) as distinct:
        assert not np.shares_memory(distinct, as64) and np.array_equal(distinct, as64[keep])


def test_copy_false_audits_a_head_with_twins_without_copying_it(monkeypatch):
    """Duplicate rows (the audit's distinct rows): with ``copy=False`` they are moved in the
    caller's array, not copied out of it; the verdicts, ties included, are those of the
    default, and the array is restored bit for bit."""
    weight = float32_head(12) * np.float32(24.0)  # rows 330, 331 duplicate rows 0, 1
    weight[100] = weight[7]
    before = weight.copy()
    seen = recorded_heads(monkeypatch)
    copied = check_argmaxable(weight, show_progress=False)
    lent = check_argmaxable(weight, show_progress=False, copy=False)
    assert copied.counts["tie"] >= 4 and len(copied.duplicate_groups) == 3
    assert not np.shares_memory(seen[0].rows32, weight)
    assert np.shares_memory(seen[1].rows32, weight) and len(seen[1]) == len(weight) - 3
    assert np.array_equal(weight.view(np.uint32), before.view(np.uint32))
    same_audit(lent, copied, margins_rtol=0)
    for k, cert in lent.certificates.items():
        assert np.array_equal(cert.support, copied.certificates[k].support)
