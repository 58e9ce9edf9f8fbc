"""``nn.Module`` wrappers for the losses, and adapters for Hugging Face causal language models.

Each module computes its loss on logits (``module(logits, target)``) or, fused and chunked, on
final hidden states and the output layer (``module.linear(hidden, weight, target, bias=...)``).

Hugging Face:

* ``causal_lm_loss(model, batch, loss)`` runs the model's base (``model.base_model``) to get the
  final hidden states and applies the fused loss with the output layer
  (``model.get_output_embeddings()``), so the (batch x length x V) logits never exist. Labels are
  shifted as Hugging Face does (position i predicts token i + 1; -100 is ignored).
* ``make_compute_loss_func(loss)`` returns a ``compute_loss_func`` for ``transformers.Trainer``
  (``(outputs, labels, num_items_in_batch=None) -> loss``). Trainer has already computed the
  logits at that point, so this path is not fused; for the fused path override
  ``Trainer.compute_loss`` with ``causal_lm_loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from logitkit.losses.functional import (
    check_reduction,
    emo_loss,
    emo_loss_spec,
    emo_mle_loss,
    normalize_cost_embedding,
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
    """EMO (``mle_weight=None``) or EMO + MLE (``"adaptive"`` or a weight in [0, 1]).

    ``cost_embedding`` (V, D) is normalised once and kept as a (non-trainable) buffer.
    """

    def __init__(self, cost_embedding: Tensor, *, mle_weight: str | float | None = None,
                 ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        self.register_buffer("unit_embedding", normalize_cost_embedding(cost_embedding))
        emo_loss_spec(self.unit_embedding, mle_weight=mle_weight)  # validates mle_weight
        self.mle_weight = mle_weight

    def forward(self, logits: Tensor, target: Tensor, *, reduction: str | None = None) -> Tensor:
        options = {"ignore_index": self.ignore_index, "reduction": reduction or self.reduction}
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
                               reduction=reduction or self.reduction, chunk_size=chunk_size)

    def extra_repr(self) -> str:
        return f"mle_weight={self.mle_weight!r}, {super().extra_repr()}"


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


# ----------------------------------------------------------------------------------------------
# Hugging Face adapters.

# Config fields of models whose logits are not just lm_head(hidden): the fused path would be wrong.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def _shifted(sequence: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Position i predicts label i + 1 (Hugging Face's shift)."""
    if sequence.shape[:2] != labels.shape[:2] or labels.dim() != 2:
        raise ValueError(f"labels must have shape (batch, length) matching the model output, got "
                         f"{tuple(labels.shape)} for output {tuple(sequence.shape)}")
    return sequence[:, :-1], labels[:, 1:]


def _reduce_by_items(compute: Callable[[str], Tensor],
                     num_items_in_batch: int | Tensor | None) -> Tensor:
    """Mean over non-ignored tokens, or the sum divided by ``num_items_in_batch`` (as HF does)."""
    if num_items_in_batch is None:
        return compute("mean")
    total = compute("sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def causal_lm_loss(model: nn.Module, batch: Mapping[str, Tensor], loss: OutputLoss | None = None,
                   *, chunk_size: int | None = None,
                   num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Next-token loss of a Hugging Face causal LM, fused on its final hidden states.

    ``batch`` holds the model inputs (``input_ids``, ``attention_mask``, ...) and optionally
    ``labels`` (default: ``input_ids``; -100 is ignored). ``loss`` defaults to cross-entropy, which
    reproduces ``model(**batch, labels=labels).loss``. The loss's own ``reduction`` is replaced by
    Hugging Face's: the mean over counted tokens, or their sum over ``num_items_in_batch``.
    """
    loss = CrossEntropyLoss() if loss is None else loss
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or base is model or not isinstance(head, nn.Linear):
        raise ValueError("model must be a Hugging Face causal LM with a base model and a linear "
                         "output layer (model.base_model, model.get_output_embeddings())")
    config = getattr(model, "config", None)
    for name in _LOGIT_TRANSFORMS:
        if getattr(config, name, None) not in (None, 1.0):
            raise ValueError(f"model config sets {name}={getattr(config, name)!r}: its logits are "
                             "not hidden @ lm_head.T, which the fused loss assumes")
    if "input_ids" not in batch:
        raise ValueError("batch must contain input_ids")
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    labels = batch.get("labels", batch["input_ids"])
    outputs = base(**inputs, return_dict=True)
    hidden, target = _shifted(outputs.last_hidden_state, labels.to(head.weight.device))
    return _reduce_by_items(
        lambda reduction: loss.linear(hidden, head.weight, target, bias=head.bias,
                                      chunk_size=chunk_size, reduction=reduction),
        num_items_in_batch)


def make_compute_loss_func(loss: OutputLoss | None = None) -> Callable[..., Tensor]:
    """A ``compute_loss_func`` for ``transformers.Trainer``: the shifted loss on ``outputs.logits``.

    ``Trainer(..., compute_loss_func=make_compute_loss_func(EMOLoss(emb, mle_weight="adaptive")))``
    """
    loss = CrossEntropyLoss() if loss is None else loss

    def compute_loss_func(outputs: Any, labels: Tensor,
                          num_items_in_batch: int | Tensor | None = None) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        logits, target = _shifted(logits, labels.to(logits.device))
        return _reduce_by_items(lambda reduction: loss(logits, target, reduction=reduction),
                                num_items_in_batch)

    return compute_loss_func


__all__ = ["CrossEntropyLoss", "EMOLoss", "OutputLoss", "TaiLrLoss", "causal_lm_loss",
           "make_compute_loss_func"]
