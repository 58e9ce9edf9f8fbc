"""The evidence of a whole-vocabulary audit in less memory, with nothing rounded away.

Certificates keep their row ids as int32 (where they fit); the fast stage keeps its witnesses in
float32 where every one is exact in float32 (heads stored in float32, bf16 or fp16), and in
float64 wherever a power of two or a rounding would take some entry out of float32. Each check is
written here: combinations summed in float64, logits of the witnesses in float64.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from logitkit.audit import check_argmaxable
from logitkit.audit.verify import Certificate, largest_columns


def head_with_interior_rows(seed: int, n: int = 400, d: int = 8, interior: int = 40) -> np.ndarray:
    """Rows of spread norms plus ``interior`` rows strictly inside the hull, rounded to float32."""
    rng = np.random.default_rng(seed)
    outer = rng.normal(size=(n, d)) * np.exp(0.5 * rng.normal(size=(n, 1)))
    mixes = rng.dirichlet(np.ones(n), size=interior)
    return np.vstack([outer, 0.9 * mixes @ outer]).astype(np.float32)


def wins_in_float64(weight: np.ndarray, k: int, z: np.ndarray) -> bool:
    logits = weight.astype(np.float64) @ np.asarray(z, dtype=np.float64)
    return bool(logits[k] > np.delete(logits, k).max())


@pytest.mark.parametrize("seed", [0, 1])
def test_certificates_keep_int32_row_ids_that_still_combine_to_the_class(seed):
    weight = head_with_interior_rows(seed)
    result = check_argmaxable(weight, show_progress=False)
    assert len(result.certificates) >= 30
    rows, tol = weight.astype(np.float64), result.settings["tol"]
    for k, cert in result.certificates.items():
        assert cert.support.dtype == np.int32
        assert k not in cert.support.tolist()
        assert cert.weights.min() >= 0 and abs(cert.weights.sum() - 1) < 1e-12
        target = rows[k].copy()
        if cert.kind == "depth":  # w_k pushed outward by tol, away from the others' centroid
            target += tol * (rows[k] - np.delete(rows, k, axis=0).mean(0))
        size = cert.weights @ np.abs(rows[k] - rows[cert.support]).sum(1)
        gap = np.abs(cert.weights @ rows[cert.support] - target).sum()
        assert gap <= 1.01 * tol / 64 * size


def test_row_ids_beyond_int32_are_kept_as_given():
    ids = np.array([3, 2**31 + 5], dtype=np.int64)
    cert = Certificate(support=ids, weights=np.array([0.5, 0.5]), kind="hull", residual=0.0)
    assert cert.support.dtype == np.int64 and cert.support.tolist() == ids.tolist()
    small = Certificate(support=np.array([7, 1]), weights=np.ones(2) / 2, kind="hull",
                        residual=0.0)
    assert small.support.dtype == np.int32 and small.support.tolist() == [7, 1]


@pytest.mark.parametrize("seed", [0, 3])
def test_witnesses_of_a_float32_head_are_float32_and_win_in_float64(seed):
    weight = head_with_interior_rows(seed)
    result = check_argmaxable(weight, show_progress=False)
    stage = dict(zip(result.classes.tolist(), result.stage.tolist(), strict=True))
    assert sum(stage[k] == "fast" for k in result.argmaxable.tolist()) >= 100
    for k in result.argmaxable.tolist():
        z = result.witnesses[k]
        if stage[k] == "fast":
            assert z.dtype == np.float32
        assert wins_in_float64(weight, k, z)


def test_witnesses_of_a_head_not_exact_in_float32_stay_float64():
    weight = head_with_interior_rows(0).astype(np.float64) * (1 + 1e-12)
    result = check_argmaxable(weight, show_progress=False)
    for k in result.argmaxable.tolist():
        assert result.witnesses[k].dtype == np.float64
        assert wins_in_float64(weight, k, result.witnesses[k])


@pytest.mark.parametrize("box, tiny", [(1e-10, 1e-30), (1e-37, 1.0), (1e15, 1e-44)])
def test_nearest_row_witnesses_stay_exact_where_a_box_takes_them_out_of_float32(box, tiny):
    """On a sphere every class wins at ``z = alpha w_k`` (``alpha`` a power of two that puts
    ``z`` at the box's edge). Where ``alpha w_k`` has entries below float32's normal range (a
    tiny entry scaled down; a box so small that ``alpha`` itself is subnormal in float32) and
    where subnormal float32 entries are scaled up (exact), the witness must be exactly
    ``alpha w_k``: never rounded."""
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(64, 6))
    weight /= np.linalg.norm(weight, axis=1, keepdims=True)
    weight[:, -1] = np.where(np.arange(64) % 2 == 0, tiny, weight[:, -1])
    weight /= np.linalg.norm(weight, axis=1, keepdims=True)
    weight = weight.astype(np.float32)
    result = check_argmaxable(weight, box=box, show_progress=False)
    assert len(result.argmaxable) == 64
    for k in range(64):
        z = result.witnesses[k].astype(np.float64)
        row = weight[k].astype(np.float64) * result.settings["rescaled_by"]
        ratio = z[row != 0] / row[row != 0]
        assert np.all(ratio == ratio[0])  # exactly alpha w_k, no entry rounded
        assert np.log2(ratio[0]) == np.round(np.log2(ratio[0]))
        assert np.abs(z).max() <= box
        assert wins_in_float64(weight, k, z)


@pytest.mark.parametrize("bias", [False, True])
def test_without_witnesses_the_verdicts_margins_and_certificates_are_the_same(bias):
    """``keep_witnesses=False`` releases the fast stage's inputs (only their norms are kept for
    the relative margins, and the open classes' inputs for the exact stage): nothing else may
    change, and an unargmaxable class's margin still comes from its best input."""
    weight = head_with_interior_rows(2, n=300)
    b = np.random.default_rng(5).normal(size=len(weight)) if bias else None
    kept = check_argmaxable(weight, b, show_progress=False)
    lean = check_argmaxable(weight, b, keep_witnesses=False, show_progress=False)
    assert lean.witnesses == {} and len(kept.witnesses) == len(kept.argmaxable) + len(kept.tie)
    assert lean.status.tolist() == kept.status.tolist()
    assert np.array_equal(lean.margin, kept.margin)
    assert np.isfinite(lean.margin).all()
    assert lean.certificates.keys() == kept.certificates.keys()
    for k, cert in kept.certificates.items():
        assert np.array_equal(lean.certificates[k].support, cert.support)
        assert np.array_equal(lean.certificates[k].weights, cert.weights)
    # the margin of an argmaxable class is its witness's margin over |z|_2 times the row scale
    scale = np.median(np.linalg.norm(weight.astype(np.float64), axis=1))
    bias_scale = 0.0 if b is None else np.median(np.abs(b - np.median(b)))
    for j, k in enumerate(kept.classes.tolist()):
        if kept.status[j] == "argmaxable":
            z = kept.witnesses[k].astype(np.float64)
            logits = weight.astype(np.float64) @ z + (0.0 if b is None else b)
            margin = logits[k] - np.delete(logits, k).max()
            expected = margin / (np.linalg.norm(z) * scale + bias_scale)
            assert lean.margin[j] == pytest.approx(expected, abs=1e-6)  # float32 logits


@pytest.mark.parametrize("box", [None, 0.5])
def test_stage_one_releases_the_inputs_it_proves_and_keeps_their_sizes(box):
    """Without witnesses kept, stage 1 holds only the open classes' inputs ("open": the same
    values as when all are kept) or none, and the 2-norm of every input, as summed here in
    float64; proofs, margins and rivals do not change."""
    from logitkit.audit.certify import _nearest_float32
    from logitkit.audit.verify import float32_copy

    weight = head_with_interior_rows(7).astype(np.float64)
    classes = np.arange(len(weight))
    norms = np.linalg.norm(weight, axis=1)
    args = (weight, float32_copy(weight), classes, box, 8, norms, 64, None)
    proved, z, margins, rivals, held, sizes = _nearest_float32(*args, "every")
    assert held is None and sizes is None and len(z) == len(weight)
    expected = np.sqrt((z.astype(np.float64) ** 2).sum(1))
    for keep in ("open", "none"):
        proved_, open_z, margins_, rivals_, held_, sizes_ = _nearest_float32(*args, keep)
        kept = np.flatnonzero(~proved) if keep == "open" else np.zeros(0, dtype=int)
        assert np.array_equal(held_, kept) and 0 < (~proved).sum() < len(weight)
        assert np.array_equal(open_z, z[held_]) and open_z.dtype == z.dtype
        assert np.array_equal(proved_, proved) and np.array_equal(margins_, margins)
        assert np.array_equal(rivals_, rivals)
        np.testing.assert_allclose(sizes_, expected, rtol=1e-15)


def test_an_audit_without_witnesses_holds_no_input_of_an_open_class(monkeypatch):
    """keep_witnesses=False on a head the search takes over pools (no relaxation): the fast
    stage keeps no input of any class (not even the open ones: nothing reports them), yet
    every margin is the one of the audit that keeps them."""
    import logitkit.audit.argmaxable as argmaxable_module
    import logitkit.audit.smooth_witness as sw

    monkeypatch.setattr(sw, "POOL_ROWS", 40)
    weight = head_with_interior_rows(7)
    seen = []
    original = argmaxable_module.certify_fast

    def recording(*args, **kwargs):
        fast = original(*args, **kwargs)
        seen.append(fast)
        return fast

    monkeypatch.setattr(argmaxable_module, "certify_fast", recording)
    lean = check_argmaxable(weight, keep_witnesses=False, show_progress=False)
    full = check_argmaxable(weight, show_progress=False)
    assert sw.searched_over_pools(*weight.shape)
    assert len(seen[0].held) == 0 and (~seen[0].certified).sum() > 0
    assert list(lean.status) == list(full.status) and (lean.status == "unargmaxable").any()
    np.testing.assert_allclose(lean.margin, full.margin, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(300000,), (40000, 7), (9, 40000)])  # 2+ blocks each
def test_float32_stand_ins_are_compared_with_every_block_of_their_values(shape):
    """``holds_exactly`` (behind float32 copies, rescaled heads and scaled witnesses) compares a
    block at a time: it agrees with one comparison of the whole, wherever the one changed value
    lies (first row, a block boundary, the last, partial block)."""
    from logitkit.audit.exact_rows import BLOCK_ENTRIES
    from logitkit.audit.verify import float32_copy, holds_exactly

    values = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    exact = values.astype(np.float64)
    assert holds_exactly(values, lambda part: exact[part])
    assert float32_copy(exact) is not None
    step = max(1, BLOCK_ENTRIES // int(np.prod(shape[1:])))
    for row in sorted({0, min(step, shape[0] - 1), shape[0] - 1}):
        changed = exact.copy()
        changed[row] = np.nextafter(changed[row], np.inf)  # next float64: no float32 value
        assert not np.array_equal(values, changed)  # the reference: one whole comparison
        assert not holds_exactly(values, lambda part, changed=changed: changed[part])
        assert float32_copy(changed) is None


def largest_by_sorting(row: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest values of ``row`` (NaN above everything, as ``np.sort`` puts it)."""
    return np.sort(row)[len(row) - count:]


@pytest.mark.parametrize(("n_columns", "count"), [(4, 2), (5, 5), (300, 64), (1000, 64),
                                                  (151936 // 64, 7), (20000, 1)])
def test_largest_columns_are_those_of_a_full_sort(n_columns, count):
    rng = np.random.default_rng(n_columns + count)
    logits = (rng.normal(size=(6, n_columns)) * np.exp(rng.normal(size=n_columns)))
    logits = logits.astype(np.float32)
    logits[0] = np.round(logits[0])  # ties at the floor
    logits[1, rng.integers(0, n_columns, size=max(1, n_columns // 3))] = -np.inf
    logits[2] = -np.inf
    logits[3, rng.integers(0, n_columns, size=2)] = np.nan
    columns = largest_columns(logits, count)
    assert columns.shape == (6, count) and columns.dtype == np.int64
    for row, chosen in zip(logits, columns, strict=True):
        assert np.all(np.diff(chosen) > 0) and chosen.min() >= 0  # distinct, ascending
        picked = np.sort(row[chosen])
        expected = largest_by_sorting(row, count)
        assert np.array_equal(np.isnan(picked), np.isnan(expected))
        assert np.array_equal(picked[~np.isnan(picked)], expected[~np.isnan(expected)])


def test_an_audit_of_a_numpy_head_does_not_import_torch(tmp_path):
    """torch's import is about 260 MiB of the process: the audit (library and CLI) needs none."""
    head = head_with_interior_rows(3, n=600, d=6)
    np.save(tmp_path / "w.npy", head)
    code = ("import sys, numpy as np\n"
            "from logitkit.audit import check_argmaxable\nfrom logitkit.cli import main\n"
            f"w = np.load({str(tmp_path / 'w.npy')!r})\n"
            "r = check_argmaxable(w, show_progress=False)\n"
            f"main(['audit', {str(tmp_path / 'w.npy')!r}, '--json', "
            f"{str(tmp_path / 'out.json')!r}])\n"
            "print(r.counts['unargmaxable'], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    written = json.loads((tmp_path / "out.json").read_text())["counts"]["unargmaxable"]
    assert written >= 40 and done.stdout.split()[-2:] == [str(written), "False"]


@pytest.mark.parametrize("keep", [False, True])
def test_the_exact_stage_starts_with_records_of_the_open_classes_only(monkeypatch, keep):
    """While the exact stage runs (its workers forked from this process), the audit holds one
    verdict record per class handed to it, none for the classes the fast stage proved; the
    proved classes' records are made when the result is put together, with the margins and
    witnesses of an audit that keeps every record (written here from the witnesses)."""
    import gc

    import logitkit.audit.argmaxable as argmaxable_module
    from logitkit.audit.decision import Decision

    weight = head_with_interior_rows(3, n=600)
    live = []
    original = argmaxable_module.decide_many

    def counting(weight_, bias, classes, *args, **kwargs):
        live.append((sum(isinstance(o, Decision) for o in gc.get_objects()), len(classes)))
        return original(weight_, bias, classes, *args, **kwargs)

    monkeypatch.setattr(argmaxable_module, "decide_many", counting)
    result = check_argmaxable(weight, keep_witnesses=keep, show_progress=False)
    (records, handed), = live
    proved = int((result.stage == "fast").sum())
    assert proved >= 100 and handed >= 100 and records <= handed
    assert proved + handed == len(weight)
    assert sorted(set(result.stage.tolist())) == ["exact", "fast"]
    if keep:
        for k in np.flatnonzero(result.stage == "fast").tolist():
            z = result.witnesses[k].astype(np.float64)
            assert wins_in_float64(weight, k, z)
            logits = weight.astype(np.float64) @ z
            scale = np.median(np.linalg.norm(weight.astype(np.float64), axis=1))
            margin = (logits[k] - np.delete(logits, k).max()) / (np.linalg.norm(z) * scale)
            assert result.margin[k] == pytest.approx(margin, abs=1e-6)  # float32 logits
