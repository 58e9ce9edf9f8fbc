"""Loops over blocks of ``B x V`` logits hold one block at a time, not two.

Each of these loops used to compute the next block's logits while the last block's were still
bound to a local name, so at its peak it held two blocks: on a 151936-row head 2 x 64 MiB in the
witness checks of the search (the largest allocation after the head and the pool's rows).
Measured with tracemalloc (NumPy reports its buffers to it) against the size of one block.
"""

from __future__ import annotations

import numpy as np
import pytest

from logitkit.audit import certify, verify
from logitkit.audit.smooth_witness import rivals_at
from tests.audit_references import traced_peak

N_ROWS, D, N_INPUTS = 8192, 16, 256


def _peak_mib(call) -> float:
    return traced_peak(call) / 2**20


@pytest.fixture
def head(monkeypatch):
    """A head, inputs at ``2 w_k`` and blocks of 1 MiB of float32 logits (32 inputs each)."""
    monkeypatch.setattr(verify, "LOGIT_BLOCK_BYTES", 2**20)
    rng = np.random.default_rng(0)
    weight32 = rng.normal(size=(N_ROWS, D)).astype(np.float32)
    weight = weight32.astype(np.float64)
    ids = rng.choice(N_ROWS, N_INPUTS, replace=False)
    return weight, weight32, ids, 2.0 * weight[ids], np.linalg.norm(weight, axis=1)


def _naive_margins(weight: np.ndarray, ids: np.ndarray, z: np.ndarray) -> np.ndarray:
    logits = z @ weight.T
    own = logits[np.arange(len(ids)), ids].copy()
    logits[np.arange(len(ids)), ids] = -np.inf
    return own - logits.max(1)


@pytest.mark.parametrize("float32", [True, False])
def test_witness_margins_hold_one_block(head, float32):
    weight, weight32, ids, z, norms = head
    out = {}
    peak = _peak_mib(lambda: out.update(result=verify.witness_margins(
        weight, None, ids, z, weight32=weight32 if float32 else None, row_norms=norms,
        rivals=8)))
    block_mib = 1.0 if float32 else 2.0  # 32 inputs x 8192 rows, float32 or float64
    assert peak < 1.25 * block_mib, peak  # two blocks before
    margins, _, top = out["result"]
    np.testing.assert_allclose(margins, _naive_margins(weight, ids, z), rtol=1e-5, atol=1e-4)
    assert top.shape == (N_INPUTS, 8) and not np.any(top == ids[:, None])


def test_rivals_at_holds_one_block(head):
    _, weight32, ids, z, _ = head
    out = {}
    peak = _peak_mib(lambda: out.update(rivals=rivals_at(weight32, None, ids, z, 8, block=256)))
    assert peak < 1.25, peak
    logits = z @ weight32.T.astype(np.float64)
    logits[np.arange(N_INPUTS), ids] = -np.inf
    expected = np.sort(np.argsort(-logits, axis=1)[:, :8], axis=1)
    assert np.array_equal(np.sort(out["rivals"], axis=1), expected)


def test_screen_holds_one_block(head):
    weight, weight32, ids, z, norms = head
    screen_ids = np.arange(0, N_ROWS, 2)  # 4096 rows: 64 inputs per 1 MiB block
    out = {}
    peak = _peak_mib(lambda: out.update(beaten=certify._beaten_in_screen(
        weight, (screen_ids, weight32[screen_ids]), ids, z.astype(np.float32),
        np.full(N_INPUTS, 2.0), norms)))
    assert peak < 1.5, peak  # the screen's rows (256 KiB) and one block; 2.3 MiB before
    logits = z @ weight[screen_ids].T
    own = 2.0 * (weight[ids] ** 2).sum(1)
    logits[screen_ids[None, :] == ids[:, None]] = -np.inf
    beaten = out["beaten"]
    assert 0 < beaten.sum() < N_INPUTS
    assert np.all(logits.max(1)[beaten] > own[beaten])  # beaten within the screen, for real
