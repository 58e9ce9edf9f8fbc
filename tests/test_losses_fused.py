"""Fused linear + loss: same values and gradients as the loss on full logits, in chunks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from logitkit.losses import (
    emo_loss,
    emo_mle_loss,
    linear_cross_entropy,
    linear_emo_loss,
    linear_tailr_loss,
    tailr_loss,
)
from logitkit.losses import fused as fused_module

IGNORE = -100


def naive_cross_entropy(logits, target, reduction):
    """Explicit per-token loop: -log softmax(logits)[t]."""
    flat_logits, flat_target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    values = []
    for row, t in zip(flat_logits, flat_target, strict=True):
        values.append(torch.zeros((), dtype=row.dtype) if int(t) == IGNORE
                      else -(row[t] - torch.logsumexp(row, 0)))
    values = torch.stack(values)
    counted = int((flat_target != IGNORE).sum())
    if reduction == "none":
        return values.reshape(target.shape)
    return values.sum() if reduction == "sum" else values.sum() / max(counted, 1)


def make_inputs(shape=(3, 7), vocab=11, width=5, seed=0, dtype=torch.float64, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, width, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, width, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(vocab, generator=gen, dtype=dtype).requires_grad_() if bias else None
    target = torch.randint(0, vocab, shape, generator=gen)
    target.view(-1)[1::5] = IGNORE
    embedding = torch.randn(vocab, 6, generator=gen, dtype=torch.float64)
    return hidden, weight, b, target, embedding


def values_and_grads(fn, hidden, weight, bias, out_weights=None):
    value = fn()
    scalar = value.sum() if out_weights is None else (value * out_weights).sum()
    params = [t for t in (hidden, weight, bias) if t is not None]
    return value.detach(), torch.autograd.grad(scalar, params)


def assert_same(ours, ref, **tol):
    torch.testing.assert_close(ours[0], ref[0], **tol)
    for a, b in zip(ours[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, **tol)


def logits_of(hidden, weight, bias):
    return F.linear(hidden, weight, bias)


LOSSES = {
    "ce": (lambda h, w, t, e, **kw: linear_cross_entropy(h, w, t, **kw),
           lambda z, t, e, reduction: naive_cross_entropy(z, t, reduction)),
    "emo": (lambda h, w, t, e, **kw: linear_emo_loss(h, w, t, e, **kw),
            lambda z, t, e, reduction: emo_loss(z, t, e, reduction=reduction)),
    "emo_mle_adaptive": (
        lambda h, w, t, e, **kw: linear_emo_loss(h, w, t, e, mle_weight="adaptive", **kw),
        lambda z, t, e, reduction: emo_mle_loss(z, t, e, reduction=reduction)),
    "emo_mle_adaptive_capped": (
        lambda h, w, t, e, **kw: linear_emo_loss(h, w, t, e, mle_weight="adaptive",
                                                 adaptive_cap=0.5, **kw),
        lambda z, t, e, reduction: emo_mle_loss(z, t, e, adaptive_cap=0.5, reduction=reduction)),
    "emo_mle_adaptive_batch": (
        lambda h, w, t, e, **kw: linear_emo_loss(h, w, t, e, mle_weight="adaptive_batch", **kw),
        lambda z, t, e, reduction: emo_mle_loss(z, t, e, mle_weight="adaptive_batch",
                                                reduction=reduction)),
    "emo_mle_fixed": (
        lambda h, w, t, e, **kw: linear_emo_loss(h, w, t, e, mle_weight=0.4, **kw),
        lambda z, t, e, reduction: emo_mle_loss(z, t, e, mle_weight=0.4, reduction=reduction)),
    "tailr": (lambda h, w, t, e, **kw: linear_tailr_loss(h, w, t, gamma=0.6, **kw),
              lambda z, t, e, reduction: tailr_loss(z, t, gamma=0.6, reduction=reduction)),
    "tailr_threshold": (
        lambda h, w, t, e, **kw: linear_tailr_loss(h, w, t, gamma=0.3, threshold=0.4, **kw),
        lambda z, t, e, reduction: tailr_loss(z, t, gamma=0.3, threshold=0.4,
                                              reduction=reduction)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size,with_bias", [(1, True), (4, False), (21, True), (None, True)])
def test_fused_equals_unfused(name, reduction, chunk_size, with_bias):
    hidden, weight, bias, target, embedding = make_inputs(bias=with_bias)
    fused, unfused = LOSSES[name]
    out_weights = torch.rand(target.shape, dtype=torch.float64) if reduction == "none" else None
    ours = values_and_grads(
        lambda: fused(hidden, weight, target, embedding, bias=bias, reduction=reduction,
                      chunk_size=chunk_size), hidden, weight, bias, out_weights)
    ref = values_and_grads(
        lambda: unfused(logits_of(hidden, weight, bias), target, embedding, reduction),
        hidden, weight, bias, out_weights)
    assert_same(ours, ref)


def test_chunks_bound_the_logits_that_exist(monkeypatch):
    seen = []
    real_linear = fused_module.F.linear

    def recording_linear(x, w, b=None):
        seen.append(x.shape[0])
        return real_linear(x, w, b)

    monkeypatch.setattr(fused_module.F, "linear", recording_linear)
    hidden, weight, bias, target, embedding = make_inputs(shape=(50,))
    linear_emo_loss(hidden, weight, target, embedding, bias=bias, chunk_size=8).backward()
    assert max(seen) == 8 and sum(seen) == 50
    seen.clear()
    linear_cross_entropy(hidden, weight, target, reduction="none", chunk_size=16).sum().backward()
    assert max(seen) == 16 and sum(seen) == 100  # forward + recomputation in backward
    seen.clear()
    monkeypatch.setitem(fused_module.MIN_CHUNK_ROWS, "cpu", 1)
    linear_cross_entropy(hidden, weight, target)
    # (V + N) d / (8 * buffers * V) = (11 + 50) * 5 / (8 * 1 * 11) = 3 rows per chunk for CE
    assert max(seen) == fused_module.default_chunk_rows(50, 11, 5, 1, hidden.device) == 3
    seen.clear()
    linear_emo_loss(hidden, weight, target, embedding)  # EMO keeps two M x V blocks: 1 row
    assert max(seen) == 1 and sum(seen) == 50


@pytest.mark.parametrize("num_rows,vocab,width,buffers", [(4096, 32768, 512, 1),
                                                          (512, 131072, 1024, 2),
                                                          (100_000, 50_000, 64, 1)])
def test_default_chunk_keeps_temporaries_a_fraction_of_the_gradients(num_rows, vocab, width,
                                                                     buffers):
    rows = fused_module.default_chunk_rows(num_rows, vocab, width, buffers, torch.device("cpu"))
    gradient_numbers = (vocab + num_rows) * width
    assert rows >= fused_module.MIN_CHUNK_ROWS["cpu"]
    assert rows * vocab * buffers <= max(gradient_numbers / 8,
                                         fused_module.MIN_CHUNK_ROWS["cpu"] * vocab * buffers)


def _accumulators_used(monkeypatch, call):
    """How many separate V x d weight-gradient accumulators the chunked pass allocated."""
    counts = []
    real_pass = fused_module._chunked_pass

    def recording_pass(*args, **kwargs):
        values, finite, grads = real_pass(*args, **kwargs)
        counts.append(None if grads[1] is None else len(grads[1]))
        return values, finite, grads

    monkeypatch.setattr(fused_module, "_chunked_pass", recording_pass)
    call()
    monkeypatch.setattr(fused_module, "_chunked_pass", real_pass)
    return counts


@pytest.mark.parametrize("mle_weight,expected", [("adaptive", 1), (0.3, 1), ("adaptive_batch", 2)])
def test_mixtures_with_per_token_weights_keep_one_gradient_accumulator(monkeypatch, mle_weight,
                                                                      expected):
    hidden, weight, bias, target, embedding = make_inputs()
    counts = _accumulators_used(monkeypatch, lambda: linear_emo_loss(
        hidden, weight, target, embedding, mle_weight=mle_weight, bias=bias,
        chunk_size=4).backward())
    assert counts == [expected]


@pytest.mark.parametrize("name", ["ce", "emo_mle_adaptive", "emo_mle_adaptive_batch"])
def test_backward_scales_in_place_and_a_second_backward_recomputes(name):
    hidden, weight, bias, target, embedding = make_inputs()
    fused = LOSSES[name][0]
    loss = fused(hidden, weight, target, embedding, bias=bias, chunk_size=4)
    first = torch.autograd.grad(3.0 * loss, (hidden, weight, bias), retain_graph=True)
    second = torch.autograd.grad(loss, (hidden, weight, bias))
    for once, again in zip(first, second, strict=True):
        assert torch.equal(once, 3.0 * again)
    ref = values_and_grads(lambda: LOSSES[name][1](logits_of(hidden, weight, bias), target,
                                                   embedding, "mean"), hidden, weight, bias)
    assert_same((loss.detach(), second), ref)


def test_gradcheck_in_float64():
    hidden, weight, bias, target, embedding = make_inputs(shape=(4,), vocab=3, width=2)
    checks = [
        lambda h, w, b: linear_cross_entropy(h, w, target, bias=b, chunk_size=2),
        lambda h, w, b: linear_emo_loss(h, w, target, embedding, bias=b, chunk_size=2,
                                        reduction="none"),
        lambda h, w, b: linear_emo_loss(h, w, target, embedding, mle_weight=0.5, bias=b,
                                        chunk_size=3, reduction="sum"),
        lambda h, w, b: linear_tailr_loss(h, w, target, gamma=0.8, bias=b, chunk_size=2),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (hidden, weight, bias))


def test_soft_targets_for_emo():
    hidden, weight, bias, target, embedding = make_inputs(shape=(6,))
    probs = torch.softmax(torch.randn(6, 11, dtype=torch.float64), -1)
    ours = values_and_grads(lambda: linear_emo_loss(hidden, weight, probs, embedding, bias=bias,
                                                    chunk_size=4), hidden, weight, bias)
    ref = values_and_grads(lambda: emo_loss(logits_of(hidden, weight, bias), probs, embedding),
                           hidden, weight, bias)
    assert_same(ours, ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_batch_gives_zero_loss_and_zero_grads(reduction):
    hidden, weight, bias, target, embedding = make_inputs()
    target = torch.full_like(target, IGNORE)
    for name in ("ce", "emo_mle_adaptive", "tailr"):
        value, grads = values_and_grads(
            lambda name=name: LOSSES[name][0](hidden, weight, target, embedding, bias=bias,
                                              reduction=reduction, chunk_size=4),
            hidden, weight, bias)
        assert torch.equal(value, torch.zeros_like(value))
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_no_grad_and_partial_grads():
    hidden, weight, bias, target, embedding = make_inputs()
    with torch.no_grad():
        value = linear_emo_loss(hidden, weight, target, embedding, bias=bias, chunk_size=5)
    expected = emo_loss(logits_of(hidden, weight, bias), target, embedding)
    torch.testing.assert_close(value, expected.detach())
    frozen = weight.detach()
    (grad,) = torch.autograd.grad(linear_tailr_loss(hidden, frozen, target, gamma=0.5), hidden)
    (ref,) = torch.autograd.grad(tailr_loss(hidden @ frozen.T, target, gamma=0.5), hidden)
    torch.testing.assert_close(grad, ref)


def test_bf16_inputs():
    hidden, weight, bias, target, embedding = make_inputs(shape=(40,), vocab=300, width=16,
                                                          dtype=torch.float32)
    low = [t.detach().bfloat16().requires_grad_() for t in (hidden, weight, bias)]
    value = linear_tailr_loss(*low[:2], target, gamma=0.5, bias=low[2], chunk_size=7)
    value.backward()
    assert value.dtype == torch.float32
    assert all(t.grad.dtype == torch.bfloat16 for t in low)
    ref_params = [t.detach().double().requires_grad_() for t in low]
    ref = tailr_loss(logits_of(*ref_params), target, gamma=0.5)
    ref.backward()
    torch.testing.assert_close(value.double(), ref.detach(), rtol=2e-2, atol=1e-2)
    for ours, theirs in zip(low, ref_params, strict=True):
        torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=5e-2, atol=2e-3)


def test_bad_inputs_raise_clear_errors():
    hidden, weight, bias, target, embedding = make_inputs()
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(hidden, weight[:, :-1], target)
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(hidden, weight, target, bias=bias[:-1])
    with pytest.raises(TypeError, match="share one dtype"):
        linear_cross_entropy(hidden, weight.float(), target)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(hidden, weight, target, chunk_size=0)
    with pytest.raises(ValueError, match="does not match"):
        linear_tailr_loss(hidden, weight, target[:, :2], gamma=0.5)
    bad = target.clone()
    bad[0, 0] = 11
    with pytest.raises(ValueError, match="target ids"):
        linear_emo_loss(hidden, weight, bad, embedding)
    nan_hidden = hidden.detach().clone()
    nan_hidden[0, 0, 0] = float("nan")
    target[0, 0] = 1
    with pytest.raises(ValueError, match="not finite"):
        linear_cross_entropy(nan_hidden, weight, target, chunk_size=2)
    with pytest.raises(ValueError, match="empty batch"):
        linear_cross_entropy(hidden[:0], weight, target[:0])
    with pytest.raises(ValueError, match="zero norm"):
        linear_emo_loss(hidden, weight, target, torch.zeros(11, 3))


@pytest.mark.parametrize("mle_weight", [None, "adaptive"])
def test_the_head_itself_as_cost_equals_a_frozen_copy_and_passes_no_gradient(mle_weight):
    torch.manual_seed(3)
    hidden = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    head = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 40, (10,))
    tied = linear_emo_loss(hidden, head, target, head, mle_weight=mle_weight, chunk_size=4)
    tied.backward()
    grads = hidden.grad.clone(), head.grad.clone()
    hidden.grad = head.grad = None
    reference = linear_emo_loss(hidden, head, target, head.detach().clone(), mle_weight=mle_weight,
                                chunk_size=4)
    reference.backward()
    torch.testing.assert_close(tied, reference)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], head.grad)  # the cost passes no gradient to the head


def test_cosine_cost_matches_normalised_rows_without_copying_a_float32_embedding():
    from logitkit.losses._rows import cosine_cost

    embedding = torch.randn(30, 5) * torch.rand(30, 1) * 10
    cost = cosine_cost(embedding, 30)
    assert cost.embedding.data_ptr() == embedding.data_ptr()  # no V x D copy
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    r = torch.randn(4, 5)
    torch.testing.assert_close(cost.similarities(r), r @ unit.T)
    ids = torch.tensor([0, 7, 29])
    torch.testing.assert_close(cost.target_rows(ids), unit[ids])
    soft = torch.softmax(torch.randn(2, 30), -1)
    torch.testing.assert_close(cost.target_rows(soft), soft @ unit)
    with pytest.raises(ValueError, match="NaN or inf"):
        cosine_cost(torch.tensor([[1.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="zero norm"):
        cosine_cost(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def naive_emo_adaptive(logits, target, embedding):
    """EMO authors' per-token mixture, token by token: 0.5 (ce + min(ce/emo) * emo), ratio
    detached; emo = 1 - sum_i p_i cos(e_i, e_t); mean over counted tokens."""
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    values = []
    for row, t in zip(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), strict=True):
        if int(t) == IGNORE:
            continue
        logp = row - torch.logsumexp(row, 0)
        ce = -logp[t]
        emo = 1 - (logp.exp() * (unit @ unit[t])).sum()
        values.append(0.5 * (ce + (ce / emo).detach() * emo))
    return torch.stack(values).mean()


@pytest.mark.parametrize("chunk_size", [3, 16, None])
def test_emo_on_repeated_targets_visits_rows_by_target_and_matches_the_naive_loss(chunk_size):
    # Text repeats target ids; the engine sorts rows by target and takes EMO's target product
    # once per distinct id. Values and gradients must not depend on that order.
    hidden, weight, bias, _, embedding = make_inputs(shape=(6, 20), vocab=11)
    gen = torch.Generator().manual_seed(1)
    target = torch.tensor([7, 2, 9])[torch.randint(0, 3, (6, 20), generator=gen)]
    target.view(-1)[::7] = IGNORE
    ours = values_and_grads(
        lambda: linear_emo_loss(hidden, weight, target, embedding, mle_weight="adaptive",
                                bias=bias, chunk_size=chunk_size), hidden, weight, bias)
    ref = values_and_grads(
        lambda: naive_emo_adaptive(logits_of(hidden, weight, bias), target, embedding),
        hidden, weight, bias)
    assert_same(ours, ref)
    per_row = linear_emo_loss(hidden, weight, target, embedding, bias=bias, reduction="none",
                              chunk_size=chunk_size).detach()
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    p = logits_of(hidden, weight, bias).detach().softmax(-1)
    expected = 1 - (p * (unit[target.clamp(min=0)] @ unit.T)).sum(-1)
    torch.testing.assert_close(per_row, expected.where(target != IGNORE, 0.0))


def test_emo_takes_its_target_product_once_per_distinct_id_in_a_chunk(monkeypatch):
    from logitkit.losses import _rows

    rows_multiplied = []
    original = _rows.CosineCost.similarities

    def counting(self, r, out=None):
        rows_multiplied.append(r.shape[0])
        return original(self, r, out)

    monkeypatch.setattr(_rows.CosineCost, "similarities", counting)
    hidden, weight, bias, _, embedding = make_inputs(shape=(64,), vocab=11)
    target = torch.tensor([3, 5, 8, 5])[torch.arange(64) % 4]  # 3 ids, interleaved
    linear_emo_loss(hidden, weight, target, embedding, bias=bias, chunk_size=16).backward()
    # Sorted by target, the 4 chunks of 16 rows hold 1-2 ids each (not 3 ids in every chunk).
    assert len(rows_multiplied) == 4 and sum(rows_multiplied) <= 6
    rows_multiplied.clear()  # one chunk: its rows are sorted too, one product per id
    linear_emo_loss(hidden, weight, target, embedding, bias=bias, chunk_size=64).backward()
    assert rows_multiplied == [3]


def test_bf16_emo_runs_its_products_in_bf16_and_stays_close_to_float64():
    # A bf16 model's EMO similarity product runs in bf16 (as its logits' product does): the
    # loss and gradients stay within bf16 accuracy of the float64 loss on the same values.
    hidden, weight, bias, target, embedding = make_inputs(shape=(40,), vocab=300, width=16,
                                                          dtype=torch.float32)
    low = [t.detach().bfloat16().requires_grad_() for t in (hidden, weight, bias)]
    low_embedding = embedding.bfloat16()
    value = linear_emo_loss(*low[:2], target, low_embedding, mle_weight="adaptive",
                            bias=low[2], chunk_size=7)
    value.backward()
    ref_params = [t.detach().double().requires_grad_() for t in low]
    ref = naive_emo_adaptive(logits_of(*ref_params), target, low_embedding.double())
    ref.backward()
    torch.testing.assert_close(value.double(), ref.detach(), rtol=2e-2, atol=1e-2)
    for ours, theirs in zip(low, ref_params, strict=True):
        torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=5e-2, atol=2e-3)


def test_a_bf16_head_takes_one_chunk_where_that_needs_less_memory_than_a_float32_sum():
    # Several chunks of a bf16 weight sum its gradient in a float32 V x d buffer; one chunk of
    # N rows needs an N x V float32 block instead, the smaller one when N <= d + M.
    cpu = torch.device("cpu")
    assert fused_module.default_chunk_rows(512, 131072, 1024, 1, cpu, torch.bfloat16) == 512
    assert fused_module.default_chunk_rows(512, 131072, 1024, 1, cpu, torch.float32) == 256
    assert fused_module.default_chunk_rows(4096, 32768, 512, 1, cpu, torch.bfloat16) == 256
