"""Detect the +-1/weight_decay pile-up of sign optimizers (Tiger, Lion) in weight rows, and warn
before it happens.

With decoupled decay, a sign step ``p <- p (1 - s wd) - s u`` has the fixed point ``-u / wd`` for a
constant sign ``u``; rows driven by stale momentum settle there (Su, 2023, kexue.fm/archives/9736).

* ``find_saturated_rows``: rows with at least ``fraction`` of their entries within ``tolerance`` of
  +-1/wd. Works through blocks of rows in float32 (float64 weights stay float64), so the extra
  memory is at most about 10% of the matrix (for matrices with more than a handful of columns).
* ``SaturationMonitor``: counts saturated rows every ``every`` steps and, at every step, tracks the
  early-warning signal: rows that moved away from zero while their gradient row was zero (only
  stale momentum does that; decay alone shrinks them), and how far their norm grew that way, as a
  fraction of the saturated norm
  ``sqrt(columns) / wd``. Lazy rows never move without gradient; plain Tiger on rare rows does,
  long before they saturate.

Example::

    >>> weight = torch.full((3, 4), 100.0)
    >>> find_saturated_rows(weight, weight_decay=0.01)
    tensor([0, 1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from logitkit.optim.functional import gradient_sums, row_max_abs

__all__ = ["SaturationMonitor", "find_saturated_rows"]

# elements per block: temporaries are one float32 block and two bool blocks (6 bytes per element),
# at most a fifteenth of the matrix (4 bytes per element) -> <= 10% extra; capped for the cache.
# Counts are exact in float32 up to 2^24 columns.
MAX_BLOCK = 1 << 20
BLOCK_FRACTION = 1 / 15


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_blocks(weight: Tensor) -> Iterable[tuple[int, Tensor]]:
    """(first row, block as a rows x columns matrix) over ``weight`` (dim 0 = rows)."""
    rows = weight.shape[0]
    cols = max(1, weight[0].numel()) if rows else 1
    budget = min(MAX_BLOCK, max(1, int(weight.numel() * BLOCK_FRACTION)))
    block = max(1, budget // cols)
    for start in range(0, rows, block):
        yield start, weight[start : start + block].reshape(-1, cols)


def _inner_bounds(low: float, high: float, dtype: torch.dtype) -> tuple[float, float]:
    """The closed interval [low, high] shrunk to values of ``dtype``: ``x >= lo and x <= hi`` on
    ``dtype`` numbers then equals the exact comparison with the real bounds."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    lo, hi = np_dtype(low), np_dtype(high)
    if float(lo) < low:
        lo = np.nextafter(lo, np_dtype(np.inf))
    if float(hi) > high:
        hi = np.nextafter(hi, np_dtype(-np.inf))
    return float(lo), float(hi)


def find_saturated_rows(weight: Tensor, weight_decay: float, *, tolerance: float = 0.05,
                        fraction: float = 0.5) -> Tensor:
    """Indices of the rows (dim 0) of ``weight`` that sit at +-1/weight_decay.

    An entry ``x`` is saturated when ``| |x| - 1/wd | <= tolerance / wd``; a row is saturated when
    at least ``fraction`` of its entries are. Returns a LongTensor of row indices, ascending.
    """
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise ValueError("weight must be a tensor with at least 2 dimensions (rows along dim 0), "
                         f"got {getattr(weight, 'shape', type(weight))}")
    if not (isinstance(weight_decay, (int, float)) and 0.0 < weight_decay < math.inf):
        raise ValueError(f"weight_decay must be > 0 and finite (the pile-up sits at "
                         f"1/weight_decay), got {weight_decay!r}")
    if not 0.0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be >= 0 and finite, got {tolerance!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    values = weight.detach()
    dtype = _compute_dtype(values.dtype)
    bound = 1.0 / weight_decay
    lo, hi = _inner_bounds(bound - tolerance * bound, bound + tolerance * bound, dtype)
    cols = max(1, values[0].numel()) if values.shape[0] else 1
    need = fraction * cols
    saturated = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
    buffer = near = high = None
    for start, block in _row_blocks(values):
        if buffer is None:
            buffer = torch.empty(block.shape, dtype=dtype, device=values.device)
            near = torch.empty(block.shape, dtype=torch.bool, device=values.device)
            high = torch.empty_like(near)
        n = block.shape[0]
        magnitude, near_n, high_n = buffer[:n], near[:n], high[:n]
        if block.dtype == dtype:
            torch.abs(block, out=magnitude)
        else:
            magnitude.copy_(block).abs_()
        if not math.isfinite(magnitude.sum().item()) and not bool(
                torch.isfinite(row_max_abs(magnitude)).all()):
            raise ValueError("weight contains NaN or infinite values")
        torch.ge(magnitude, lo, out=near_n)
        torch.le(magnitude, hi, out=high_n)
        near_n.logical_and_(high_n)
        # count in the float buffer: summing bools would first widen the block to int64
        counts = magnitude.copy_(near_n).sum(dim=1)
        saturated[start : start + n] = counts >= need
    return saturated.nonzero().squeeze(1)


def _row_norms(weight: Tensor) -> Tensor:
    """Euclidean norm of each row, in float32 (float64 weights: float64), block by block."""
    values = weight.detach()
    dtype = _compute_dtype(values.dtype)
    out = torch.empty(values.shape[0], dtype=dtype, device=values.device)
    for start, block in _row_blocks(values):
        out[start : start + block.shape[0]] = torch.linalg.vector_norm(block, dim=1, dtype=dtype)
    return out


def _idle_rows(weight: Tensor) -> Tensor:
    """Bool per row: the weight's gradient row is all zero (no gradient at all: every row)."""
    grad = weight.grad if weight.is_leaf else None
    rows = weight.shape[0]
    if grad is None:
        return torch.ones(rows, dtype=torch.bool, device=weight.device)
    if grad.is_sparse:
        grad = grad.coalesce()
        touched = grad.values().reshape(grad.values().shape[0], -1).ne(0).any(dim=1)
        idle = torch.ones(rows, dtype=torch.bool, device=weight.device)
        idle[grad.indices()[0][touched]] = False
        return idle
    sums = gradient_sums(grad, per_row=True)
    idle = sums.eq(0)
    if bool(idle.any()):
        idle = row_max_abs(grad.reshape(rows, -1)).eq(0)
    return idle


class SaturationMonitor:
    """Training callback for the +-1/weight_decay pile-up (module docstring).

    Call ``step()`` once per optimizer step, after ``optimizer.step()`` and before the gradients
    are zeroed, or let ``attach(optimizer)`` do it from the optimizer's step hook (works inside
    Hugging Face ``Trainer`` too). Every ``every`` calls, ``history`` gets one entry per watched
    weight: ``{"step", "name", "rows", "saturated", "grew_without_gradient", "drifting",
    "max_drift"}``:

    * ``saturated``: rows found by ``find_saturated_rows`` (row indices in ``latest[name]``);
    * ``grew_without_gradient``: rows whose norm grew at the last step although their gradient
      row was zero (weight decay alone only shrinks such a row);
    * drift: for each row, the growth of its norm summed over the steps in which its gradient was
      zero, divided by the saturated norm ``sqrt(columns) / wd``; ``drifting`` counts rows whose
      drift reached ``warn_drift``, ``max_drift`` is the largest. ``drifting_rows(name)`` lists
      them. Tracking costs one pass over each weight and gradient per call; ``track_drift=False``
      turns it off.

    ``weights``: a module (all its parameters with ``dim >= 2`` are watched, by name), a mapping
    name -> tensor, or an iterable of tensors (named ``"0"``, ``"1"``, ...).
    """

    def __init__(self, weights: nn.Module | Mapping[str, Tensor] | Iterable[Tensor],
                 weight_decay: float, *, every: int = 100, tolerance: float = 0.05,
                 fraction: float = 0.5, track_drift: bool = True, warn_drift: float = 0.05) -> None:
        if isinstance(weights, nn.Module):
            named = {n: p for n, p in weights.named_parameters() if p.dim() >= 2}
        elif isinstance(weights, Mapping):
            named = dict(weights)
        else:
            named = {str(i): w for i, w in enumerate(weights)}
        if not named:
            raise ValueError("nothing to watch: no weight with at least 2 dimensions was given")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not 0.0 < warn_drift < math.inf:
            raise ValueError(f"warn_drift must be > 0 and finite, got {warn_drift!r}")
        self.weights = named
        self.weight_decay = weight_decay
        self.every = every
        self.options = {"tolerance": tolerance, "fraction": fraction}
        self.track_drift = track_drift
        self.warn_drift = warn_drift
        self.calls = 0
        self.history: list[dict[str, Any]] = []
        self.latest: dict[str, Tensor] = {}
        self.drift = {name: torch.zeros(w.shape[0], dtype=_compute_dtype(w.dtype),
                                        device=w.device) for name, w in named.items()}
        self.grew_without_gradient = {name: 0 for name in named}
        self._norms = {name: _row_norms(w) for name, w in named.items()} if track_drift else {}
        self.check(step=0)

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call ``step()`` after every ``optimizer.step()``; returns the hook handle
        (``handle.remove()`` detaches)."""
        return optimizer.register_step_post_hook(lambda *_: self.step())

    def step(self) -> None:
        """Call once per optimizer step; tracks drift, and checks saturation every ``every``."""
        self.calls += 1
        if self.track_drift:
            self._track()
        if self.calls % self.every == 0:
            self.check(step=self.calls)

    @torch.no_grad()
    def _track(self) -> None:
        for name, weight in self.weights.items():
            norms = _row_norms(weight)
            idle = _idle_rows(weight)
            growth = norms - self._norms[name]
            self.grew_without_gradient[name] = int((idle & growth.gt(0)).sum())
            scale = self.weight_decay / math.sqrt(max(1, weight[0].numel()))
            self.drift[name] += torch.where(idle, growth, 0.0) * scale
            self._norms[name] = norms

    def drifting_rows(self, name: str, threshold: float | None = None) -> tuple[Tensor, Tensor]:
        """Rows of ``name`` whose drift reached ``threshold`` (default ``warn_drift``), most
        drifted first, and their drift."""
        if name not in self.weights:
            raise ValueError(f"unknown weight {name!r}; watched: {sorted(self.weights)}")
        drift = self.drift[name]
        rows = (drift >= (self.warn_drift if threshold is None else threshold)).nonzero()
        rows = rows.squeeze(1)
        order = drift[rows].argsort(descending=True)
        return rows[order], drift[rows[order]]

    def check(self, step: int) -> dict[str, int]:
        """Count saturated rows now, record them under ``step`` and return name -> count."""
        counts = {}
        for name, weight in self.weights.items():
            rows = find_saturated_rows(weight, self.weight_decay, **self.options)
            self.latest[name] = rows
            counts[name] = int(rows.numel())
            drift = self.drift[name]
            self.history.append({
                "step": step, "name": name, "rows": int(weight.shape[0]),
                "saturated": counts[name],
                "grew_without_gradient": self.grew_without_gradient[name],
                "drifting": int((drift >= self.warn_drift).sum()),
                "max_drift": float(drift.max()) if drift.numel() else 0.0,
            })
        return counts

    def counts(self, name: str, key: str = "saturated") -> tuple[list[int], list[Any]]:
        """Steps checked and the value of ``key`` (a history field) for ``name`` at each."""
        entries = [h for h in self.history if h["name"] == name]
        if not entries:
            raise ValueError(f"unknown weight {name!r}; watched: {sorted(self.weights)}")
        if key not in entries[0]:
            raise ValueError(f"unknown history field {key!r}; fields: {sorted(entries[0])}")
        return [h["step"] for h in entries], [h[key] for h in entries]
