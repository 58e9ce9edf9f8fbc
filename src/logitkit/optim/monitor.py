"""Detect the +-1/weight_decay pile-up of sign optimizers (Tiger, Lion) in weight rows, and warn
before it happens.

With decoupled decay, a sign step ``p <- p (1 - s wd) - s u`` has the fixed point ``-u / wd`` for a
constant sign ``u``; rows driven by stale momentum settle there (Su, 2023, kexue.fm/archives/9736).

* ``find_saturated_rows``: rows with at least ``fraction`` of their entries within ``tolerance`` of
  +-1/wd. Works through blocks of rows in float32 (float64 weights stay float64), so the extra
  memory is at most about 10% of the matrix (for matrices with more than a handful of columns).
* ``SaturationMonitor``: counts saturated rows every ``every`` steps and tracks the early-warning
  signal: rows that moved away from zero while they got no gradient (only stale momentum does
  that; decay alone shrinks them), and how far their norm grew that way, as a fraction of the
  saturated norm ``sqrt(columns) / wd``. Lazy rows never move without gradient; plain Tiger on
  rare rows does, long before they saturate. It reads the weights and gradients only every
  ``track_every`` steps (default 20), so at its defaults it costs about 3% of a Tiger step.

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

from logitkit.optim.functional import _row_max_abs

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

    With ``wd = weight_decay`` and ``n`` entries per row (the product of ``weight.shape[1:]``)::

        x is saturated     <=>  (1 - tolerance) / wd <= |x| <= (1 + tolerance) / wd
        row i is saturated <=>  #{saturated entries of weight[i]} >= fraction * n

    The comparisons are exact in float32 (float64 for float64 weights); the matrix is read in
    blocks of rows, so the extra memory is at most about 10% of it.

    Args:
        weight (Tensor): the weight, ``dim >= 2``, rows along dim 0 (required)
        weight_decay (float): the optimizer's decoupled decay, > 0 and finite (required)
        tolerance (float, optional): relative half-width of the band around 1/wd (default: 0.05)
        fraction (float, optional): share of a row's entries in the band, in (0, 1] (default: 0.5)

    Returns:
        Tensor: the saturated rows' indices (int64, ascending, on ``weight``'s device).

    Raises:
        ValueError: ``weight`` is not a tensor with ``dim >= 2`` or has a NaN/inf entry, or
            ``weight_decay``, ``tolerance`` or ``fraction`` is out of range.

    Reference: seed 001 (https://kexue.fm/archives/9736): the fixed point of a sign update with
    decoupled decay is +-1/weight_decay.

    Example::

        >>> import torch
        >>> from logitkit.optim import find_saturated_rows
        >>> weight = torch.tensor([[100.0, -98.0], [100.0, 0.5], [3.0, 0.0]])
        >>> find_saturated_rows(weight, weight_decay=0.01)
        tensor([0, 1])
        >>> find_saturated_rows(weight, weight_decay=0.01, fraction=1.0)
        tensor([0])
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
                torch.isfinite(_row_max_abs(magnitude)).all()):
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
    return _row_max_abs(grad.reshape(rows, -1)).eq(0)


class SaturationMonitor:
    """Training callback for the +-1/weight_decay pile-up of Tiger and Lion (module docstring).

    Call ``step()`` once per optimizer step, after ``optimizer.step()`` and before the gradients
    are zeroed, or let ``attach(optimizer)`` do it from the optimizer's step hook (works inside
    Hugging Face ``Trainer`` too). The constructor checks once (step 0); then every ``every``
    calls, ``history`` gets one entry per watched weight: ``{"step", "name", "rows",
    "saturated", "grew_without_gradient", "drifting", "max_drift"}``:

    * ``saturated``: rows found by ``find_saturated_rows`` (row indices in ``latest[name]``);
    * drift, updated at the *tracking calls*: every ``track_every``-th call and every check
      (construction is call 0). For tracking calls ``t' < t`` with no tracking call between them,
      row ``i`` of a weight with ``n`` entries per row, ``|w_i(t)|`` its norm after call ``t``,
      and ``g_i(t)`` its gradient row at call ``t`` (a weight without ``.grad``: zero)::

          drift_i = wd / sqrt(n) * sum over tracking intervals (t', t] with g_i(t) = 0 of
                    (|w_i(t)| - |w_i(t')|)

      the growth of its norm over the intervals at whose end it gets no gradient, as a fraction
      of the saturated norm ``sqrt(n) / wd``. For a row without gradient over a whole interval
      that is exactly its growth without gradient there; a row with a gradient at some call of
      the interval but none at its end has those calls counted too (a Tiger or Lion step with a
      gradient moves a row no farther than one with stale momentum). ``drifting`` counts rows
      whose drift reached ``warn_drift``, ``max_drift`` is the largest; ``drifting_rows(name)``
      lists them;
    * ``grew_without_gradient``: rows with a zero gradient row at the last tracking call whose
      norm grew over the interval it closed (weight decay alone only shrinks such a row).

    ``track_every=1`` gives the per-step drift of earlier versions: the sum of the norm changes
    over the steps at which the row got no gradient.

    Cost: a call that is not a tracking call or a check does no tensor work. A tracking call
    reads every weight and gradient once (row norms, zero gradient rows), a check runs
    ``find_saturated_rows``. At the defaults, on a 32768 x 256 embedding and three 1024 x 256
    matrices (1 thread), that is about 3% of a Tiger step, against 63% for tracking every call.

    Args:
        weights (nn.Module, Mapping[str, Tensor] or Iterable[Tensor]): what to watch (required)
        weight_decay (float): the optimizer's decoupled decay for them, > 0 (required)
        every (int, optional): calls of ``step()`` between saturation checks, >= 1 (default: 100)
        tolerance (float, optional): passed to ``find_saturated_rows`` (default: 0.05)
        fraction (float, optional): passed to ``find_saturated_rows`` (default: 0.5)
        track_drift (bool, optional): track rows that move without gradient (default: True)
        warn_drift (float, optional): drift at which a row counts as drifting, > 0 (default: 0.05)
        track_every (int, optional): calls between drift updates besides the checks, >= 1
            (default: 20)

    A module's parameters with ``dim >= 2`` are watched under their names; a mapping gives the
    names; an iterable of tensors is named ``"0"``, ``"1"``, ...

    Raises:
        ValueError: nothing with ``dim >= 2`` to watch, ``every``, ``track_every`` or
            ``warn_drift`` is out of range, or the first check fails (``find_saturated_rows``: a
            bad ``weight_decay``, ``tolerance`` or ``fraction``, or a NaN/inf weight).

    Reference: seed 001 (https://kexue.fm/archives/9736): sign updates push rarely seen rows to
    +-1/weight_decay.

    Example::

        >>> import torch
        >>> from logitkit.optim import SaturationMonitor, Tiger
        >>> embed = torch.nn.Embedding(3, 2)
        >>> _ = torch.nn.init.ones_(embed.weight)
        >>> optimizer = Tiger(embed.parameters(), lr=0.1, weight_decay=0.01)
        >>> monitor = SaturationMonitor(embed, weight_decay=0.01, every=4, track_every=2)
        >>> handle = monitor.attach(optimizer)
        >>> for row in (0, 1, 1, 1):  # row 0 once, then stale momentum moves it without gradient
        ...     optimizer.zero_grad()
        ...     (-embed(torch.tensor([row])).sum()).backward()
        ...     optimizer.step()
        >>> entry = monitor.history[-1]  # row 0 has no gradient at call 4 and grew since call 2
        >>> entry["step"], entry["saturated"], entry["grew_without_gradient"]
        (4, 0, 1)
        >>> rows, drift = monitor.drifting_rows("weight", threshold=1e-3)
        >>> rows.tolist(), round(float(drift[0]), 5)  # 0.01 / sqrt(2) * (norm after 4 - at 0)
        ([0], 0.00395)
    """

    def __init__(self, weights: nn.Module | Mapping[str, Tensor] | Iterable[Tensor],
                 weight_decay: float, *, every: int = 100, tolerance: float = 0.05,
                 fraction: float = 0.5, track_drift: bool = True, warn_drift: float = 0.05,
                 track_every: int = 20) -> None:
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
        if not isinstance(track_every, int) or track_every < 1:
            raise ValueError(f"track_every must be an int >= 1, got {track_every!r}")
        if not 0.0 < warn_drift < math.inf:
            raise ValueError(f"warn_drift must be > 0 and finite, got {warn_drift!r}")
        self.weights = named
        self.weight_decay = weight_decay
        self.every = every
        self.track_every = track_every
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
        """Call ``step()`` after every ``optimizer.step()`` (a step post-hook).

        Args:
            optimizer (torch.optim.Optimizer): the optimizer to follow (required)

        Returns:
            torch.utils.hooks.RemovableHandle: ``handle.remove()`` detaches the monitor.

        Example::

            >>> import torch
            >>> from logitkit.optim import SaturationMonitor, Tiger
            >>> model = torch.nn.Linear(2, 2)
            >>> optimizer = Tiger(model.parameters())
            >>> monitor = SaturationMonitor(model, weight_decay=0.01)
            >>> handle = monitor.attach(optimizer)
            >>> model(torch.ones(1, 2)).sum().backward()
            >>> optimizer.step()
            >>> monitor.calls
            1
            >>> handle.remove()
        """
        return optimizer.register_step_post_hook(lambda *_: self.step())

    def step(self) -> None:
        """Record one optimizer step: update the drift at the tracking calls (every
        ``track_every`` calls and every check) and, every ``every`` calls, ``check()``.

        Call it after ``optimizer.step()`` and before the gradients are zeroed (the gradient
        tells which rows moved without one).

        Returns:
            None: ``calls`` is updated; at tracking calls ``drift`` and
            ``grew_without_gradient``, at checks ``history``.

        Example::

            >>> import torch
            >>> from logitkit.optim import SaturationMonitor
            >>> monitor = SaturationMonitor({"w": torch.zeros(2, 3)}, weight_decay=0.01, every=1)
            >>> monitor.step()
            >>> monitor.calls, len(monitor.history)
            (1, 2)
        """
        self.calls += 1
        checking = self.calls % self.every == 0
        if self.track_drift and (checking or self.calls % self.track_every == 0):
            self._track()
        if checking:
            self.check(step=self.calls)

    @torch.no_grad()
    def _track(self) -> None:
        """Close the tracking interval: add the norm growth of the rows without gradient now."""
        for name, weight in self.weights.items():
            norms = _row_norms(weight)
            idle = _idle_rows(weight)
            growth = norms - self._norms[name]
            self.grew_without_gradient[name] = int((idle & growth.gt(0)).sum())
            scale = self.weight_decay / math.sqrt(max(1, math.prod(weight.shape[1:])))
            self.drift[name] += torch.where(idle, growth, 0.0) * scale
            self._norms[name] = norms

    def drifting_rows(self, name: str, threshold: float | None = None) -> tuple[Tensor, Tensor]:
        """The rows of ``name`` whose drift reached ``threshold``, most drifted first.

        Args:
            name (str): a watched weight's name (required)
            threshold (float, optional): minimum drift; None: ``warn_drift`` (default: None)

        Returns:
            tuple[Tensor, Tensor]: the row indices and their drift, in descending drift.

        Raises:
            ValueError: ``name`` is not watched.

        Example::

            >>> import torch
            >>> from logitkit.optim import SaturationMonitor
            >>> weight = torch.zeros(3, 4)
            >>> monitor = SaturationMonitor({"w": weight}, weight_decay=0.1, track_every=1)
            >>> weight[1] = 5.0  # moves without a gradient: norm 10 = 0.5 * sqrt(4) / 0.1
            >>> monitor.step()
            >>> monitor.drifting_rows("w")
            (tensor([1]), tensor([0.5000]))
        """
        if name not in self.weights:
            raise ValueError(f"unknown weight {name!r}; watched: {sorted(self.weights)}")
        drift = self.drift[name]
        rows = (drift >= (self.warn_drift if threshold is None else threshold)).nonzero()
        rows = rows.squeeze(1)
        order = drift[rows].argsort(descending=True)
        return rows[order], drift[rows[order]]

    def check(self, step: int) -> dict[str, int]:
        """Count the saturated rows of every watched weight now and record them.

        Appends one ``history`` entry per weight and sets ``latest[name]`` to the row indices.

        Args:
            step (int): the step number to record (required)

        Returns:
            dict[str, int]: the number of saturated rows per weight name.

        Example::

            >>> import torch
            >>> from logitkit.optim import SaturationMonitor
            >>> monitor = SaturationMonitor({"w": torch.full((2, 3), 10.0)}, weight_decay=0.1)
            >>> monitor.check(step=7)
            {'w': 2}
            >>> monitor.latest["w"]
            tensor([0, 1])
        """
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
        """The steps checked so far and the value of a ``history`` field at each, for one weight.

        Args:
            name (str): a watched weight's name (required)
            key (str, optional): a ``history`` field (default: ``"saturated"``)

        Returns:
            tuple[list[int], list]: the steps, and the field's value at each step.

        Raises:
            ValueError: ``name`` is not watched or ``key`` is not a history field.

        Example::

            >>> import torch
            >>> from logitkit.optim import SaturationMonitor
            >>> weight = torch.full((2, 3), 10.0)
            >>> monitor = SaturationMonitor({"w": weight}, weight_decay=0.1, every=1)
            >>> monitor.step()
            >>> monitor.counts("w")
            ([0, 1], [2, 2])
        """
        entries = [h for h in self.history if h["name"] == name]
        if not entries:
            raise ValueError(f"unknown weight {name!r}; watched: {sorted(self.weights)}")
        if key not in entries[0]:
            raise ValueError(f"unknown history field {key!r}; fields: {sorted(entries[0])}")
        return [h["step"] for h in entries], [h[key] for h in entries]
