"""Per-token losses on logits: EMO, EMO + MLE mixtures and TaiLr (the public functions).

Conventions shared by every loss here (and by the fused versions in ``fused.py``):

* ``logits`` has shape ``(..., V)`` (classes last, as language models emit them); ``target`` has
  shape ``(...)`` with integer ids in ``[0, V)`` or ``ignore_index`` (soft targets of shape
  ``(..., V)`` where a loss accepts them).
* The math runs in float32 for float32/half/bf16 inputs (float64 stays float64); the loss is
  returned in that precision and the gradient in the dtype of ``logits``.
* ``reduction`` is ``"mean"`` (over the non-ignored tokens; 0 when every token is ignored, with a
  zero gradient), ``"sum"`` or ``"none"`` (shape ``(...)``, 0 at ignored positions).
* Bad input raises: a target id outside ``[0, V)``, mismatched shapes or dtypes, an empty batch,
  and a loss that is not finite on a non-ignored token (NaN/inf logits, or a ``-inf`` logit on
  the target) raise ``ValueError``/``TypeError``; nothing NaN is returned silently. ``-inf``
  logits on other classes (masking) are fine. Rows that are ignored are never looked at.

The gradients are closed forms computed in the forward pass (no autograd graph over the
``(N, V)`` block). The per-row terms, the validation and the reductions live in the private
module ``_rows.py``, which ``fused.py`` shares, so the two can never disagree.
"""

from __future__ import annotations

import torch
from torch import Tensor

from logitkit.losses._rows import (
    RowLoss,
    check_batch,
    check_finite_values,
    check_reduction,
    compute_dtype,
    cosine_cost,
    emo_loss_spec,
    flatten_target,
    loss_rows,
    reduce_rows,
    reduction_scale,
    tailr_loss_spec,
)

# ----------------------------------------------------------------------------------------------
# The engine: a loss on given logits (private; ``fused.py`` has the chunked counterpart).


class _LogitsLoss(torch.autograd.Function):
    """Loss on given logits; the gradient is formed in forward from the terms' closed forms."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, valid: Tensor, loss: RowLoss,
                reduction: str) -> Tensor:
        need_grad = ctx.needs_input_grad[0]
        logits_c = logits.to(compute_dtype(logits.dtype), copy=True)
        values, grads = loss_rows(logits_c, target, valid, loss, need_grad=need_grad)
        check_finite_values(torch.isfinite(values).all())
        coefficients = loss.coefficients(values.sum(0))
        scale = reduction_scale(valid, reduction)
        ctx.reduction = reduction
        if need_grad:
            grad = grads[0].mul_(coefficients[0])
            for coefficient, term_grad in zip(coefficients[1:], grads[1:], strict=True):
                grad.add_(term_grad, alpha=float(coefficient))
            ctx.save_for_backward(grad.mul_(scale).to(logits.dtype))
        return reduce_rows(values @ coefficients, scale, reduction)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        scale = grad_output[:, None] if ctx.reduction == "none" else grad_output
        return grad * scale.to(grad.dtype), None, None, None, None


def _apply_logits_loss(logits: Tensor, target: Tensor, loss: RowLoss, ignore_index: int,
                       reduction: str) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() == 0:
        raise TypeError("logits must be a floating-point tensor of shape (..., V)")
    check_reduction(reduction)
    batch_shape, vocab_size = logits.shape[:-1], logits.shape[-1]
    flat_target, valid = flatten_target(target, batch_shape, vocab_size,
                                        ignore_index=ignore_index, allow_soft=loss.soft_targets,
                                        dtype=compute_dtype(logits.dtype))
    check_batch(valid.numel(), vocab_size)
    out = _LogitsLoss.apply(logits.reshape(-1, vocab_size), flat_target, valid, loss, reduction)
    return out.reshape(batch_shape) if reduction == "none" else out



# ----------------------------------------------------------------------------------------------
# The functional losses.


def emo_loss(logits: Tensor, target: Tensor, cost_embedding: Tensor, *, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Earth mover's distance (EMO) between ``p = softmax(logits)`` and the target, cosine cost.

    With unit rows ``e_i = E_i / |E_i|`` of ``cost_embedding`` ``E`` (V, D), moving mass from
    token i to token j costs ``1 - <e_i, e_j>``. For integer targets the distance to the one-hot
    target is exact::

        emo = 1 - <sum_i p_i e_i, e_t>

    For probabilities ``tau`` (shape ``(..., V)``) it is the upper bound
    ``1 - <sum_i p_i e_i, sum_j tau_j e_j>`` (no ``ignore_index`` for soft targets). The gradient
    is the closed form ``d emo / d z_i = p_i (<q, r> - <e_i, r>)`` with ``q = sum_i p_i e_i`` and
    ``r`` the target's embedding. ``sum_i p_i e_i`` is formed first, never a V x V cost matrix;
    ``cost_embedding`` gets no gradient (it is detached).

    Args:
        logits: float tensor ``(..., V)``, classes last; required.
        target: ids ``(...)`` (or ``ignore_index``), or probabilities ``(..., V)``; required.
        cost_embedding: token embedding ``(V, D)`` defining the cosine cost; required.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        ValueError: ``cost_embedding`` is not ``(V, D)``, has a zero-norm or non-finite row; a
            target id is out of range; shapes mismatch; the batch is empty; soft target rows are
            not probabilities; ``reduction`` is unknown; the loss is not finite on a counted token.
        TypeError: ``logits`` is not a floating-point tensor, or ``target`` has a bad type.

    Reference:
        Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive Language
        Modeling", ICLR 2024, arXiv 2310.04691 (see also Su Jianlin's blog post on EMO).

    Example:
        >>> import torch
        >>> from logitkit.losses import emo_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> round(emo_loss(logits, target, embedding).item(), 4)
        0.1892
        >>> emo_loss(logits, target, embedding, reduction="none").shape
        torch.Size([2])
    """
    cost = cosine_cost(cost_embedding, logits.shape[-1], like=logits)
    loss = emo_loss_spec(cost)
    return _apply_logits_loss(logits, target, loss, ignore_index, reduction)


def emo_mle_loss(logits: Tensor, target: Tensor, cost_embedding: Tensor, *,
                 mle_weight: str | float = "adaptive", adaptive_cap: float | None = None,
                 ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """EMO mixed with cross-entropy (MLE), on integer targets.

    With ``ce_i = -log p_t`` and ``emo_i`` the value of ``emo_loss`` at token i:

    * ``mle_weight="adaptive"`` (default; the mixture in the EMO authors' code): per token
      ``0.5 * (ce_i + r_i * emo_i)`` with ``r_i = min(ce_i / emo_i, cap)`` treated as a constant
      (``.detach()``), so each token's EMO gradient is rescaled to the size of its own CE. Without
      a cap (``adaptive_cap=None``, as in the authors' GPT-2 language-modelling code, their LLaMA
      Hugging Face patch and their instruction-tuning code) each token's value equals ``ce_i`` and
      only the gradient changes; their LLaMA continual-fine-tuning script caps the ratio at 3
      (``adaptive_cap=3.0``). Their LLaMA code computes the ``emo_i`` of the ratio with the
      target's own probability left out of ``sum_i p_i e_i`` (a value larger by ``p_t``, same
      gradient); here ``emo_i`` is the exact EMO value of ``emo_loss``, as in their GPT-2 code.
    * ``mle_weight="adaptive_batch"``: one ratio for the whole batch, ``0.5 * (ce_i + R * emo_i)``
      with ``R = min(CE / EMO, cap)``, CE and EMO summed over the non-ignored tokens (with
      ``reduction="mean"``: ``0.5 * (mean_ce + (mean_ce / mean_emo).detach() * mean_emo)``). Not
      the authors' form; it was what this library first called ``"adaptive"``.
    * ``mle_weight=w`` (a number in [0, 1]): per token ``w * ce_i + (1 - w) * emo_i``.

    Args:
        logits: float tensor ``(..., V)``, classes last; required.
        target: integer ids ``(...)`` in ``[0, V)`` or ``ignore_index``; required.
        cost_embedding: token embedding ``(V, D)`` defining EMO's cosine cost; required.
        mle_weight: ``"adaptive"``, ``"adaptive_batch"`` or ``w`` in [0, 1]; default ``"adaptive"``.
        adaptive_cap: upper bound on the ratio of the adaptive forms, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        ValueError: a bad ``mle_weight`` or ``adaptive_cap`` (or a cap with a fixed weight), or
            any of ``emo_loss``'s input errors.
        TypeError: ``logits`` is not a floating-point tensor, or ``target`` is not integer ids.

    Reference:
        Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive Language
        Modeling", ICLR 2024, arXiv 2310.04691 (code: github.com/DRSY/EMO; see also Su
        Jianlin's blog post on EMO).

    Example:
        >>> import torch
        >>> from logitkit.losses import emo_mle_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> round(emo_mle_loss(logits, target, embedding).item(), 4)  # uncapped: the CE value
        1.0671
        >>> round(emo_mle_loss(logits, target, embedding, mle_weight=0.5).item(), 4)
        0.6281
    """
    cost = cosine_cost(cost_embedding, logits.shape[-1], like=logits)
    loss = emo_loss_spec(cost, mle_weight=mle_weight, adaptive_cap=adaptive_cap)
    return _apply_logits_loss(logits, target, loss, ignore_index, reduction)


def tailr_loss(logits: Tensor, target: Tensor, *, gamma: float, threshold: float | None = None,
               ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """TaiLr (total-variation-guided) loss, ``gamma`` in [0, 1].

    ``threshold=None``, the closed form::

        tailr = -log(gamma + (1 - gamma) p_t) / (1 - gamma)

    gamma = 0 is cross-entropy, and gamma -> 1 tends to ``1 - p_t`` (the total variation distance
    to the one-hot target, i.e. ``-p_t`` plus the constant 1), which gamma = 1 returns exactly;
    values close to 1 are computed without cancellation. Its gradient is ``w * grad(-log p_t)``
    with ``w = p_t / (gamma + (1 - gamma) p_t)``. ``threshold=b`` (in [0, 1]):
    ``-max(b, w).detach() * log p_t``, the weighted-likelihood form with the weight clipped from
    below.

    Args:
        logits: float tensor ``(..., V)``, classes last; required.
        target: integer ids ``(...)`` in ``[0, V)`` or ``ignore_index``; required.
        gamma: the mixing weight in [0, 1] (0 is cross-entropy); required, keyword-only.
        threshold: lower clip ``b`` in [0, 1] of the weight ``w``, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        ValueError: ``gamma`` or ``threshold`` is not a number in [0, 1]; a target id is out of
            range; shapes mismatch; the batch is empty; ``reduction`` is unknown; the loss is not
            finite on a counted token.
        TypeError: ``logits`` is not a floating-point tensor, or ``target`` is not integer ids.

    Reference:
        Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
        ICLR 2023, arXiv 2302.13344.

    Example:
        >>> import torch
        >>> from logitkit.losses import tailr_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> round(tailr_loss(logits, target, gamma=0.0).item(), 4)  # cross-entropy
        1.0671
        >>> round(tailr_loss(logits, target, gamma=0.5).item(), 4)
        0.6432
        >>> round(tailr_loss(logits, target, gamma=0.5, threshold=0.2).item(), 4)
        0.3193
    """
    loss = tailr_loss_spec(gamma, threshold)
    return _apply_logits_loss(logits, target, loss, ignore_index, reduction)


def tailr_gamma_schedule(step: int, total_steps: int, *, start: float = 0.0,
                         end: float = 1.0) -> float:
    """Linear ramp of TaiLr's gamma from ``start`` (step 0) to ``end`` (``total_steps``), then held.

    ``gamma_step = start + (end - start) * min(step / total_steps, 1)``.

    Args:
        step: the current step, ``>= 0``; required.
        total_steps: steps over which gamma ramps, ``> 0``; required.
        start: gamma at step 0, in [0, 1]; default 0.0.
        end: gamma from ``total_steps`` on, in [0, 1]; default 1.0.

    Returns:
        gamma for ``step`` (a float in [0, 1]).

    Raises:
        ValueError: ``total_steps <= 0``, ``step < 0``, or ``start``/``end`` outside [0, 1].

    Reference:
        Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
        ICLR 2023, arXiv 2302.13344 (the loss whose ``gamma`` this schedules).

    Example:
        >>> from logitkit.losses import tailr_gamma_schedule
        >>> [tailr_gamma_schedule(step, 10, end=0.8) for step in (0, 5, 10, 20)]
        [0.0, 0.4, 0.8, 0.8]
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise ValueError(f"start and end must be in [0, 1], got {start}, {end}")
    return start + (end - start) * min(step / total_steps, 1.0)
