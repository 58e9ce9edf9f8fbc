"""Tied output layer with the two halves of the feature channels swapped (Su, 2023).

Reusing the input embedding ``W`` (V x d) as the output layer makes the initial logit of token ``i``
after input ``i`` the squared norm ``|w_i|^2``, which dominates the softmax. Swapping the two halves
of the final hidden state first removes that term while sharing every weight::

    S[h] = h[d//2:] ++ h[:d//2]            logits = S[h] @ W^T (+ bias)

Source: kexue.fm/archives/9698 ("the output end shares the embedding, revisited"); the author
reports in kexue.fm/archives/9736 that this variant also removes Tiger's +-1/weight_decay
embedding outliers (the tied embedding gets a dense gradient), and works slightly better than an
untied one.

Example::

    >>> embed = torch.nn.Embedding(10, 4)
    >>> head = HalfSwapTiedHead(embed.weight)
    >>> head(torch.randn(3, 4)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HalfSwapTiedHead", "swap_halves"]


def swap_halves(hidden: Tensor) -> Tensor:
    """``hidden[..., d//2:] ++ hidden[..., :d//2]`` along the last dimension (any ``d``)."""
    half = hidden.shape[-1] // 2
    return torch.cat([hidden[..., half:], hidden[..., :half]], dim=-1)


class HalfSwapTiedHead(nn.Module):
    """Output layer ``logits = swap_halves(h) @ weight^T (+ bias)`` that shares ``weight`` (the
    input embedding's ``nn.Parameter``, V x d) instead of owning one.

    Args:
        weight: the embedding matrix to reuse, e.g. ``model.embed.weight``.
        bias: add a learnable bias of size V (the embedding is still the only matrix).
    """

    def __init__(self, weight: nn.Parameter, bias: bool = False) -> None:
        super().__init__()
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
            raise ValueError("weight must be a 2-D nn.Parameter (the embedding matrix, V x d), "
                             f"got {type(weight).__name__} of shape {tuple(weight.shape)}")
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype,
                                             device=weight.device)) if bias else None

    def forward(self, hidden: Tensor) -> Tensor:
        if hidden.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"hidden size {hidden.shape[-1]} does not match the embedding width "
                             f"{self.weight.shape[1]}")
        return F.linear(swap_halves(hidden), self.weight, self.bias)
