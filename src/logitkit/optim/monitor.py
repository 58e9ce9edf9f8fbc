"""Detect the +-1/weight_decay pile-up of sign optimizers (Tiger, Lion) in weight rows.

With decoupled decay, a sign step ``p <- p (1 - lr wd) - lr u`` has the fixed point ``-u / wd``
for a constant sign ``u``; rows driven by stale momentum settle there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SaturationMonitor", "find_saturated_rows"]


def find_saturated_rows(weight: Tensor, weight_decay: float, *, tolerance: float = 0.05,
                        fraction: float = 0.5) -> Tensor:
    """Indices of the rows (dim 0) of ``weight`` that sit at +-1/weight_decay.

    An entry ``x`` is saturated when ``| |x| - 1/wd | <= tolerance / wd``; a row is saturated when
    at least ``fraction`` of its entries are. Returns a LongTensor of row indices, ascending.
    """
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise ValueError("weight must be a tensor with at least 2 dimensions (rows along dim 0), "
                         f"got {getattr(weight, 'shape', type(weight))}")
    if not weight_decay > 0.0:
        raise ValueError(f"weight_decay must be > 0 (the pile-up sits at 1/weight_decay), "
                         f"got {weight_decay!r}")
    if not tolerance >= 0.0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    values = weight.detach().reshape(weight.shape[0], -1)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("weight contains NaN or infinite values")
    boundary = 1.0 / weight_decay
    near = (values.abs().double() - boundary).abs() <= tolerance * boundary
    return (near.double().mean(dim=1) >= fraction).nonzero().squeeze(1)


class SaturationMonitor:
    """Training callback: every ``every`` calls to ``step()``, count the saturated rows of each
    watched weight and append ``{"step", "name", "saturated", "rows"}`` to ``history``.

    ``weights``: a module (all its parameters with ``dim >= 2`` are watched, by name), a mapping
    name -> tensor, or an iterable of tensors (named ``"0"``, ``"1"``, ...).
    ``latest`` maps each name to the saturated row indices found at the last check.
    """

    def __init__(self, weights: nn.Module | Mapping[str, Tensor] | Iterable[Tensor],
                 weight_decay: float, *, every: int = 100, tolerance: float = 0.05,
                 fraction: float = 0.5) -> None:
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
        self.weights = named
        self.weight_decay = weight_decay
        self.every = every
        self.options = {"tolerance": tolerance, "fraction": fraction}
        self.calls = 0
        self.history: list[dict[str, Any]] = []
        self.latest: dict[str, Tensor] = {}
        self.check(step=0)

    def step(self) -> None:
        """Call once per optimizer step; checks the weights every ``every`` calls."""
        self.calls += 1
        if self.calls % self.every == 0:
            self.check(step=self.calls)

    def check(self, step: int) -> dict[str, int]:
        """Count saturated rows now, record them under ``step`` and return name -> count."""
        counts = {}
        for name, weight in self.weights.items():
            rows = find_saturated_rows(weight, self.weight_decay, **self.options)
            self.latest[name] = rows
            counts[name] = int(rows.numel())
            self.history.append({"step": step, "name": name, "saturated": counts[name],
                                 "rows": int(weight.shape[0])})
        return counts

    def counts(self, name: str) -> tuple[list[int], list[int]]:
        """Steps checked and the saturated-row count of ``name`` at each."""
        entries = [h for h in self.history if h["name"] == name]
        if not entries:
            raise ValueError(f"unknown weight {name!r}; watched: {sorted(self.weights)}")
        return [h["step"] for h in entries], [h["saturated"] for h in entries]
