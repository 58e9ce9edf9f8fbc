"""``nn.Module`` wrappers for the losses, and adapters for Hugging Face causal language models.

Each module computes its loss on logits (``module(logits, target)``) or, fused and chunked, on
final hidden states and the output layer (``module.linear(hidden, weight, target, bias=...)``).

Hugging Face:

* ``causal_lm_loss(model, batch, loss)`` (from ``causal_lm.py``): the fused loss of a causal LM,
  computed inside the model's own forward, so the (batch x length x V) logits never exist and
  DDP/FSDP2 wrappers work. Labels are shifted as Hugging Face does (position i predicts token
  i + 1; -100 is ignored). ``causal_lm.patch_causal_lm(model, loss)`` makes it the model's loss;
  ``hf.FusedLossTrainer`` is the ``transformers.Trainer`` that does so.
* ``make_compute_loss_func(loss)`` returns a ``compute_loss_func`` for ``transformers.Trainer``
  (``(outputs, labels, num_items_in_batch=None) -> loss``). Trainer has already computed the
  logits at that point, so this path is not fused; it serves models whose logits are not
  ``lm_head(hidden)`` (Granite, Gemma-2, ...), which the fused path refuses.

Example::

    emo = EMOLoss(model.lm_head.weight.detach().clone(), mle_weight="adaptive")
    loss = causal_lm_loss(model, {"input_ids": ids, "attention_mask": mask}, emo)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from logitkit.losses.causal_lm import causal_lm_loss, reduce_by_items, shifted
from logitkit.losses.functional import (
    check_reduction,
    cosine_cost,
    emo_loss,
    emo_mle_loss,
    tailr_loss,
    tailr_loss_spec,
)
from logitkit.losses.fused import linear_cross_entropy, linear_emo_loss, linear_tailr_loss


class OutputLoss(nn.Module):
    """Base: ``forward(logits, target)`` on logits, ``linear(hidden, weight, target)`` fused.

    Both take ``reduction=`` to override the module's own for one call.
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        raise NotImplementedError

    def linear(self, hidden: Tensor, weight: Tensor, target: Tensor, *,
               bias: Tensor | None = None, chunk_size: int | None = None,
               reduction: str | None = None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CrossEntropyLoss(OutputLoss):
    """Cross-entropy with classes last (logits (..., V), target (...)), float32 math."""

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"target shape {tuple(target.shape)} does not match the logits' "
                             f"leading shape {tuple(logits.shape[:-1])}")
        reduction = reduction or self.reduction
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                                 ignore_index=self.ignore_index, reduction=reduction)
        return losses.reshape(target.shape) if reduction == "none" else losses

    def linear(self, hidden: Tensor, weight: Tensor, target: Tensor, *,
               bias: Tensor | None = None, chunk_size: int | None = None,
               reduction: str | None = None) -> Tensor:
        return linear_cross_entropy(hidden, weight, target, bias=bias,
                                    ignore_index=self.ignore_index,
                                    reduction=reduction or self.reduction, chunk_size=chunk_size)


class EMOLoss(OutputLoss):
    """EMO (``mle_weight=None``) or EMO + MLE (``mle_weight`` as ``emo_mle_loss`` takes it).

    ``cost_embedding`` (V, D) is normalised once and kept as a (non-trainable) buffer. Further
    keywords (``options``, e.g. ``adaptive_cap``) go unchanged to ``emo_mle_loss`` /
    ``linear_emo_loss`` (and ``emo_loss``); the arguments are validated at construction by
    evaluating the loss once on one zero row.
    """

    def __init__(self, cost_embedding: Tensor, *, mle_weight: str | float | None = None,
                 ignore_index: int = -100, reduction: str = "mean", **options: Any) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        cost = cosine_cost(cost_embedding)  # validated, then stored as unit rows (a frozen copy)
        self.register_buffer("unit_embedding", cost.embedding * cost.inverse_norms[:, None])
        self.mle_weight = mle_weight
        self.options = options
        vocab_size = self.unit_embedding.shape[0]
        self(self.unit_embedding.new_zeros(1, vocab_size),
             torch.zeros(1, dtype=torch.long, device=self.unit_embedding.device))

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        options = {"ignore_index": self.ignore_index, "reduction": reduction or self.reduction,
                   **self.options}
        if self.mle_weight is None:
            return emo_loss(logits, target, self.unit_embedding, **options)
        return emo_mle_loss(logits, target, self.unit_embedding, mle_weight=self.mle_weight,
                            **options)

    def linear(self, hidden: Tensor, weight: Tensor, target: Tensor, *,
               bias: Tensor | None = None, chunk_size: int | None = None,
               reduction: str | None = None) -> Tensor:
        return linear_emo_loss(hidden, weight, target, self.unit_embedding,
                               mle_weight=self.mle_weight, bias=bias,
                               ignore_index=self.ignore_index,
                               reduction=reduction or self.reduction, chunk_size=chunk_size,
                               **self.options)

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"mle_weight={self.mle_weight!r}{options}, {super().extra_repr()}"


class TaiLrLoss(OutputLoss):
    """TaiLr; set ``module.gamma`` during training, e.g. from ``tailr_gamma_schedule``."""

    def __init__(self, gamma: float, *, threshold: float | None = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        tailr_loss_spec(gamma, threshold)  # validates
        self.gamma = gamma
        self.threshold = threshold

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        return tailr_loss(logits, target, gamma=self.gamma, threshold=self.threshold,
                          ignore_index=self.ignore_index, reduction=reduction or self.reduction)

    def linear(self, hidden: Tensor, weight: Tensor, target: Tensor, *,
               bias: Tensor | None = None, chunk_size: int | None = None,
               reduction: str | None = None) -> Tensor:
        return linear_tailr_loss(hidden, weight, target, gamma=self.gamma,
                                 threshold=self.threshold, bias=bias,
                                 ignore_index=self.ignore_index,
                                 reduction=reduction or self.reduction, chunk_size=chunk_size)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, threshold={self.threshold}, {super().extra_repr()}"


def make_compute_loss_func(loss: OutputLoss | None = None) -> Callable[..., Tensor]:
    """A ``compute_loss_func`` for ``transformers.Trainer``: the shifted loss on ``outputs.logits``.

    ``Trainer(..., compute_loss_func=make_compute_loss_func(EMOLoss(emb, mle_weight="adaptive")))``
    """
    loss = CrossEntropyLoss() if loss is None else loss

    def compute_loss_func(outputs: Any, labels: Tensor,
                          num_items_in_batch: int | Tensor | None = None) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        logits, target = shifted(logits, labels.to(logits.device))
        return reduce_by_items(lambda reduction: loss(logits, target, reduction=reduction),
                               num_items_in_batch)

    return compute_loss_func


__all__ = ["CrossEntropyLoss", "EMOLoss", "OutputLoss", "TaiLrLoss", "causal_lm_loss",
           "make_compute_loss_func"]
