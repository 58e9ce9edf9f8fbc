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
    """Swap the two halves of the last dimension: ``S(h) = h[..., d//2:] ++ h[..., :d//2]``.

    For an odd ``d`` the first part of the result has ``d - d//2`` entries. ``HalfSwapTiedHead``
    computes ``S(h) @ W^T``; call this directly where the logits are formed elsewhere, e.g. a
    fused loss: ``linear_cross_entropy(swap_halves(hidden), embed.weight, target)``.

    Args:
        hidden (Tensor): hidden states ``(..., d)`` (required)

    Returns:
        Tensor: a new tensor of the same shape, differentiable.

    Example::

        >>> import torch
        >>> from logitkit.optim.tied import swap_halves
        >>> swap_halves(torch.arange(5.0))
        tensor([2., 3., 4., 0., 1.])
    """
    half = hidden.shape[-1] // 2
    return torch.cat([hidden[..., half:], hidden[..., :half]], dim=-1)


class HalfSwapTiedHead(nn.Module):
    """Tied output layer with the halves of the channels swapped, sharing the input embedding.

    ``logits = S(h) @ W^T (+ b)`` with ``S(h) = h[..., d//2:] ++ h[..., :d//2]`` (``swap_halves``)
    and ``W`` the input embedding's ``nn.Parameter`` (V x d), which the head shares instead of
    owning a matrix (module docstring).

    Args:
        weight (nn.Parameter): the embedding matrix to reuse, ``(V, d)`` (required)
        bias (bool, optional): add a learnable bias of size V, zero-initialised (default: False)

    Raises:
        ValueError: ``weight`` is not a 2-D ``nn.Parameter``.

    Reference: Su Jianlin, "Embedding anomalies under Lion/Tiger training" (seed 001,
    https://kexue.fm/archives/9736), which proposes the half-swap tie.

    Example::

        >>> import torch
        >>> from logitkit.optim import HalfSwapTiedHead
        >>> embed = torch.nn.Embedding(10, 4)
        >>> head = HalfSwapTiedHead(embed.weight, bias=True)
        >>> head(embed(torch.tensor([[1, 2, 3]]))).shape
        torch.Size([1, 3, 10])
        >>> head.weight is embed.weight
        True
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
        """Compute the logits ``swap_halves(hidden) @ weight^T (+ bias)``.

        Args:
            hidden (Tensor): hidden states ``(..., d)`` (required)

        Returns:
            Tensor: logits ``(..., V)``.

        Raises:
            ValueError: the last dimension of ``hidden`` is not ``d``.

        Example::

            >>> import torch
            >>> from logitkit.optim import HalfSwapTiedHead
            >>> weight = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
            >>> HalfSwapTiedHead(weight)(torch.tensor([2.0, 5.0])).detach()
            tensor([5., 2., 7.])
        """
        if hidden.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"hidden size {hidden.shape[-1]} does not match the embedding width "
                             f"{self.weight.shape[1]}")
        return F.linear(swap_halves(hidden), self.weight, self.bias)
