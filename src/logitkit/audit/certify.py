"""Fast certification: batched witnesses ``z`` for many classes at once, verified in float32.

For a block of classes ``K`` and inputs ``Z`` (one column per class) the logits are one matmul,
``L = W Z + b`` (``V x |K|``). Class ``k_j`` is certified when its computed margin
``L[k_j, j] - max_{i != k_j} L[i, j]`` exceeds a rigorous bound on the float32 rounding error:
every computed logit is within ``gamma_n (|w_i| . |z| + |b_i|)`` of the exact one, with
``gamma_n = n u / (1 - n u)``, ``u = 2^-24`` and ``n = d + 3`` (the dot product, the bias and the
cast of float64 inputs to float32), and ``|w_i| . |z| <= |w_i|_2 |z|_2``; the margin bound is 4
times that (two logits, and room for the final comparison). So a certified class wins for the
exact weights at the float32 ``z`` that is kept as its witness.

Witnesses tried, in order, for the classes still open:

1. ``z = w_k`` (the nearest-neighbour input: it wins whenever ``|w_k|^2 + b_k > w_i . w_k + b_i``;
   it wins for every distinct row when all rows have the same norm and there is no bias);
2. with a bias, ``z = alpha w_k`` with ``alpha`` large enough that the weights outweigh the bias;
3. a few rounds of relaxation (Agmon-Motzkin): take the ``r`` rows that beat ``k`` most at the
   current ``z`` and project ``z`` in turn onto each half-space ``d_i . z + c_i >= delta``
   (``d_i = w_k - w_i``, ``c_i = b_k - b_i``), clipping to the box if there is one.

The rows that still beat ``k`` at its best ``z`` are returned as the starting active set of the
exact LP stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

UNIT_ROUNDOFF_32 = 2.0**-24


@dataclass
class FastOutcome:
    certified: np.ndarray  # bool, per class
    witnesses: np.ndarray  # float32 (n_classes, d); rows of uncertified classes are their best z
    rivals: np.ndarray  # int64 (n_classes, r): rows beating each class most at its best z


def _rounding_bound(d: int, weight_norm: float, bias_abs: float, z: torch.Tensor) -> torch.Tensor:
    n = d + 3
    gamma = n * UNIT_ROUNDOFF_32 / (1.0 - n * UNIT_ROUNDOFF_32)
    return 4.0 * gamma * (weight_norm * torch.linalg.vector_norm(z.double(), dim=1) + bias_abs)


def _margins(
    weight: torch.Tensor, bias: torch.Tensor | None, classes: torch.Tensor, z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins (float64) of each class at its ``z``, and the logits with the own class masked."""
    logits = z @ weight.T  # (B, V): rows contiguous, so the reductions below run along rows
    if bias is not None:
        logits += bias
    rows = torch.arange(len(classes), device=weight.device)
    own = logits[rows, classes].clone()
    logits[rows, classes] = -torch.inf
    return own.double() - logits.amax(1).double(), logits


def _relax(
    weight: torch.Tensor, bias: torch.Tensor | None, classes: torch.Tensor, z: torch.Tensor,
    rivals: torch.Tensor, box: float | None, target: torch.Tensor, sweeps: int,
) -> torch.Tensor:
    """Sequential projections of each ``z`` onto ``d_i . z + c_i >= target`` for its rivals."""
    diffs = weight[classes][:, None, :] - weight[rivals]  # (B, r, d)
    gaps = None if bias is None else bias[classes][:, None] - bias[rivals]
    norms2 = (diffs * diffs).sum(-1)
    z = z.clone()
    for _ in range(sweeps):
        for i in range(rivals.shape[1]):
            margin = (diffs[:, i] * z).sum(-1)
            if gaps is not None:
                margin = margin + gaps[:, i]
            shortfall = (target - margin).clamp_min(0)
            step = torch.where(norms2[:, i] > 0, shortfall / norms2[:, i].clamp_min(1e-30), 0.0)
            z += step[:, None] * diffs[:, i]
            if box is not None:
                z.clamp_(-box, box)
    return z


def _float32_at_most(value: float | None) -> float | None:
    """The largest float32 not above ``value``, so that clamped float32 inputs stay in the box."""
    if value is None:
        return None
    rounded = np.float32(value)
    return float(np.nextafter(rounded, np.float32(0)) if rounded > value else rounded)


def _initial_inputs(
    weight: torch.Tensor, bias: torch.Tensor | None, classes: torch.Tensor, box: float | None,
) -> list[torch.Tensor]:
    rows = weight[classes]
    candidates = [rows]
    if bias is not None:
        spread = float(bias.max() - bias.min())
        sq = (rows * rows).sum(1, keepdim=True).clamp_min(1e-30)
        candidates.append(rows * (1.0 + 4.0 * spread / sq))
    if box is not None:
        fitted = []
        for z in candidates:
            peak = z.abs().amax(1, keepdim=True).clamp_min(1e-30)
            fitted += [z * torch.clamp(box / peak, max=1.0), z * (box / peak)]
        fitted = [z.clamp(-box, box) for z in fitted]
        candidates = fitted
    return candidates


def certify_fast(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    classes: np.ndarray,
    *,
    box: float | None = None,
    block: int = 2048,
    rounds: int = 8,
    n_rivals: int = 64,
    n_relax: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> FastOutcome:
    """Certify as many of ``classes`` as possible with verified float32 witnesses (module doc).

    ``weight`` (V, d) and ``bias`` (V,) are float32 tensors on the compute device; work is done
    ``block`` classes at a time so that the ``V x block`` logits stay small. Relaxation uses the
    ``n_relax`` strongest rivals; the ``n_rivals`` strongest seed the exact LP.
    """
    n_rows, d = weight.shape
    box = _float32_at_most(box)
    n_rivals = min(n_rivals, n_rows - 1)
    weight_norm = float(torch.linalg.vector_norm(weight.double(), dim=1).max())
    bias_abs = 0.0 if bias is None else float(bias.abs().max())
    certified = np.zeros(len(classes), dtype=bool)
    witnesses = np.zeros((len(classes), d), dtype=np.float32)
    rivals_out = np.zeros((len(classes), n_rivals), dtype=np.int64)
    device = weight.device
    for start in range(0, len(classes), block):
        index = np.arange(start, min(start + block, len(classes)))
        ids = torch.as_tensor(classes[index], device=device)
        best_margin = torch.full((len(index),), -torch.inf, dtype=torch.float64, device=device)
        best_z = torch.zeros((len(index), d), dtype=weight.dtype, device=device)
        best_rivals = torch.zeros((len(index), n_rivals), dtype=torch.long, device=device)
        open_ = torch.ones(len(index), dtype=torch.bool, device=device)
        current_z, current_rivals = best_z.clone(), best_rivals.clone()
        candidates = _initial_inputs(weight, bias, ids, box)
        for step in range(len(candidates) + rounds):
            where = torch.nonzero(open_).flatten()
            if len(where) == 0:
                break
            if step < len(candidates):
                z = candidates[step][where]
            else:  # relax from the best candidate, then from the latest z, against its rivals
                first = step == len(candidates)
                z = (best_z if first else current_z)[where]
                rivals = (best_rivals if first else current_rivals)[where]
                target = 1e-3 * (torch.linalg.vector_norm(z, dim=1) * weight_norm + bias_abs)
                z = _relax(weight, bias, ids[where], z, rivals[:, :n_relax], box, target, 2)
            margin, logits = _margins(weight, bias, ids[where], z)
            verified = margin > _rounding_bound(d, weight_norm, bias_abs, z)
            rivals = torch.topk(logits[~verified], n_rivals, dim=1).indices
            open_where = where[~verified]
            current_z[open_where], current_rivals[open_where] = z[~verified], rivals
            take = verified | (margin > best_margin[where])
            best_margin[where[take]] = margin[take]
            best_z[where[take]] = z[take]
            improved = take[~verified]
            best_rivals[open_where[improved]] = rivals[improved]
            open_[where[verified]] = False
        certified[index] = ~open_.cpu().numpy()
        witnesses[index] = best_z.cpu().numpy()
        rivals_out[index] = best_rivals.cpu().numpy()
        if on_progress is not None:
            on_progress(len(index))
    return FastOutcome(certified=certified, witnesses=witnesses, rivals=rivals_out)
