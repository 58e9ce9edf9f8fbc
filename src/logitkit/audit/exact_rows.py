"""A head that float32 holds exactly, read as float64 without a float64 copy.

Every check of the audit is computed in float64. Heads stored in float32, bf16, fp16 or GGUF
blocks are exact in float32 (also after the audit's power-of-two rescaling), so their float64
values are the float32 ones upcast: :class:`ExactRows` keeps only the float32 rows (half the
memory of a float64 copy, and the same array the float32 products use) and upcasts what is asked
for: rows (``rows[ids]``, exactly the float64 values), and whole-head products ``W x`` and
``Z W^T`` a block of rows at a time (each product a float64 dot product of the same values;
only the summation order may differ from one product over a float64 array, which the rounding
bounds of :mod:`~logitkit.audit.verify` allow for).

Example::

    import numpy as np
    from logitkit.audit.exact_rows import ExactRows, logits_of
    W = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    rows = ExactRows(W)
    x = np.array([1.0, 2.0, 3.0])
    assert np.array_equal(rows[[1, 3]], W[[1, 3]].astype(np.float64))
    assert np.allclose(rows @ x, W.astype(np.float64) @ x, rtol=1e-15)
    assert logits_of(rows, x[None]).shape == (1, 5)
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_ENTRIES = 2**18  # entries upcast per block of rows (2 MB of float64: in cache)


def block_rows(weight: np.ndarray | ExactRows) -> int:
    """Rows per block of a blockwise float64 pass over ``weight`` (any array: a row is
    everything past its first axis, one entry for a 1-D array)."""
    return max(1, BLOCK_ENTRIES // max(1, int(np.prod(weight.shape[1:]))))


class ExactRows:
    """The float64 view of a float32 head (module doc): ``rows[i]``, ``rows @ x``, ``sum``.

    Args:
        rows32: (V, d) float32 rows, C-contiguous.

    Raises:
        ValueError: ``rows32`` is not a 2-D float32 array.

    Example:
        >>> import numpy as np
        >>> rows = ExactRows(np.array([[1.5, 2.0], [0.25, -1.0]], dtype=np.float32))
        >>> rows[1].dtype, (rows @ np.ones(2)).tolist(), rows.shape
        (dtype('float64'), [3.5, -0.75], (2, 2))
    """

    dtype = np.dtype(np.float64)
    ndim = 2

    def __init__(self, rows32: np.ndarray) -> None:
        if rows32.dtype != np.float32 or rows32.ndim != 2:
            raise ValueError(f"ExactRows needs 2-D float32 rows, got {rows32.dtype} "
                             f"{rows32.shape}")
        self.rows32 = np.ascontiguousarray(rows32)
        self.shape = rows32.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.rows32[index], dtype=np.float64)

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        """``W x`` in float64 for ``x`` of shape (d,) or (d, m)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((len(self),) + x.shape[1:])
        step = block_rows(self)
        for start in range(0, len(self), step):
            out[start:start + step] = self[start:start + step] @ x
        return out

    def sum(self, axis: int) -> np.ndarray:
        """The float64 column sums (``axis=0``, the only one asked for)."""
        if axis != 0:
            raise ValueError("ExactRows.sum supports axis=0 only")
        total = np.zeros(self.shape[1])
        step = block_rows(self)
        for start in range(0, len(self), step):
            total += self[start:start + step].sum(0)
        return total


def logits_of(weight: np.ndarray | ExactRows, zs: np.ndarray) -> np.ndarray:
    """``Z W^T`` in float64, (B, V) with rows contiguous, for a float64 array or ExactRows."""
    if not isinstance(weight, ExactRows):
        return zs @ weight.T
    zs = np.asarray(zs, dtype=np.float64)
    out = np.empty((len(zs), len(weight)))
    step = block_rows(weight)
    for start in range(0, len(weight), step):
        out[:, start:start + step] = zs @ weight[start:start + step].T
    return out


def row_squares_of(weight: np.ndarray | ExactRows, rows: np.ndarray | None = None) -> np.ndarray:
    """``|w_i|_2^2`` in float64 for each of ``rows`` (None: every row), a block at a time."""
    count = len(weight) if rows is None else len(rows)
    squares = np.empty(count)
    step = block_rows(weight)
    for start in range(0, count, step):
        part = slice(start, start + step)
        block = np.asarray(weight[part] if rows is None else weight[rows[part]],
                           dtype=np.float64)
        squares[part] = np.einsum("ij,ij->i", block, block)
    return squares
