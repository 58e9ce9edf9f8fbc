"""Fused output layer + loss: ``loss(hidden @ weight.T + bias, target)`` without the N x V logits.

One chunked engine serves every loss: it walks over the N tokens ``chunk_size`` rows at a time,
forms that chunk's logits, asks the loss (``functional.RowLoss``) for the per-row term values and
their closed-form gradients with respect to the logits ``G`` (M, V), and turns them at once into
``grad_hidden[rows] = G @ weight``, ``grad_weight += G.T @ hidden[rows]`` and
``grad_bias += G.sum(0)``. Then the chunk's logits are dropped, so at most one chunk of M x V
temporaries (a handful, float32 for float32/half/bf16 inputs) exists at a time.

Strategy, chosen for memory and speed:

* ``reduction="mean"``/``"sum"`` (training): gradients are computed during forward (one pass, no
  recomputation) and only ``grad_hidden`` (N, d), ``grad_weight`` (V, d) and ``grad_bias`` (V,)
  are stored; backward scales them by the incoming scalar. ``grad_weight`` is accumulated in
  float32 (an extra V x d float32 buffer for half/bf16 weights).
* ``reduction="none"``: forward computes values only; backward runs the pass again with each row
  weighted by its incoming gradient (recomputation, since per-row weights are only known then).
* Nothing needs a gradient: values only.

Plain PyTorch, so it runs on CPU and CUDA alike (no Triton kernel; the CUDA path has not been run
on a GPU yet). Higher-order gradients are not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from logitkit.losses.functional import (
    RowLoss,
    check_batch,
    check_finite_values,
    check_reduction,
    compute_dtype,
    cross_entropy_loss_spec,
    emo_loss_spec,
    flatten_target,
    loss_rows,
    normalize_cost_embedding,
    reduce_rows,
    reduction_scale,
    tailr_loss_spec,
)

# Default chunk: this many logits per chunk (float32: 32 MiB on CPU, 256 MiB on CUDA). Larger
# chunks make fewer, more efficient matrix products; each chunk holds a few such temporaries.
CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 26}


def default_chunk_rows(vocab_size: int, device: torch.device) -> int:
    budget = CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cpu"])
    return max(1, budget // vocab_size)


def _chunked_pass(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                  valid: Tensor, loss: RowLoss, chunk_rows: int, *, need_grad: bool,
                  row_weights: Tensor | None = None, separate: bool = True,
                  needs: tuple[bool, bool, bool] = (True, True, True)):
    """Term values (N, K), their finiteness, and (with ``need_grad``) gradient sums over chunks.

    ``row_weights`` (N, K): with it, row i's gradient for term k is weighted by
    ``row_weights[i, k]`` (without it, by 1; ignored rows always have zero gradient);
    ``separate=True`` keeps one accumulator per term (J = K), else the terms are summed into one
    (J = 1). Returns ``values, finite, (grad_hidden (J, N, d), grad_weight (J, V, d), grad_bias
    (J, V))`` (None where not needed); the weight and bias gradients are accumulated in the
    compute dtype (float32, or float64 for float64 inputs).
    """
    num_rows, width = hidden.shape
    dtype = compute_dtype(weight.dtype)
    vocab_size = weight.shape[0]
    num_acc = loss.num_terms if separate else 1
    grad_hidden = grad_weight = grad_bias = None
    if need_grad and needs[0]:
        grad_hidden = hidden.new_empty((num_acc, num_rows, width))
    if need_grad and needs[1]:
        grad_weight = torch.zeros((num_acc, vocab_size, width), dtype=dtype,
                                  device=weight.device)
    if need_grad and needs[2] and bias is not None:
        grad_bias = torch.zeros((num_acc, vocab_size), dtype=dtype, device=weight.device)
    chunk_values = []
    finite = torch.ones((), dtype=torch.bool, device=hidden.device)
    for start in range(0, num_rows, chunk_rows):
        rows = slice(start, start + chunk_rows)
        chunk_hidden = hidden[rows]
        logits = F.linear(chunk_hidden, weight, bias).to(dtype)
        values, grads = loss_rows(logits, target[rows], valid[rows], loss, need_grad=need_grad)
        finite = finite & torch.isfinite(values).all()
        chunk_values.append(values)
        if grads is None:
            continue
        if row_weights is not None:
            weights = row_weights[rows]
            grads = [grad.mul_(weights[:, k, None]) for k, grad in enumerate(grads)]
        if not separate:
            for grad in grads[1:]:
                grads[0].add_(grad)
            grads = grads[:1]
        for j, grad in enumerate(grads):
            grad_in = grad.to(weight.dtype)
            if grad_hidden is not None:
                torch.mm(grad_in, weight, out=grad_hidden[j, rows])
            if grad_weight is not None:
                if weight.dtype == dtype:
                    grad_weight[j].addmm_(grad_in.T, chunk_hidden)
                else:
                    grad_weight[j].add_(grad_in.T @ chunk_hidden)
            if grad_bias is not None:
                grad_bias[j].add_(grad.sum(0))
    return torch.cat(chunk_values), finite, (grad_hidden, grad_weight, grad_bias)


def _combine(accumulated: Tensor | None, coefficients: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``sum_j coefficients[j] * accumulated[j]`` in ``dtype`` (in place for a single term)."""
    if accumulated is None:
        return None
    coefficients = coefficients.to(accumulated.dtype)
    if accumulated.shape[0] == 1:
        return accumulated[0].mul_(coefficients[0]).to(dtype)
    return torch.tensordot(coefficients, accumulated, dims=1).to(dtype)


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                valid: Tensor, loss: RowLoss, reduction: str, chunk_rows: int) -> Tensor:
        needs = tuple(ctx.needs_input_grad[:3])
        eager = any(needs) and reduction != "none"
        values, finite, grads = _chunked_pass(hidden, weight, bias, target, valid, loss,
                                              chunk_rows, need_grad=eager, needs=needs)
        check_finite_values(finite)
        coefficients = loss.coefficients(values.sum(0))
        scale = reduction_scale(valid, reduction)
        ctx.eager, ctx.loss, ctx.chunk_rows, ctx.needs = eager, loss, chunk_rows, needs
        if eager:
            scaled = coefficients * scale
            dtypes = (hidden.dtype, weight.dtype, weight.dtype)
            ctx.save_for_backward(*(_combine(acc, scaled, dtype)
                                    for acc, dtype in zip(grads, dtypes, strict=True)))
        elif any(needs):
            ctx.save_for_backward(hidden, weight, bias, target, valid, coefficients)
        return reduce_rows(values @ coefficients, scale, reduction)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.eager:
            grads = tuple(None if grad is None else grad * grad_output.to(grad.dtype)
                          for grad in ctx.saved_tensors)
        else:
            hidden, weight, bias, target, valid, coefficients = ctx.saved_tensors
            row_weights = grad_output.to(coefficients.dtype)[:, None] * coefficients[None, :]
            _, _, (grad_hidden, grad_weight, grad_bias) = _chunked_pass(
                hidden, weight, bias, target, valid, ctx.loss, ctx.chunk_rows, need_grad=True,
                row_weights=row_weights, separate=False, needs=ctx.needs)
            grads = (None if grad_hidden is None else grad_hidden[0],
                     None if grad_weight is None else grad_weight[0].to(weight.dtype),
                     None if grad_bias is None else grad_bias[0].to(weight.dtype))
        return (*grads, None, None, None, None, None)


def _fused(hidden: Tensor, weight: Tensor, target: Tensor, loss: RowLoss, *, bias: Tensor | None,
           ignore_index: int, reduction: str, chunk_size: int | None) -> Tensor:
    check_reduction(reduction)
    for name, tensor in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if tensor is not None and (not isinstance(tensor, Tensor)
                                   or not tensor.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor")
    if hidden.dim() == 0 or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"expected hidden (..., d) and weight (V, d), got hidden "
                         f"{tuple(hidden.shape)} and weight {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    dtypes = {t.dtype for t in (hidden, weight, bias) if t is not None}
    if len(dtypes) > 1:
        raise TypeError("hidden, weight and bias must share one dtype, got "
                        f"{sorted(map(str, dtypes))}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    batch_shape, width = hidden.shape[:-1], hidden.shape[-1]
    vocab_size = weight.shape[0]
    flat_target, valid = flatten_target(target, batch_shape, vocab_size,
                                        ignore_index=ignore_index, allow_soft=loss.soft_targets,
                                        dtype=compute_dtype(weight.dtype))
    check_batch(valid.numel(), vocab_size)
    chunk_rows = chunk_size or default_chunk_rows(vocab_size, hidden.device)
    out = _FusedLinearLoss.apply(hidden.reshape(-1, width), weight, bias, flat_target, valid, loss,
                                 reduction, chunk_rows)
    return out.reshape(batch_shape) if reduction == "none" else out


def linear_cross_entropy(hidden: Tensor, weight: Tensor, target: Tensor, *,
                         bias: Tensor | None = None, ignore_index: int = -100,
                         reduction: str = "mean", chunk_size: int | None = None) -> Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` (classes last) against integer ``target``.

    Same value and gradients (wrt hidden, weight, bias) as ``F.cross_entropy`` on the full logits,
    computed ``chunk_size`` tokens at a time (default: about 8M logits per chunk on CPU, 64M on
    CUDA). hidden (..., d), weight (V, d), bias (V,), target (...).
    """
    return _fused(hidden, weight, target, cross_entropy_loss_spec(), bias=bias,
                  ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size)


def linear_emo_loss(hidden: Tensor, weight: Tensor, target: Tensor, cost_embedding: Tensor, *,
                    mle_weight: str | float | None = None, bias: Tensor | None = None,
                    ignore_index: int = -100, reduction: str = "mean",
                    chunk_size: int | None = None) -> Tensor:
    """``emo_loss`` (``mle_weight=None``) or ``emo_mle_loss`` of ``hidden @ weight.T + bias``.

    ``cost_embedding`` (V, D) is normalised once and never receives a gradient; it may be the
    head's own weight (pass ``weight`` itself: the cost uses a detached copy). Soft targets
    (..., V) are accepted when ``mle_weight`` is None.
    """
    unit_embedding = normalize_cost_embedding(cost_embedding, weight.shape[0], like=weight)
    return _fused(hidden, weight, target, emo_loss_spec(unit_embedding, mle_weight=mle_weight),
                  bias=bias, ignore_index=ignore_index, reduction=reduction,
                  chunk_size=chunk_size)


def linear_tailr_loss(hidden: Tensor, weight: Tensor, target: Tensor, *, gamma: float,
                      threshold: float | None = None, bias: Tensor | None = None,
                      ignore_index: int = -100, reduction: str = "mean",
                      chunk_size: int | None = None) -> Tensor:
    """``tailr_loss`` of ``hidden @ weight.T + bias`` (see ``functional.tailr_loss``), chunked."""
    return _fused(hidden, weight, target, tailr_loss_spec(gamma, threshold), bias=bias,
                  ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size)
