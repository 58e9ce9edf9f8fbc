"""What ``modules.py`` and ``causal_lm.py`` both need, below both of them (private).

``OutputLoss`` (the base class of the loss modules; public as ``logitkit.losses.OutputLoss``),
Hugging Face's label shift (``shifted``) and reduction (``reduce_by_items``). Keeping them here
lets ``causal_lm.py`` and ``modules.py`` each import this module and never each other
(``tests/test_losses_structure.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from logitkit.losses._rows import check_reduction


class OutputLoss(nn.Module):
    """Base class of the output-layer loss modules: on logits, or fused with the output layer.

    A subclass computes one loss two ways::

        module(logits, target)                       = loss(logits, target)
        module.linear(hidden, weight, target, bias)  = loss(hidden @ weight.T + bias, target)

    the second in chunks, without the ``(N, V)`` logits. Both take ``reduction=`` to override the
    module's own for one call. ``patch_causal_lm``, ``causal_lm_loss``, ``FusedLossTrainer`` and
    ``make_compute_loss_func`` accept any ``OutputLoss``.

    Args:
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        Calling a subclass returns the loss tensor (a scalar, or shape ``(...)`` for ``"none"``).

    Raises:
        ValueError: ``reduction`` is not one of ``"mean"``, ``"sum"``, ``"none"``.
        NotImplementedError: ``forward`` or ``linear`` called on the base class itself.

    Reference:
        The subclasses' losses: EMO (Ren et al., "EMO: Earth Mover Distance Optimization for
        Auto-Regressive Language Modeling", ICLR 2024, arXiv 2310.04691) and TaiLr (Ji et al.,
        "Tailoring Language Generation Models under Total Variation Distance", ICLR 2023,
        arXiv 2302.13344).

    Example:
        >>> from logitkit.losses import OutputLoss, TaiLrLoss
        >>> loss = TaiLrLoss(0.5, reduction="sum")
        >>> isinstance(loss, OutputLoss), loss.ignore_index, loss.reduction
        (True, -100, 'sum')
        >>> OutputLoss(reduction="avg")
        Traceback (most recent call last):
        ...
        ValueError: reduction must be one of ('mean', 'sum', 'none'), got 'avg'
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        """The loss on ``logits`` ``(..., V)`` against ``target`` ``(...)``.

        Args:
            logits: float tensor ``(..., V)``, classes last; required.
            target: integer ids ``(...)`` (or what the subclass accepts); required.
            reduction: overrides the module's ``reduction`` for this call, or None; default None.

        Returns:
            The loss (a scalar, or shape ``(...)`` for ``reduction="none"``).
        """
        raise NotImplementedError

    def linear(self, hidden: Tensor, weight: Tensor, target: Tensor, *,
               bias: Tensor | None = None, chunk_size: int | None = None,
               reduction: str | None = None) -> Tensor:
        """The loss on ``hidden @ weight.T + bias``, fused and chunked (no ``(N, V)`` logits).

        Args:
            hidden: float tensor ``(..., d)``; required.
            weight: output layer ``(V, d)``; required.
            target: integer ids ``(...)``; required.
            bias: output layer bias ``(V,)``, or None; default None.
            chunk_size: tokens per chunk, or None for the automatic size; default None.
            reduction: overrides the module's ``reduction`` for this call, or None; default None.

        Returns:
            The loss (a scalar, or shape ``(...)`` for ``reduction="none"``).
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


# ----------------------------------------------------------------------------------------------
# Hugging Face's shift and reduction (used by causal_lm.py and modules.make_compute_loss_func).


def shifted(sequence: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Position i predicts label i + 1 (Hugging Face's shift)."""
    if labels.dim() != 2 or sequence.shape[:2] != labels.shape:
        raise ValueError(f"labels must have shape (batch, length) matching the model output, got "
                         f"{tuple(labels.shape)} for output {tuple(sequence.shape)}")
    return sequence[:, :-1], labels[:, 1:]


def reduce_by_items(compute: Callable[[str], Tensor],
                    num_items_in_batch: int | Tensor | None) -> Tensor:
    """Mean over non-ignored tokens, or the sum divided by ``num_items_in_batch`` (as HF does)."""
    if num_items_in_batch is None:
        return compute("mean")
    total = compute("sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
