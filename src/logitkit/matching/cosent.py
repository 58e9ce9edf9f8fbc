"""CoSENT: a ranking loss on pair scores that only asks for the gold order of the pairs.

For predicted pair scores ``s`` (e.g. cosine similarities) and gold labels ``y`` of one batch,

    L = log(1 + sum_{(i, j): y_i > y_j} exp(scale * (s_j - s_i)))

Every ordered pair (i, j) whose gold label says "i is more similar than j" is penalised when the
model scores j above i. Pairs with equal labels (ties) are ignored, so only the order of the labels
matters: any real-valued labels work, and rescaling them changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_inputs(scores: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"scores and labels must be torch.Tensor, got {type(scores).__name__} and "
            f"{type(labels).__name__}"
        )
    if scores.dim() != 1 or labels.dim() != 1:
        raise ValueError(
            f"scores and labels must be 1-D (one entry per pair), got shapes "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same length, got {scores.numel()} and "
            f"{labels.numel()}"
        )
    if scores.numel() == 0:
        raise ValueError("cosent_loss needs a non-empty batch, got 0 pairs")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.is_floating_point() and not torch.isfinite(labels).all():
        raise ValueError("labels contain NaN or infinite values")
    if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """CoSENT loss of one batch of pair scores against their gold labels (a scalar tensor).

        cosent_loss(s, y) = log(1 + sum_{(i, j): y_i > y_j} exp(scale * (s_j - s_i)))

    Computed in one shot as a logsumexp over the N x N matrix of ``scale * (s_j - s_i)``, with
    pairs that are not ordered by the labels (``y_i <= y_j``, ties included) set to -inf and a
    0 term appended for the "1 +", so it is stable for any ``scale`` (no overflow).
    A batch whose labels are all equal has no ordered pair: the loss is 0 with zero gradient.

    Args:
        scores: (N,) floating-point predicted similarities of N pairs.
        labels: (N,) gold similarities, any real values (or integers); only their order is used.
        scale: inverse temperature (20 in the CoSENT paper for cosine scores in [-1, 1]).
    """
    _check_inputs(scores, labels, scale)
    # differences[i, j] = scale * (s_j - s_i); kept only where y_i > y_j.
    differences = scale * (scores[None, :] - scores[:, None])
    ordered = labels[:, None] > labels[None, :]
    differences = differences.masked_fill(~ordered, float("-inf"))
    terms = torch.cat([differences.new_zeros(1), differences.flatten()])
    return torch.logsumexp(terms, dim=0)


class CoSENTLoss(nn.Module):
    """``nn.Module`` form of :func:`cosent_loss`: ``CoSENTLoss(scale)(scores, labels)``."""

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosent_loss(scores, labels, scale=self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
