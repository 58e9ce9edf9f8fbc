"""Internal machinery of the losses: per-row terms, loss specs, validation and reduction.

Not public API: names here may change without notice. ``functional.py`` (losses on logits) and
``fused.py`` (chunked linear + loss) are both built on it, so the two can never disagree.

Every loss is a set of per-row *terms*: a function of the rows' softmax ``p`` (and of
``log p_t``) that returns each row's term values and, when asked, each term's gradient with
respect to the logits (closed forms, no autograd graph). A loss's *coefficients* combine its terms
after they are summed over the batch (only the ``"adaptive_batch"`` EMO + MLE mixture needs this;
every other loss combines its parts per token into one term).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Rows:
    """What a loss's terms see for a block of M rows (all in the compute dtype).

    ``p``: softmax of the logits, (M, V); a term function may overwrite it in place.
    ``logp_t``: log-probability of the target, (M,); None for soft targets.
    ``target``: ids (M,) with ignored rows replaced by 0, or probabilities (M, V).
    """

    p: Tensor
    logp_t: Tensor | None
    target: Tensor


TermFn = Callable[[Rows, bool], tuple[Tensor, list[Tensor] | None]]


def unit_coefficients(term_sums: Tensor) -> Tensor:
    return torch.ones_like(term_sums)


@dataclass(frozen=True)
class RowLoss:
    """A loss as terms ``(values (M, K), grads K x (M, V) or None)`` plus their coefficients.

    ``coefficients(term_sums)`` maps the K terms summed over the non-ignored rows to K detached
    weights; each row's loss is ``sum_k c_k * term_k``. ``buffers``: how many M x V blocks the
    terms keep alive at once (the logits/probabilities included), for sizing chunks.
    ``shares_work_by_target``: rows with the same target id share part of the work, so the
    fused engine visits rows sorted by target.
    """

    terms: TermFn
    coefficients: Callable[[Tensor], Tensor] = field(default=unit_coefficients)
    soft_targets: bool = False
    num_terms: int = 1
    buffers: int = 1
    shares_work_by_target: bool = False


# ----------------------------------------------------------------------------------------------
# Terms (the math). Each returns values (M, K) and, if need_grad, K gradients d term / d logits.


def _subtract_one_hot_(p: Tensor, target: Tensor) -> Tensor:
    """``p - onehot(target)``, in place."""
    return p.scatter_add_(1, target[:, None], p.new_full((p.shape[0], 1), -1.0))


def cross_entropy_terms(rows: Rows, need_grad: bool) -> tuple[Tensor, list[Tensor] | None]:
    """CE ``-log p_t``; gradient ``p - onehot(t)`` (overwrites ``rows.p``)."""
    values = -rows.logp_t
    grads = [_subtract_one_hot_(rows.p, rows.target)] if need_grad else None
    return values[:, None], grads


def _log_gamma_mix(logp_t: Tensor, gamma: float) -> Tensor:
    """``log(gamma + (1 - gamma) p_t)``, exact at gamma = 0 (log p_t) and gamma = 1 (0)."""
    if gamma == 0.0:
        return logp_t
    if gamma == 1.0:
        return torch.zeros_like(logp_t)
    return torch.logaddexp(logp_t + math.log1p(-gamma), logp_t.new_tensor(math.log(gamma)))


def _tailr_closed_form(logp_t: Tensor, log_mix: Tensor, gamma: float) -> Tensor:
    """``-log(gamma + (1-gamma) p_t) / (1-gamma)`` without cancellation for any gamma in [0, 1].

    With ``a = 1 - gamma`` the argument is ``1 + a (p_t - 1)``. For gamma >= 0.5 we use
    ``-log1p(a * expm1(log p_t)) / a`` (argument of log1p in [-0.5, 0], accurate as a -> 0);
    gamma = 1 is the limit ``1 - p_t`` (total variation to the one-hot target; ``-p_t`` up to the
    constant 1). For gamma < 0.5 the log-space mix is well conditioned and is divided by ``a``.
    """
    if gamma == 1.0:
        return -torch.expm1(logp_t)
    if gamma >= 0.5:
        return -torch.log1p((1.0 - gamma) * torch.expm1(logp_t)) / (1.0 - gamma)
    return -log_mix / (1.0 - gamma)


def tailr_terms(rows: Rows, need_grad: bool, *, gamma: float,
                threshold: float | None) -> tuple[Tensor, list[Tensor] | None]:
    """TaiLr. With ``w = p_t / (gamma + (1-gamma) p_t)`` (in [0, 1]):

    closed form ``-log(gamma + (1-gamma) p_t) / (1-gamma)``, gradient ``w (p - onehot(t))``;
    thresholded ``-max(b, w).detach() * log p_t``, gradient ``max(b, w) (p - onehot(t))``.
    """
    log_mix = _log_gamma_mix(rows.logp_t, gamma)
    weight = (rows.logp_t - log_mix).exp()
    if threshold is None:
        values = _tailr_closed_form(rows.logp_t, log_mix, gamma)
    else:
        weight = weight.clamp(min=threshold)
        values = -weight * rows.logp_t
    grads = None
    if need_grad:
        grads = [_subtract_one_hot_(rows.p, rows.target).mul_(weight[:, None])]
    return values[:, None], grads


def _emo_similarities(rows: Rows, cost: CosineCost) -> tuple[Tensor, Tensor]:
    """``(p * -s, <p, -s>)``: minus the similarities times ``p`` (M, V, a new buffer) and
    their sum per row (M,).

    With unit embeddings ``e_i`` (``cost``), ``r = e_t`` (ids) or ``sum_j tau_j e_j``
    (probabilities), ``s_i = <e_i, r>``; EMO's value is ``1 + <p, -s>``. One (U x D x V)
    product, U the number of runs of equal target ids (M for soft targets).
    """
    weighted = cost.target_similarities(rows.target, sign=-1.0).mul_(rows.p)
    return weighted, weighted.sum(-1)


def _mixed_gradient_(weighted: Tensor, minus_expected: Tensor, rows: Rows,
                     emo_scale: Tensor | float, ce_scale: float) -> Tensor:
    """``a * grad(emo) + c * (p - onehot(t))`` (a = ``emo_scale``, a number or per row; c =
    ``ce_scale``), written over ``weighted`` (``p * -s`` from ``_emo_similarities``).

    EMO's gradient is ``d/dz_i = p_i (<p, s> - s_i) = p_i (-s_i) - <p, -s> p_i``, so the mixture
    is ``a p_i (-s_i) + (c - a <p, -s>) p_i - c onehot(t)_i``: two in-place passes over the
    M x V block (one for EMO alone) and a scatter.
    """
    if isinstance(emo_scale, Tensor):
        weighted.mul_(emo_scale[:, None])
    elif emo_scale != 1.0:
        weighted.mul_(emo_scale)
    weighted.addcmul_(rows.p, (ce_scale - emo_scale * minus_expected)[:, None])
    if ce_scale == 0.0:
        return weighted
    return weighted.scatter_add_(1, rows.target[:, None],
                                 weighted.new_full((weighted.shape[0], 1), -ce_scale))


def emo_terms(rows: Rows, need_grad: bool, *,
              cost: CosineCost) -> tuple[Tensor, list[Tensor] | None]:
    """EMO with cosine cost ``1 - <e_i, e_j>`` over unit embeddings ``E`` (V, D).

    ``r = e_t`` (ids) or ``sum_j tau_j e_j`` (probabilities), ``q = sum_i p_i e_i``;
    value ``1 - <q, r>`` (exact EMO for one-hot targets, an upper bound for soft ones). Gradient
    ``d/dz_i = p_i (<q, r> - <e_i, r>)`` (see ``_mixed_gradient_``). A value alone costs one
    (M x V x D) product (``q``); no V x V matrix is ever formed.
    """
    if not need_grad:
        r = cost.target_rows(rows.target)
        return (1.0 - (cost.combine(rows.p) * r).sum(-1))[:, None], None
    weighted, minus_expected = _emo_similarities(rows, cost)
    grad = _mixed_gradient_(weighted, minus_expected, rows, 1.0, 0.0)
    return (1.0 + minus_expected)[:, None], [grad]


def emo_mle_fixed_terms(rows: Rows, need_grad: bool, *, cost: CosineCost,
                        mle_weight: float) -> tuple[Tensor, list[Tensor] | None]:
    """One term per token, ``w * ce_i + (1 - w) * emo_i``; its gradient in one M x V buffer."""
    ce = -rows.logp_t
    if not need_grad:
        emo = emo_terms(rows, False, cost=cost)[0][:, 0]
        return (mle_weight * ce + (1.0 - mle_weight) * emo)[:, None], None
    weighted, minus_expected = _emo_similarities(rows, cost)
    grad = _mixed_gradient_(weighted, minus_expected, rows, 1.0 - mle_weight, mle_weight)
    return (mle_weight * ce + (1.0 - mle_weight) * (1.0 + minus_expected))[:, None], [grad]


def adaptive_token_ratio(ce: Tensor, emo: Tensor, cap: float | None) -> Tensor:
    """``min(ce_i / emo_i, cap)`` per token (a constant: no gradient flows through it).

    0 where ``emo_i <= 0`` (there EMO's gradient vanishes too: all mass sits on tokens at cost 0).
    """
    ratio = torch.where(emo > 0, ce / emo.clamp(min=torch.finfo(emo.dtype).tiny), 0.0)
    return ratio if cap is None else ratio.clamp(max=cap)


def emo_mle_adaptive_terms(rows: Rows, need_grad: bool, *, cost: CosineCost,
                           cap: float | None) -> tuple[Tensor, list[Tensor] | None]:
    """The EMO authors' per-token mixture ``0.5 * (ce_i + r_i * emo_i)``, ``r_i`` detached.

    ``r_i = min(ce_i / emo_i, cap)`` (``adaptive_token_ratio``); gradient
    ``0.5 * (p - onehot(t)) + 0.5 * r_i * grad(emo_i)``, formed in one M x V buffer.
    """
    ce = -rows.logp_t
    if not need_grad:
        emo = emo_terms(rows, False, cost=cost)[0][:, 0]
        return (0.5 * (ce + adaptive_token_ratio(ce, emo, cap) * emo))[:, None], None
    weighted, minus_expected = _emo_similarities(rows, cost)
    emo = 1.0 + minus_expected
    ratio = adaptive_token_ratio(ce, emo, cap)
    grad = _mixed_gradient_(weighted, minus_expected, rows, 0.5 * ratio, 0.5)
    return (0.5 * (ce + ratio * emo))[:, None], [grad]


def emo_mle_terms(rows: Rows, need_grad: bool, *,
                  cost: CosineCost) -> tuple[Tensor, list[Tensor] | None]:
    """Terms (CE, EMO) kept apart for the batch-ratio mixture; EMO reads ``p`` before CE
    overwrites it."""
    emo_values, emo_grads = emo_terms(rows, need_grad, cost=cost)
    ce_values, ce_grads = cross_entropy_terms(rows, need_grad)
    grads = ce_grads + emo_grads if need_grad else None
    return torch.cat([ce_values, emo_values], dim=1), grads


def adaptive_batch_coefficients(term_sums: Tensor, *, cap: float | None) -> Tensor:
    """``0.5 * (ce + R * emo)`` with one batch ratio ``R = min(CE / EMO, cap)``, detached.

    CE and EMO are the batch sums (equivalently, means) over non-ignored tokens, so the EMO term is
    rescaled to the size of the CE term; the ratio is taken as 0 when EMO sums to 0.
    """
    ratio = adaptive_token_ratio(term_sums[0], term_sums[1], cap)
    return torch.stack([torch.ones_like(ratio), ratio]) * 0.5


# ----------------------------------------------------------------------------------------------
# Building losses (validated parameters).


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float32/half/bf16 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class CosineCost:
    """The unit rows ``e_i = E_i / |E_i|`` of a frozen embedding ``E`` (V, D), never formed.

    ``embedding`` is ``E`` (detached) in the dtype its products run in: the compute dtype
    (float32/float64), or the half/bf16 dtype of a half/bf16 model, whose logits come from a
    product in that dtype too. ``inverse_norms`` holds ``1 / |E_i|`` in the compute dtype: each
    product below scales by them instead of reading a V x D copy of unit rows.
    """

    embedding: Tensor
    inverse_norms: Tensor

    def _product(self, left: Tensor, right: Tensor, out: Tensor | None = None) -> Tensor:
        """``left @ right`` in the embedding's dtype, returned in the compute dtype (written
        into ``out`` if given)."""
        dtype = self.inverse_norms.dtype
        left = left.to(self.embedding.dtype)
        if out is None:
            return (left @ right).to(dtype)
        if left.dtype == dtype:
            return torch.mm(left, right, out=out)
        return out.copy_(left @ right)

    def combine(self, weights: Tensor) -> Tensor:
        """``sum_i w_i e_i`` for each row of ``weights`` (M, V): (M, D)."""
        return self._product(weights * self.inverse_norms, self.embedding)

    def target_rows(self, target: Tensor) -> Tensor:
        """``e_t`` for ids (M,), or ``sum_j tau_j e_j`` for probabilities (M, V): (M, D)."""
        if target.is_floating_point():
            return self.combine(target)
        return self.embedding[target].to(self.inverse_norms.dtype) \
            * self.inverse_norms[target, None]

    def similarities(self, r: Tensor, out: Tensor | None = None) -> Tensor:
        """``<e_i, r_m>`` for every token i and row ``r_m`` of ``r`` (M, D): an (M, V) tensor,
        new or ``out``."""
        return self._product(r, self.embedding.T, out).mul_(self.inverse_norms)

    def target_similarities(self, target: Tensor, *, sign: float = 1.0) -> Tensor:
        """``sign * <e_i, r_m>`` with ``r_m = target_rows(target)_m``: a new (M, V) tensor.

        A row depends only on its target id, and text repeats ids (the fused losses visit rows
        sorted by target, so equal ids are adjacent): for ids in at most 3M/4 runs of equal ids,
        the product is taken once per run, into the first rows of the result, and each run's
        row is then copied out to the run's rows, from the last run back (run j starts at row
        >= j, so a row is read before it is overwritten). No buffer beyond the result.
        """
        if target.is_floating_point():
            return self.similarities(self.target_rows(target).mul_(sign))
        ids, lengths = torch.unique_consecutive(target, return_counts=True)
        if 4 * ids.numel() > 3 * target.numel():  # too few repeats to pay for the copies
            return self.similarities(self.target_rows(target).mul_(sign))
        out = self.inverse_norms.new_empty((target.numel(), self.embedding.shape[0]))
        self.similarities(self.target_rows(ids).mul_(sign), out=out[:ids.numel()])
        starts, lengths = (lengths.cumsum(0) - lengths).tolist(), lengths.tolist()
        for run in reversed(range(len(starts))):
            start, end = starts[run], starts[run] + lengths[run]
            if start != run:
                out[start].copy_(out[run])
            if end - start > 1:
                out[start + 1:end].copy_(out[start].expand(end - start - 1, -1))
        return out


def _row_norms(embedding: Tensor, dtype: torch.dtype, block_rows: int = 512) -> Tensor:
    """``|E_i|`` in ``dtype``; rows of a half/bf16 embedding are widened a block at a time (one
    V x D widened copy is 5x slower on CPU than blocks that stay in cache)."""
    if embedding.dtype == dtype:
        return torch.linalg.vector_norm(embedding, dim=1)
    norms = embedding.new_empty(embedding.shape[0], dtype=dtype)
    for start in range(0, embedding.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        torch.linalg.vector_norm(embedding[rows], dim=1, dtype=dtype, out=norms[rows])
    return norms


def cosine_cost(cost_embedding: Tensor, vocab_size: int | None = None, *,
                like: Tensor | None = None, products_like: bool = False) -> CosineCost:
    """The cosine cost of ``cost_embedding`` (V, D), detached, with its rows' inverse norms.

    Kept on the device of ``like`` and in its compute dtype (float32, or float64 for float64);
    with ``products_like=True`` and a half/bf16 ``like`` (the fused losses pass the output
    layer's weight), in that dtype instead, so the similarity products run in the dtype of the
    logits' own product. Without ``like``, by ``cost_embedding``'s own dtype. The inverse norms
    are taken in the compute dtype. No copy is made when the embedding already has that dtype
    and device (e.g. the head's own weight).
    """
    if not isinstance(cost_embedding, Tensor) or cost_embedding.dim() != 2:
        raise ValueError("cost_embedding must be a 2-D tensor (V, D), got "
                         f"{getattr(cost_embedding, 'shape', type(cost_embedding))}")
    if vocab_size is not None and cost_embedding.shape[0] != vocab_size:
        raise ValueError(f"cost_embedding has {cost_embedding.shape[0]} rows but the vocabulary "
                         f"has {vocab_size} classes")
    reference = cost_embedding if like is None else like
    dtype = compute_dtype(reference.dtype)
    low_precision = reference.dtype in (torch.float16, torch.bfloat16)
    product_dtype = reference.dtype if products_like and low_precision else dtype
    embedding = cost_embedding.detach().to(device=reference.device, dtype=product_dtype)
    norms = _row_norms(embedding, dtype)
    if not torch.isfinite(norms).all():  # a NaN or inf entry makes its row's norm non-finite
        raise ValueError("cost_embedding contains NaN or inf (or rows too large for the norm)")
    zero = (norms == 0).nonzero().flatten()
    if zero.numel():
        raise ValueError(f"cost_embedding rows {zero[:10].tolist()} have zero norm; every token "
                         "needs a nonzero embedding for the cosine cost")
    return CosineCost(embedding, norms.reciprocal())


def cross_entropy_loss_spec() -> RowLoss:
    return RowLoss(terms=cross_entropy_terms)


MLE_WEIGHTS = ("adaptive", "adaptive_batch")


def emo_loss_spec(cost: CosineCost, *, mle_weight: str | float | None = None,
                  adaptive_cap: float | None = None) -> RowLoss:
    """EMO alone (``mle_weight=None``) or mixed with CE (see ``emo_mle_loss``)."""
    adaptive = isinstance(mle_weight, str)
    if adaptive and mle_weight not in MLE_WEIGHTS:
        raise ValueError(f"mle_weight must be one of {MLE_WEIGHTS} or a number in [0, 1], "
                         f"got {mle_weight!r}")
    if not adaptive and mle_weight is not None and (
            isinstance(mle_weight, bool) or not isinstance(mle_weight, (int, float))
            or not 0.0 <= mle_weight <= 1.0):
        raise ValueError(f"mle_weight must be one of {MLE_WEIGHTS} or a number in [0, 1], "
                         f"got {mle_weight!r}")
    if adaptive_cap is not None:
        if not adaptive:
            raise ValueError("adaptive_cap applies only to mle_weight='adaptive' or "
                             f"'adaptive_batch', not to mle_weight={mle_weight!r}")
        if isinstance(adaptive_cap, bool) or not isinstance(adaptive_cap, (int, float)) \
                or not adaptive_cap > 0 or math.isinf(adaptive_cap):
            raise ValueError(f"adaptive_cap must be None or a positive finite number, "
                             f"got {adaptive_cap!r}")
        adaptive_cap = float(adaptive_cap)
    # Every EMO form keeps two M x V blocks and shares its target product between equal ids.
    emo_row_loss = partial(RowLoss, buffers=2, shares_work_by_target=True)
    if mle_weight is None:
        return emo_row_loss(terms=partial(emo_terms, cost=cost), soft_targets=True)
    if mle_weight == "adaptive":
        return emo_row_loss(terms=partial(emo_mle_adaptive_terms, cost=cost, cap=adaptive_cap))
    if mle_weight == "adaptive_batch":
        return emo_row_loss(terms=partial(emo_mle_terms, cost=cost),
                            coefficients=partial(adaptive_batch_coefficients, cap=adaptive_cap),
                            num_terms=2)
    return emo_row_loss(terms=partial(emo_mle_fixed_terms, cost=cost,
                                      mle_weight=float(mle_weight)))


def tailr_loss_spec(gamma: float, threshold: float | None) -> RowLoss:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be None or a number in [0, 1], got {threshold!r}")
    threshold = None if threshold is None else float(threshold)
    return RowLoss(terms=partial(tailr_terms, gamma=float(gamma), threshold=threshold))


# ----------------------------------------------------------------------------------------------
# Validation, rows, reduction.


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def flatten_target(target: Tensor, batch_shape: torch.Size, vocab_size: int, *,
                   ignore_index: int, allow_soft: bool,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Validated ``(target (N,) or (N, V), valid (N,) bool)`` for a batch of shape ``batch_shape``.

    Ignored ids are replaced by 0 (so they can index safely); ``valid`` marks the rows that count.
    Soft targets are returned in ``dtype``.
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a tensor, got {type(target).__name__}")
    if target.is_floating_point():
        if not allow_soft:
            raise TypeError(f"target must hold integer class ids for this loss, got {target.dtype}")
        if target.shape != (*batch_shape, vocab_size):
            raise ValueError(f"soft target must have shape {(*batch_shape, vocab_size)}, "
                             f"got {tuple(target.shape)}")
        probs = target.reshape(-1, vocab_size).to(dtype)
        if not torch.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("soft target must hold finite non-negative probabilities")
        if probs.shape[0] and not torch.allclose(probs.sum(-1), probs.new_ones(()), atol=1e-3):
            raise ValueError("soft target rows must sum to 1")
        return probs, torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    if target.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"target must be integer ids or float probabilities, got {target.dtype}")
    if target.shape != batch_shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match the logits' leading "
                         f"shape {tuple(batch_shape)}")
    ids = target.reshape(-1).long()
    valid = ids != ignore_index
    bad = valid & ((ids < 0) | (ids >= vocab_size))
    if bad.any():
        raise ValueError(f"target ids must be in [0, {vocab_size}) or ignore_index={ignore_index}; "
                         f"found {ids[bad][:5].tolist()}")
    return ids.masked_fill(~valid, 0), valid


def check_batch(num_rows: int, vocab_size: int) -> None:
    if num_rows == 0:
        raise ValueError("empty batch: there are no tokens to compute a loss on")
    if vocab_size == 0:
        raise ValueError("the class dimension (last) is empty")


def _softmax_(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
    """``softmax(logits)`` written over ``logits`` (M, V), and ``log p_t`` for ids ``target``.

    With the row maximum ``m`` and ``S = sum_j exp(z_j - m)``: ``p = exp(z - m) / S`` and
    ``log p_t = (z_t - m) - log S``; one exponential per logit and no M x V temporary.
    """
    shifted = logits.sub_(logits.amax(dim=-1, keepdim=True))
    shifted_t = None if target.is_floating_point() else shifted.gather(1, target[:, None])
    p = shifted.exp_()
    total = p.sum(dim=-1, keepdim=True)
    p.div_(total)
    logp_t = None if shifted_t is None else (shifted_t - total.log()).squeeze(1)
    return p, logp_t


def loss_rows(logits: Tensor, target: Tensor, valid: Tensor, loss: RowLoss, *,
              need_grad: bool) -> tuple[Tensor, list[Tensor] | None]:
    """Term values (M, K) and gradients K x (M, V) of ``loss`` on ``logits`` (M, V).

    ``logits`` is overwritten (a gradient may be returned in its storage). Ignored rows get value
    0 and gradient 0.
    """
    p, logp_t = _softmax_(logits, target)
    values, grads = loss.terms(Rows(p=p, logp_t=logp_t, target=target), need_grad)
    ignored = ~valid[:, None]
    values = values.masked_fill(ignored, 0.0)
    if grads is not None:
        ignored_rows = ignored.squeeze(1).nonzero().squeeze(1)
        if ignored_rows.numel():
            for grad in grads:
                grad.index_fill_(0, ignored_rows, 0.0)
    return values, grads


def check_finite_values(finite: Tensor) -> None:
    if not bool(finite):
        raise ValueError("the loss is not finite on a non-ignored token: the logits contain NaN "
                         "or inf (or the target class has logit -inf)")


def reduction_scale(valid: Tensor, reduction: str) -> float:
    """Factor turning the sum over rows into the reduced loss (mean: 1 / #valid, 0 if none)."""
    if reduction != "mean":
        return 1.0
    count = int(valid.sum())
    return 1.0 / count if count else 0.0


def reduce_rows(row_loss: Tensor, scale: float, reduction: str) -> Tensor:
    return row_loss if reduction == "none" else row_loss.sum() * scale
