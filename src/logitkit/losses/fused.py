"""Fused output layer + loss: ``loss(hidden @ weight.T + bias, target)`` without the N x V logits.

One chunked engine serves every loss: it walks over the N tokens ``chunk_size`` rows at a time,
forms that chunk's logits, asks the loss (``_rows.RowLoss``) for the per-row term values and
their closed-form gradients with respect to the logits ``G`` (M, V), and turns them at once into
``grad_hidden[rows] = G @ weight``, ``grad_weight += G.T @ hidden[rows]`` and
``grad_bias += G.sum(0)``. Then the chunk's logits are dropped, so at most one chunk of M x V
temporaries (a handful, float32 for float32/half/bf16 inputs) exists at a time.

Strategy, chosen for memory and speed:

* Chunk size (``default_chunk_rows``): the chunk's M x V temporaries get a fixed fraction of the
  memory the gradients need anyway, ``(V + N) d``, so the budget follows N, V and d.
* One set of gradient buffers: every loss combines its parts per token (CE and EMO with a fixed or
  per-token weight) into one gradient block, so a mixture costs the memory of a single loss. Only
  ``emo_mle_loss``'s ``"adaptive_batch"`` form, whose weights depend on batch sums, keeps one
  accumulator per part.
* ``reduction="mean"``/``"sum"`` (training): gradients are computed during forward (one pass, no
  recomputation) and only ``grad_hidden`` (N, d), ``grad_weight`` (V, d) and ``grad_bias`` (V,)
  are kept; the first backward scales them in place by the incoming scalar and hands them over
  (no copy). ``grad_weight`` is accumulated in float32 (an extra V x d float32 buffer for
  half/bf16 weights). A second backward through the same graph (``retain_graph=True``) recomputes
  them from the saved inputs with the same operations, so it returns identical gradients.
* ``reduction="none"``: forward computes values only; backward runs the pass again with each row
  weighted by its incoming gradient (recomputation, since per-row weights are only known then).
* Nothing needs a gradient: values only.

Plain PyTorch, so it runs on CPU and CUDA alike (no Triton kernel). Higher-order gradients are not
supported. PyTorch >= 2.13 has its own chunked ``F.linear_cross_entropy(..., options=
torch.nn.LinearCrossEntropyOptions())``; measured on CPU (``logitkit bench losses``) it is slower
than this engine, so ``linear_cross_entropy`` does not delegate to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from logitkit.losses._rows import (
    CosineCost,
    RowLoss,
    check_batch,
    check_finite_values,
    check_reduction,
    compute_dtype,
    cosine_cost,
    cross_entropy_loss_spec,
    emo_loss_spec,
    flatten_target,
    loss_rows,
    reduce_rows,
    reduction_scale,
    tailr_loss_spec,
    unit_coefficients,
)

# The chunk's temporaries (``loss.buffers`` blocks of M x V) get 1/CHUNK_FRACTION of the memory
# the gradients need anyway ((V + N) x d), but at least MIN_CHUNK_ROWS rows: thinner (M x d x V)
# matrix products run far below the machine's speed (measured on CPU: 36-row chunks took 1.5x
# the time of 256-row chunks at N=2048, V=16384, d=256).
CHUNK_FRACTION = 8
MIN_CHUNK_ROWS = {"cpu": 256, "cuda": 512}


def default_chunk_rows(num_rows: int, vocab_size: int, width: int, buffers: int,
                       device: torch.device, dtype: torch.dtype = torch.float32) -> int:
    """Rows per chunk: ``M = (V + N) d / (CHUNK_FRACTION * buffers * V)``, in
    ``[MIN_CHUNK_ROWS, N]``; for a half/bf16 weight, all N rows when ``N <= d + M``.

    The gradients alone take ``(V + N) d`` numbers (weight and hidden), so the chunk's
    ``buffers`` blocks of ``M x V`` add at most ``1/CHUNK_FRACTION`` of that: the budget follows
    N, V and d instead of a fixed number of logits (a fixed budget wastes memory when N is small
    and V d large, and makes tiny, slow chunks when V is large and d small). A half/bf16
    weight's gradient is summed over several chunks in a float32 V x d buffer; one chunk of N
    rows needs none, and its N x V float32 block is the smaller of the two when
    ``N <= d + M`` (small N with a large vocabulary).
    """
    rows = (vocab_size + num_rows) * width // (CHUNK_FRACTION * buffers * vocab_size)
    minimum = MIN_CHUNK_ROWS.get(device.type, MIN_CHUNK_ROWS["cuda"])
    rows = max(1, min(num_rows, max(rows, minimum)))
    if compute_dtype(dtype) != dtype and num_rows <= width + rows:
        return num_rows
    return rows


def _chunked_pass(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                  valid: Tensor, loss: RowLoss, chunk_rows: int, *, need_grad: bool,
                  row_weights: Tensor | None = None, separate: bool = True,
                  needs: tuple[bool, bool, bool] = (True, True, True), grad_scale: float = 1.0):
    """Term values (N, K), their finiteness, and (with ``need_grad``) gradient sums over chunks.

    ``row_weights`` (N, K): with it, row i's gradient for term k is weighted by
    ``row_weights[i, k]`` (without it, by 1; ignored rows always have zero gradient);
    ``separate=True`` keeps one accumulator per term (J = K), else the terms are summed into one
    (J = 1). Every gradient is multiplied by ``grad_scale``, folded into the chunk's small
    operands (its M x d hidden rows, or its M x V block before the cast to a half/bf16 weight's
    dtype), so no pass over a V x d gradient is spent on it. Returns ``values, finite,
    (grad_hidden (J, N, d), grad_weight J x (V, d), grad_bias J x (V,))`` (None where not
    needed; the last two are lists);
    the weight and bias gradients are accumulated in the compute dtype (float32, or float64 for
    float64 inputs), or written in the weight's dtype when there is a single chunk (one product,
    as for unchunked logits).
    """
    num_rows, width = hidden.shape
    dtype = compute_dtype(weight.dtype)
    num_acc = loss.num_terms if separate else 1
    accumulate_dtype = weight.dtype if num_rows <= chunk_rows else dtype
    grad_hidden = grad_weight = grad_bias = None
    if need_grad and needs[0]:
        grad_hidden = hidden.new_empty((num_acc, num_rows, width))
    # The first chunk's products become the weight and bias gradients, the others add to them
    # (no V x d buffer is zeroed or written through a copy first).
    if need_grad and needs[1]:
        grad_weight = [None] * num_acc
    if need_grad and needs[2] and bias is not None:
        grad_bias = [None] * num_acc
    chunk_values = []
    finite = torch.ones((), dtype=torch.bool, device=hidden.device)
    order = _rows_by_target(target, loss)
    for start in range(0, num_rows, chunk_rows):
        end = start + chunk_rows
        rows = slice(start, end) if order is None else order[start:end]
        chunk_hidden = hidden[rows]
        logits = F.linear(chunk_hidden, weight, bias).to(dtype)
        values, grads = loss_rows(logits, target[rows], valid[rows], loss, need_grad=need_grad)
        del logits  # its storage may hold a gradient block, dropped below once it is used
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
        for j in range(len(grads)):
            grad = grads[j]
            if grad_bias is not None:
                grad_bias[j] = _first_or_add(grad_bias[j], grad.sum(0).mul_(grad_scale),
                                             accumulate_dtype)
            if weight.dtype == dtype:  # scale the M x d rows, not the M x V block
                grad_in, scale = grad, grad_scale
            else:  # scale in float32 (in place: a mixed-dtype out= would take a temporary)
                grad_in = (grad if grad_scale == 1.0 else grad.mul_(grad_scale)).to(weight.dtype)
                scale = 1.0
            grads[j] = grad = None  # a float32 block of a half/bf16 weight is freed here
            scaled_hidden = chunk_hidden if scale == 1.0 else chunk_hidden * scale
            if grad_hidden is not None:
                _write_rows(grad_hidden[j], rows, grad_in @ weight if order is not None
                            else torch.mm(grad_in, weight, out=grad_hidden[j, rows]), scale)
            if grad_weight is not None and grad_weight[j] is not None \
                    and grad_weight[j].dtype == weight.dtype:
                grad_weight[j].addmm_(grad_in.T, scaled_hidden)
            elif grad_weight is not None:
                grad_weight[j] = _first_or_add(grad_weight[j], grad_in.T @ scaled_hidden,
                                               accumulate_dtype)
            del grad_in
    values = torch.cat(chunk_values)
    if order is not None:
        values = torch.empty_like(values).index_copy_(0, order, values)
    return values, finite, (grad_hidden, grad_weight, grad_bias)


def _write_rows(grad_hidden: Tensor, rows: slice | Tensor, product: Tensor, scale: float) -> None:
    """``grad_hidden[rows] = scale * product`` (``product`` may already be that slice)."""
    if scale != 1.0:
        product.mul_(scale)
    if isinstance(rows, Tensor):
        grad_hidden.index_copy_(0, rows, product)


def _first_or_add(total: Tensor | None, part: Tensor, dtype: torch.dtype) -> Tensor:
    """``part`` in ``dtype`` if it is the first, else ``total += part``."""
    if total is None:
        return part.to(dtype)
    return total.add_(part)


def _rows_by_target(target: Tensor, loss: RowLoss) -> Tensor | None:
    """The order to visit the rows in: sorted by target id for a loss whose extra work is per
    distinct target (EMO's ``E_unit e_t`` product, see ``CosineCost.target_similarities``), so
    that each chunk holds few runs of equal ids; None (in order) otherwise."""
    if not loss.shares_work_by_target or target.is_floating_point():
        return None
    return torch.argsort(target, stable=True)


def _combine_(accumulated: Tensor | list[Tensor] | None, coefficients: Tensor | None,
              dtype: torch.dtype) -> Tensor | None:
    """``sum_j coefficients[j] * accumulated[j]`` in ``dtype``, written over ``accumulated[0]``
    (``coefficients=None``: all 1, already folded into the accumulators)."""
    if accumulated is None:
        return None
    combined = accumulated[0]
    if coefficients is None:
        for term in accumulated[1:]:
            combined.add_(term)
        return combined.to(dtype)
    coefficients = coefficients.to(combined.dtype)
    combined.mul_(coefficients[0])
    for coefficient, term in zip(coefficients[1:], accumulated[1:], strict=True):
        combined.add_(term, alpha=float(coefficient))
    return combined.to(dtype)


def _scaled_gradients(accumulated: tuple, coefficients: Tensor | None, hidden: Tensor,
                      weight: Tensor) -> list[Tensor | None]:
    """Gradients for (hidden, weight, bias) from ``_chunked_pass``'s accumulators."""
    dtypes = (hidden.dtype, weight.dtype, weight.dtype)
    return [_combine_(acc, coefficients, dtype)
            for acc, dtype in zip(accumulated, dtypes, strict=True)]


class _FusedLinearLoss(torch.autograd.Function):
    """Chunked linear + loss. Gradients of a mean/sum loss are formed in forward and handed to
    the first backward, scaled in place (no copy); a second backward (``retain_graph=True``, or
    ``gradcheck``) and ``reduction="none"`` recompute them chunk by chunk from the saved inputs."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                valid: Tensor, loss: RowLoss, reduction: str, chunk_rows: int) -> Tensor:
        needs = tuple(ctx.needs_input_grad[:3])
        eager = any(needs) and reduction != "none"
        scale = reduction_scale(valid, reduction)
        # With unit coefficients (every loss but the batch-ratio EMO mixture) the gradients'
        # final scale is known now, and the pass folds it in.
        folded = loss.coefficients is unit_coefficients
        values, finite, grads = _chunked_pass(hidden, weight, bias, target, valid, loss,
                                              chunk_rows, need_grad=eager, needs=needs,
                                              grad_scale=scale if folded else 1.0)
        check_finite_values(finite)
        coefficients = loss.coefficients(values.sum(0))
        ctx.loss, ctx.chunk_rows, ctx.needs = loss, chunk_rows, needs
        ctx.reduction, ctx.scale, ctx.folded = reduction, scale, folded
        ctx.grads = None
        if eager:
            ctx.grads = _scaled_gradients(grads, None if folded else coefficients * scale,
                                          hidden, weight)
        if any(needs):
            ctx.save_for_backward(hidden, weight, bias, target, valid, coefficients)
        return reduce_rows(values @ coefficients, scale, reduction)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # reduction="none", or a second backward: recompute
            hidden, weight, bias, target, valid, coefficients = ctx.saved_tensors
            if ctx.reduction == "none":
                row_weights = grad_output.to(coefficients.dtype)[:, None] * coefficients
                _, _, accumulated = _chunked_pass(
                    hidden, weight, bias, target, valid, ctx.loss, ctx.chunk_rows,
                    need_grad=True, row_weights=row_weights, separate=False, needs=ctx.needs)
                return (*_scaled_gradients(accumulated, None, hidden, weight),
                        None, None, None, None, None)
            # The same operations as in forward, so a second backward gives identical results.
            _, _, accumulated = _chunked_pass(
                hidden, weight, bias, target, valid, ctx.loss, ctx.chunk_rows, need_grad=True,
                needs=ctx.needs, grad_scale=ctx.scale if ctx.folded else 1.0)
            grads = _scaled_gradients(accumulated, None if ctx.folded else coefficients * ctx.scale,
                                      hidden, weight)
        if bool(grad_output == 1):  # the usual loss.backward(): spare a pass over V x d
            return (*grads, None, None, None, None, None)
        grads = [None if grad is None else grad.mul_(grad_output.to(grad.dtype))
                 for grad in grads]
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
    num_rows = valid.numel()
    chunk_rows = chunk_size or default_chunk_rows(num_rows, vocab_size, width, loss.buffers,
                                                  hidden.device, weight.dtype)
    out = _FusedLinearLoss.apply(hidden.reshape(-1, width), weight, bias, flat_target, valid, loss,
                                 reduction, chunk_rows)
    return out.reshape(batch_shape) if reduction == "none" else out


def linear_cross_entropy(hidden: Tensor, weight: Tensor, target: Tensor, *,
                         bias: Tensor | None = None, ignore_index: int = -100,
                         reduction: str = "mean", chunk_size: int | None = None) -> Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` against integer ``target``, chunked.

    With logits ``z = hidden @ weight.T + bias`` (classes last) the per-token loss is
    ``ce = -log softmax(z)_t``; same value and gradients (wrt hidden, weight, bias) as
    ``F.cross_entropy`` on the full logits, computed ``chunk_size`` tokens at a time, so the
    ``(N, V)`` logits never exist.

    Args:
        hidden: float tensor ``(..., d)``, e.g. a model's final hidden states; required.
        weight: output layer ``(V, d)``, same dtype as ``hidden``; required.
        target: integer ids ``(...)`` in ``[0, V)`` or ``ignore_index``; required.
        bias: output layer bias ``(V,)``, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.
        chunk_size: tokens per chunk, or None for ``default_chunk_rows(N, V, d)``; default None.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 inputs).

    Raises:
        ValueError: shapes of ``hidden``/``weight``/``bias``/``target`` mismatch; a bad
            ``chunk_size`` or ``reduction``; a target id is out of range; the batch is empty; the
            loss is not finite on a counted token.
        TypeError: an input is not a floating-point tensor, the dtypes differ, or ``target`` is
            not integer ids.

    Reference:
        Standard cross-entropy (maximum likelihood), the baseline of the EMO and TaiLr papers;
        the chunking is this library's.

    Example:
        >>> import torch
        >>> from logitkit.losses import linear_cross_entropy
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
        >>> weight = torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]])
        >>> loss = linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2]), chunk_size=2)
        >>> round(loss.item(), 4)
        0.9431
        >>> loss.backward()
        >>> hidden.grad.shape
        torch.Size([3, 2])
    """
    return _fused(hidden, weight, target, cross_entropy_loss_spec(), bias=bias,
                  ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size)


def linear_emo_loss(hidden: Tensor, weight: Tensor, target: Tensor, cost_embedding: Tensor, *,
                    mle_weight: str | float | None = None, adaptive_cap: float | None = None,
                    bias: Tensor | None = None, ignore_index: int = -100,
                    reduction: str = "mean", chunk_size: int | None = None) -> Tensor:
    """``emo_loss`` (``mle_weight=None``) or ``emo_mle_loss`` of ``hidden @ weight.T + bias``.

    With ``p = softmax(hidden @ weight.T + bias)`` and unit rows ``e_i`` of ``cost_embedding``:
    EMO is ``1 - <sum_i p_i e_i, e_t>`` per token (see ``emo_loss``); with ``mle_weight`` it is
    mixed with ``ce = -log p_t``: ``"adaptive"`` (the EMO authors' per-token mixture
    ``0.5 * (ce_i + min(ce_i / emo_i, adaptive_cap).detach() * emo_i)``), ``"adaptive_batch"``
    (one ratio per batch) or a weight ``w`` in [0, 1] (``w * ce_i + (1 - w) * emo_i``); see
    ``emo_mle_loss``. Computed ``chunk_size`` tokens at a time. Every form but
    ``"adaptive_batch"`` combines CE and EMO per token, so a mixture costs the memory of EMO
    alone; ``"adaptive_batch"`` needs its batch sums first and keeps one more set of gradient
    buffers (an extra V x d and N x d). ``cost_embedding`` never receives a gradient and is not
    copied (its rows' norms are folded into the products), unless it is the head's own weight:
    then the cost is a detached copy of it. Rows are visited sorted by target, so EMO's product
    ``E_unit e_t`` is taken once per distinct target id in a chunk. For half/bf16 inputs that
    product runs in their dtype (held in it, the cost embedding takes half the memory), as the
    logits' own product does; the softmax and the loss are float32.

    Args:
        hidden: float tensor ``(..., d)``, e.g. a model's final hidden states; required.
        weight: output layer ``(V, d)``, same dtype as ``hidden``; required.
        target: ids ``(...)``, or probabilities ``(..., V)`` with ``mle_weight=None``; required.
        cost_embedding: token embedding ``(V, D)`` defining the cosine cost; required.
        mle_weight: None (EMO alone), ``"adaptive"``, ``"adaptive_batch"`` or ``w``; default None.
        adaptive_cap: upper bound on the ratio of the adaptive forms, or None; default None.
        bias: output layer bias ``(V,)``, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.
        chunk_size: tokens per chunk, or None for ``default_chunk_rows(N, V, d)``; default None.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 inputs).

    Raises:
        ValueError: a bad ``cost_embedding`` (shape, zero-norm or non-finite row),
            ``mle_weight`` or ``adaptive_cap``, or any of ``linear_cross_entropy``'s errors.
        TypeError: an input is not a floating-point tensor, the dtypes differ, or ``target`` has
            a bad type (soft targets need ``mle_weight=None``).

    Reference:
        Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive Language
        Modeling", ICLR 2024, arXiv 2310.04691 (see also Su Jianlin's blog post on EMO).

    Example:
        >>> import torch
        >>> from logitkit.losses import linear_emo_loss
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
        >>> weight = torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]])
        >>> target = torch.tensor([0, 1, 2])
        >>> round(linear_emo_loss(hidden, weight, target, weight).item(), 4)  # tied cost
        0.3733
        >>> linear_emo_loss(hidden, weight, target, weight, mle_weight="adaptive").backward()
    """
    if cost_embedding.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr():
        cost_embedding = cost_embedding.detach().clone()  # the head itself: freeze its values now
    cost = cost_for(cost_embedding, weight)
    return linear_emo_loss_of_cost(hidden, weight, target, cost, mle_weight=mle_weight,
                                   adaptive_cap=adaptive_cap, bias=bias,
                                   ignore_index=ignore_index, reduction=reduction,
                                   chunk_size=chunk_size)


def cost_for(cost_embedding: Tensor, weight: Tensor) -> CosineCost:
    """The cosine cost of ``cost_embedding`` for the fused losses of ``weight`` (V, d): on its
    device, products in its dtype (see ``cosine_cost``)."""
    return cosine_cost(cost_embedding, weight.shape[0], like=weight, products_like=True)


def linear_emo_loss_of_cost(hidden: Tensor, weight: Tensor, target: Tensor, cost: CosineCost,
                            *, mle_weight: str | float | None, bias: Tensor | None,
                            ignore_index: int, reduction: str, chunk_size: int | None,
                            adaptive_cap: float | None = None) -> Tensor:
    """``linear_emo_loss`` with a prepared ``cost_for(cost_embedding, weight)`` (``EMOLoss``
    keeps one, so a frozen embedding's norms are taken once, not at every call)."""
    if cost.embedding.shape[0] != weight.shape[0]:
        raise ValueError(f"cost_embedding has {cost.embedding.shape[0]} rows but the "
                         f"vocabulary has {weight.shape[0]} classes")
    loss = emo_loss_spec(cost, mle_weight=mle_weight, adaptive_cap=adaptive_cap)
    return _fused(hidden, weight, target, loss, bias=bias, ignore_index=ignore_index,
                  reduction=reduction, chunk_size=chunk_size)


def linear_tailr_loss(hidden: Tensor, weight: Tensor, target: Tensor, *, gamma: float,
                      threshold: float | None = None, bias: Tensor | None = None,
                      ignore_index: int = -100, reduction: str = "mean",
                      chunk_size: int | None = None) -> Tensor:
    """``tailr_loss`` of ``hidden @ weight.T + bias``, computed in chunks.

    With ``p_t`` the target's probability under ``softmax(hidden @ weight.T + bias)``:
    ``-log(gamma + (1 - gamma) p_t) / (1 - gamma)`` (``threshold=None``), or
    ``-max(b, w).detach() * log p_t`` with ``w = p_t / (gamma + (1 - gamma) p_t)``
    (``threshold=b``); see ``tailr_loss``.

    Args:
        hidden: float tensor ``(..., d)``, e.g. a model's final hidden states; required.
        weight: output layer ``(V, d)``, same dtype as ``hidden``; required.
        target: integer ids ``(...)`` in ``[0, V)`` or ``ignore_index``; required.
        gamma: the mixing weight in [0, 1] (0 is cross-entropy); required, keyword-only.
        threshold: lower clip ``b`` in [0, 1] of the weight ``w``, or None; default None.
        bias: output layer bias ``(V,)``, or None; default None.
        ignore_index: target id whose positions count for nothing; default ``-100``.
        reduction: ``"mean"`` (non-ignored tokens), ``"sum"`` or ``"none"``; default ``"mean"``.
        chunk_size: tokens per chunk, or None for ``default_chunk_rows(N, V, d)``; default None.

    Returns:
        The loss: a scalar, or shape ``(...)`` for ``reduction="none"`` (float32, or float64 for
        float64 inputs).

    Raises:
        ValueError: ``gamma`` or ``threshold`` is not a number in [0, 1], or any of
            ``linear_cross_entropy``'s errors.
        TypeError: an input is not a floating-point tensor, the dtypes differ, or ``target`` is
            not integer ids.

    Reference:
        Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
        ICLR 2023, arXiv 2302.13344.

    Example:
        >>> import torch
        >>> from logitkit.losses import linear_tailr_loss
        >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> weight = torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]])
        >>> round(linear_tailr_loss(hidden, weight, torch.tensor([0, 1, 2]), gamma=0.5).item(), 4)
        0.6655
    """
    return _fused(hidden, weight, target, tailr_loss_spec(gamma, threshold), bias=bias,
                  ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size)
