"""``nn.Module`` wrappers for the losses, and adapters for Hugging Face causal language models.

Each module computes its loss on logits (``module(logits, target)``) or, fused and chunked, on
final hidden states and the output layer (``module.linear(hidden, weight, target, bias=...)``).

Hugging Face:

* ``logitkit.losses.causal_lm_loss(model, batch, loss)`` (in ``causal_lm.py``, which calls any
  ``OutputLoss``'s ``linear``; the two files do not import each other): the fused loss of a
  causal LM, computed inside the model's own forward, so the (batch x length x V) logits never
  exist and DDP/FSDP2 wrappers work. Labels are shifted as Hugging Face does (position i
  predicts token i + 1; -100 is ignored). ``patch_causal_lm(model, loss)`` makes it the model's
  loss; ``hf.FusedLossTrainer`` is the ``transformers.Trainer`` that does so.
* ``make_compute_loss_func(loss)`` returns a ``compute_loss_func`` for ``transformers.Trainer``
  (``(outputs, labels, num_items_in_batch=None) -> loss``). Trainer has already computed the
  logits at that point, so this path is not fused; it serves models whose logits are not
  ``lm_head(hidden)`` (Granite, Gemma-2, ...), which the fused path refuses.

``OutputLoss`` and Hugging Face's shift and reduction live in ``_base.py``, below both this
module and ``causal_lm.py``.

Example::

    emo = EMOLoss(model.lm_head.weight.detach().clone(), mle_weight="adaptive")
    loss = causal_lm_loss(model, {"input_ids": ids, "attention_mask": mask}, emo)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from logitkit.losses._base import OutputLoss, reduce_by_items, shifted
from logitkit.losses._rows import CosineCost, cosine_cost, tailr_loss_spec
from logitkit.losses.functional import emo_loss, emo_mle_loss, tailr_loss
from logitkit.losses.fused import (
    cost_for,
    linear_cross_entropy,
    linear_emo_loss_of_cost,
    linear_tailr_loss,
)


class CrossEntropyLoss(OutputLoss):
    """Cross-entropy with classes last (logits ``(..., V)``, target ``(...)``), float32 math.

    Per token ``ce = -log softmax(logits)_t``: ``module(logits, target)`` is ``F.cross_entropy``
    on the flattened float32 logits, and ``module.linear(hidden, weight, target, bias=...)`` is
    ``linear_cross_entropy`` (same value, the logits never formed).

    Args:
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        Calling it returns the loss (a scalar, or shape ``(...)`` for ``reduction="none"``).

    Raises:
        ValueError: a bad ``reduction``; ``target``'s shape is not the logits' leading shape (and
            ``linear``'s errors, see ``linear_cross_entropy``).

    Reference:
        Standard cross-entropy (maximum likelihood), the baseline of the EMO and TaiLr papers.

    Example:
        >>> import torch
        >>> from logitkit.losses import CrossEntropyLoss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> round(CrossEntropyLoss()(logits, torch.tensor([0, 2])).item(), 4)
        1.0671
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> weight = torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]])
        >>> round(CrossEntropyLoss().linear(hidden, weight, torch.tensor([0, 1, 2])).item(), 4)
        0.9431
    """

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

    With unit rows ``e_i`` of ``cost_embedding`` and ``p = softmax(logits)``, per token
    ``emo = 1 - <sum_i p_i e_i, e_t>`` (``emo_loss``), or mixed with ``ce = -log p_t``, e.g.
    ``0.5 * (ce + min(ce / emo, cap).detach() * emo)`` for ``mle_weight="adaptive"``
    (``emo_mle_loss``); ``module.linear`` computes the same on ``hidden @ weight.T + bias``
    (``linear_emo_loss``). ``cost_embedding`` (V, D) is normalised once and kept as a
    (non-trainable) buffer ``unit_embedding``. Further keywords (``options``, e.g.
    ``adaptive_cap``) go unchanged to ``emo_mle_loss`` / ``linear_emo_loss`` (and ``emo_loss``);
    the arguments are validated at construction by evaluating the loss once on one zero row.

    Args:
        cost_embedding: token embedding ``(V, D)`` defining the cosine cost; required.
        mle_weight: None (EMO alone), ``"adaptive"``, ``"adaptive_batch"`` or ``w``; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.
        **options: further keywords of ``emo_mle_loss`` (e.g. ``adaptive_cap``); default none.

    Returns:
        Calling it returns the loss (a scalar, or shape ``(...)`` for ``reduction="none"``).

    Raises:
        ValueError: a bad ``cost_embedding``, ``mle_weight``, option or ``reduction`` (at
            construction), and the input errors of ``emo_loss`` / ``linear_emo_loss``.
        TypeError: an unknown keyword in ``options``, or inputs of the wrong type.

    Reference:
        Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive Language
        Modeling", ICLR 2024, arXiv 2310.04691 (see also Su Jianlin's blog post on EMO).

    Example:
        >>> import torch
        >>> from logitkit.losses import EMOLoss
        >>> embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> round(EMOLoss(embedding)(logits, torch.tensor([0, 2])).item(), 4)
        0.1892
        >>> mixed = EMOLoss(embedding, mle_weight="adaptive", adaptive_cap=3.0)
        >>> round(mixed(logits, torch.tensor([0, 2])).item(), 4)
        0.7649
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
        return linear_emo_loss_of_cost(hidden, weight, target, self._cost_for(weight),
                                       mle_weight=self.mle_weight, bias=bias,
                                       ignore_index=self.ignore_index,
                                       reduction=reduction or self.reduction,
                                       chunk_size=chunk_size, **self.options)

    def _cost_for(self, weight: Tensor) -> CosineCost:
        """``cost_for(unit_embedding, weight)``, kept while the buffer, its version (in-place
        changes) and the weight's device and dtype stay the same."""
        key = (self.unit_embedding._version, weight.device, weight.dtype)
        cached = self.__dict__.get("_cost")
        if cached is None or cached[0] is not self.unit_embedding or cached[1] != key:
            cached = (self.unit_embedding, key, cost_for(self.unit_embedding, weight))
            self.__dict__["_cost"] = cached
        return cached[2]

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"mle_weight={self.mle_weight!r}{options}, {super().extra_repr()}"


class TaiLrLoss(OutputLoss):
    """TaiLr as a module; set ``module.gamma`` during training, e.g. from ``tailr_gamma_schedule``.

    Per token ``-log(gamma + (1 - gamma) p_t) / (1 - gamma)`` (``threshold=None``), or
    ``-max(b, w).detach() * log p_t`` with ``w = p_t / (gamma + (1 - gamma) p_t)``
    (``threshold=b``): ``tailr_loss`` on logits, ``linear_tailr_loss`` for ``module.linear``.

    Args:
        gamma: the mixing weight in [0, 1] (0 is cross-entropy); required.
        threshold: lower clip ``b`` in [0, 1] of the weight ``w``, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        Calling it returns the loss (a scalar, or shape ``(...)`` for ``reduction="none"``).

    Raises:
        ValueError: ``gamma`` or ``threshold`` not in [0, 1], or a bad ``reduction`` (at
            construction), and the input errors of ``tailr_loss`` / ``linear_tailr_loss``.

    Reference:
        Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
        ICLR 2023, arXiv 2302.13344.

    Example:
        >>> import torch
        >>> from logitkit.losses import TaiLrLoss
        >>> loss = TaiLrLoss(0.5)
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> round(loss(logits, torch.tensor([0, 2])).item(), 4)
        0.6432
        >>> loss.gamma = 0.0  # e.g. set by GammaScheduleCallback; now cross-entropy
        >>> round(loss(logits, torch.tensor([0, 2])).item(), 4)
        1.0671
    """

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

    ``Trainer(..., compute_loss_func=make_compute_loss_func(EMOLoss(emb, mle_weight="adaptive")))``.
    The returned ``f(outputs, labels, num_items_in_batch=None)`` computes, with Hugging Face's
    shift (position i predicts label i + 1)::

        loss(logits[:, :-1], labels[:, 1:], reduction="mean")                  # no count
        loss(logits[:, :-1], labels[:, 1:], reduction="sum") / num_items_in_batch

    Not fused (Trainer has formed the logits); it serves models whose logits are not
    ``lm_head(hidden)``, which ``patch_causal_lm`` refuses. Needs no ``transformers`` import.

    Args:
        loss: the ``OutputLoss`` to apply, or None for ``CrossEntropyLoss()``; default None.

    Returns:
        ``compute_loss_func(outputs, labels, num_items_in_batch=None) -> Tensor``; ``outputs``
        is a model output or mapping with ``logits`` ``(batch, length, V)``.

    Raises:
        ValueError: (from the returned function) ``labels`` is not ``(batch, length)`` matching
            the logits, or ``loss``'s own input errors.

    Reference:
        The loss's own (EMO: Ren et al., ICLR 2024, arXiv 2310.04691; TaiLr: Ji et al., ICLR
        2023, arXiv 2302.13344); the shift and reduction are Hugging Face's ``ForCausalLMLoss``.

    Example:
        >>> import torch
        >>> from logitkit.losses import make_compute_loss_func
        >>> compute_loss = make_compute_loss_func()  # cross-entropy
        >>> labels = torch.tensor([[1, 2, 3, -100], [4, 5, 6, 0]])
        >>> outputs = {"logits": torch.zeros(2, 4, 7)}  # uniform over 7 classes: ce = log 7
        >>> round(compute_loss(outputs, labels).item(), 4)
        1.9459
        >>> round(compute_loss(outputs, labels, num_items_in_batch=10).item(), 4)  # 5 ce / 10
        0.973
    """
    loss = CrossEntropyLoss() if loss is None else loss

    def compute_loss_func(outputs: Any, labels: Tensor,
                          num_items_in_batch: int | Tensor | None = None) -> Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        logits, target = shifted(logits, labels.to(logits.device))
        return reduce_by_items(lambda reduction: loss(logits, target, reduction=reduction),
                               num_items_in_batch)

    return compute_loss_func


__all__ = ["CrossEntropyLoss", "EMOLoss", "OutputLoss", "TaiLrLoss", "make_compute_loss_func"]
