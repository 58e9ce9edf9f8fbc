"""EMO, EMO + MLE and TaiLr on logits, against naive references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from logitkit.losses import emo_loss, emo_mle_loss, tailr_gamma_schedule, tailr_loss

IGNORE = -100


# ----------------------------------------------------------------------------------------------
# Naive references: explicit V x V cost matrix, explicit loops over tokens.


def naive_cost_matrix(embedding):
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    return 1.0 - unit @ unit.T


def naive_token_losses(logits, target, per_token):
    """Loop over tokens; returns a list of (loss, counted) per token."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_target = target.reshape(-1)
    out = []
    for row, t in zip(flat_logits, flat_target, strict=True):
        if int(t) == IGNORE:
            out.append(None)
        else:
            out.append(per_token(torch.softmax(row, dim=0), int(t)))
    return out


def reduce_naive(values, reduction, shape):
    counted = [v for v in values if v is not None]
    zero = torch.zeros((), dtype=torch.float64)
    if reduction == "none":
        return torch.stack([zero if v is None else v for v in values]).reshape(shape)
    total = sum(counted, zero)
    if reduction == "sum":
        return total
    return total / len(counted) if counted else zero


def naive_emo(logits, target, embedding, reduction="mean"):
    cost = naive_cost_matrix(embedding)
    values = naive_token_losses(logits, target, lambda p, t: (p * cost[:, t]).sum())
    return reduce_naive(values, reduction, target.shape)


def naive_soft_emo_bound(logits, probs, embedding):
    cost = naive_cost_matrix(embedding)
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("...i,ij,...j->...", p, cost, probs).mean()


def naive_ce(logits, target, reduction="mean"):
    values = naive_token_losses(logits, target, lambda p, t: -torch.log(p[t]))
    return reduce_naive(values, reduction, target.shape)


def naive_tailr(logits, target, gamma, threshold=None, reduction="mean"):
    def per_token(p, t):
        pt = p[t]
        if threshold is not None:
            w = (pt / (gamma + (1 - gamma) * pt)).detach()
            return -torch.clamp(w, min=threshold) * torch.log(pt)
        if gamma == 1.0:
            return 1.0 - pt
        return -torch.log(gamma + (1 - gamma) * pt) / (1 - gamma)

    return reduce_naive(naive_token_losses(logits, target, per_token), reduction, target.shape)


# ----------------------------------------------------------------------------------------------


def make_inputs(shape=(3, 5), vocab=7, width=4, seed=0, ignore_some=True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, vocab, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, vocab, shape, generator=gen)
    if ignore_some:
        target.view(-1)[::4] = IGNORE
    embedding = torch.randn(vocab, width, generator=gen, dtype=torch.float64)
    return logits.requires_grad_(), target, embedding


def value_and_grad(fn, logits):
    value = fn(logits)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    return value.detach(), grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("width", [1, 3, 16])
def test_emo_matches_the_cost_matrix_reference(reduction, width):
    logits, target, embedding = make_inputs(width=width)
    ours = value_and_grad(lambda x: emo_loss(x, target, embedding, reduction=reduction), logits)
    ref = value_and_grad(lambda x: naive_emo(x, target, embedding, reduction), logits)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_emo_soft_target_matches_the_bound_and_one_hot_equals_ids():
    logits, target, embedding = make_inputs(ignore_some=False)
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(logits.shape, generator=gen, dtype=torch.float64), -1)
    ours = value_and_grad(lambda x: emo_loss(x, probs, embedding), logits)
    ref = value_and_grad(lambda x: naive_soft_emo_bound(x, probs, embedding), logits)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    one_hot = torch.nn.functional.one_hot(target, logits.shape[-1]).double()
    soft = value_and_grad(lambda x: emo_loss(x, one_hot, embedding, reduction="none"), logits)
    ids = value_and_grad(lambda x: emo_loss(x, target, embedding, reduction="none"), logits)
    torch.testing.assert_close(soft[0], ids[0])
    torch.testing.assert_close(soft[1], ids[1])


def exact_emd(p, q, cost):
    """Earth mover's distance by linear programming (transport plan with marginals p, q)."""
    n = len(p)
    rows = np.kron(np.eye(n), np.ones(n))
    cols = np.kron(np.ones(n), np.eye(n))
    res = linprog(cost.reshape(-1), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([p, q]),
                  bounds=(0, None), method="highs")
    return res.fun


def test_emo_is_the_exact_emd_for_ids_and_an_upper_bound_for_soft_targets():
    gen = torch.Generator().manual_seed(3)
    vocab = 5
    embedding = torch.randn(vocab, 3, generator=gen, dtype=torch.float64)
    cost = naive_cost_matrix(embedding).numpy()
    logits = torch.randn(6, vocab, generator=gen, dtype=torch.float64)
    p = torch.softmax(logits, -1).numpy()
    target = torch.randint(0, vocab, (6,), generator=gen)
    exact = emo_loss(logits, target, embedding, reduction="none")
    soft = torch.softmax(torch.randn(6, vocab, generator=gen, dtype=torch.float64), -1)
    bound = emo_loss(logits, soft, embedding, reduction="none")
    for i in range(6):
        one_hot = np.eye(vocab)[int(target[i])]
        assert exact[i].item() == pytest.approx(exact_emd(p[i], one_hot, cost), abs=1e-7)
        assert bound[i].item() >= exact_emd(p[i], soft[i].numpy(), cost) - 1e-9


def test_emo_cost_embedding_gets_no_gradient_and_zero_rows_are_rejected():
    logits, target, embedding = make_inputs()
    embedding.requires_grad_()
    emo_loss(logits, target, embedding).backward()
    assert embedding.grad is None
    bad = embedding.detach().clone()
    bad[2] = 0.0
    with pytest.raises(ValueError, match="zero norm"):
        emo_loss(logits, target, bad)
    with pytest.raises(ValueError, match="rows"):
        emo_loss(logits, target, embedding[:-1])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mle_weight", [0.0, 0.25, 1.0])
def test_emo_mle_fixed_mixture(reduction, mle_weight):
    logits, target, embedding = make_inputs()

    def ref(x):
        return (mle_weight * naive_ce(x, target, reduction)
                + (1 - mle_weight) * naive_emo(x, target, embedding, reduction))

    ours = value_and_grad(lambda x: emo_mle_loss(x, target, embedding, mle_weight=mle_weight,
                                                 reduction=reduction), logits)
    expected = value_and_grad(ref, logits)
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


def naive_authors_per_token_mixture(x, target, embedding, cap, reduction):
    """The EMO authors' mixture, token by token: 0.5 * (ce + min(ce / emo, cap).detach() * emo)."""
    ce = naive_ce(x, target, "none")
    emo = naive_emo(x, target, embedding, "none")
    ratio = (ce / emo).detach()
    if cap is not None:
        ratio = ratio.clamp(max=cap)
    per_token = 0.5 * (ce + ratio * emo)
    counted = target != IGNORE
    per_token = torch.where(counted, per_token, torch.zeros_like(per_token))
    if reduction == "none":
        return per_token
    return per_token.sum() / (counted.sum() if reduction == "mean" else 1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("cap", [None, 3.0, 0.4])
def test_emo_mle_adaptive_is_the_authors_per_token_mixture(reduction, cap):
    logits, target, embedding = make_inputs(seed=5)
    ours = value_and_grad(lambda x: emo_mle_loss(x, target, embedding, adaptive_cap=cap,
                                                 reduction=reduction), logits)
    expected = value_and_grad(
        lambda x: naive_authors_per_token_mixture(x, target, embedding, cap, reduction), logits)
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])
    default = value_and_grad(lambda x: emo_mle_loss(x, target, embedding, mle_weight="adaptive",
                                                    adaptive_cap=cap, reduction=reduction),
                             logits)
    torch.testing.assert_close(default[1], ours[1])


def test_emo_mle_adaptive_without_cap_has_the_value_of_cross_entropy():
    """0.5 * (ce + (ce / emo) * emo) = ce per token: only the gradient differs from CE."""
    logits, target, embedding = make_inputs(seed=6)
    mixture = emo_mle_loss(logits, target, embedding, reduction="none")
    torch.testing.assert_close(mixture, naive_ce(logits, target, "none").detach())
    capped = emo_mle_loss(logits, target, embedding, adaptive_cap=1e-3, reduction="none")
    assert (capped[target != IGNORE] < mixture[target != IGNORE]).all()


def naive_batch_ratio_mixture(x, target, embedding, cap=None):
    ce, emo = naive_ce(x, target), naive_emo(x, target, embedding)
    ratio = (ce / emo).detach()
    if cap is not None:
        ratio = ratio.clamp(max=cap)
    return 0.5 * (ce + ratio * emo)


@pytest.mark.parametrize("cap", [None, 0.5])
def test_emo_mle_adaptive_batch_uses_one_ratio_per_batch(cap):
    logits, target, embedding = make_inputs()
    ours = value_and_grad(lambda x: emo_mle_loss(x, target, embedding, mle_weight="adaptive_batch",
                                                 adaptive_cap=cap), logits)
    expected = value_and_grad(lambda x: naive_batch_ratio_mixture(x, target, embedding, cap),
                              logits)
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])
    per_token = emo_mle_loss(logits, target, embedding, mle_weight="adaptive_batch",
                             adaptive_cap=cap, reduction="none")
    counted = target != IGNORE
    torch.testing.assert_close(per_token[counted].mean(), ours[0])


def test_per_token_and_batch_ratios_give_different_gradients():
    logits, target, embedding = make_inputs(seed=7)
    per_token = value_and_grad(lambda x: emo_mle_loss(x, target, embedding), logits)[1]
    batch = value_and_grad(lambda x: emo_mle_loss(x, target, embedding,
                                                  mle_weight="adaptive_batch"), logits)[1]
    assert not torch.allclose(per_token, batch, rtol=1e-2, atol=1e-4)


def test_emo_mle_adaptive_options_are_validated():
    logits, target, embedding = make_inputs()
    with pytest.raises(ValueError, match="adaptive_cap applies only"):
        emo_mle_loss(logits, target, embedding, mle_weight=0.5, adaptive_cap=3.0)
    for cap in (0.0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="adaptive_cap must be"):
            emo_mle_loss(logits, target, embedding, adaptive_cap=cap)
    with pytest.raises(ValueError, match="adaptive_batch"):
        emo_mle_loss(logits, target, embedding, mle_weight="per_token")


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_tailr_closed_form(gamma, reduction):
    logits, target, _ = make_inputs()
    ours = value_and_grad(lambda x: tailr_loss(x, target, gamma=gamma, reduction=reduction),
                          logits)
    ref = value_and_grad(lambda x: naive_tailr(x, target, gamma, reduction=reduction), logits)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


@pytest.mark.parametrize("gamma,threshold", [(0.0, 0.2), (0.5, 0.3), (0.9, 0.0), (1.0, 0.5)])
def test_tailr_thresholded_form(gamma, threshold):
    logits, target, _ = make_inputs(seed=2)
    ours = value_and_grad(lambda x: tailr_loss(x, target, gamma=gamma, threshold=threshold),
                          logits)
    ref = value_and_grad(lambda x: naive_tailr(x, target, gamma, threshold), logits)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_tailr_gamma_zero_is_cross_entropy_and_gamma_one_is_one_minus_p():
    logits, target, _ = make_inputs()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), target.reshape(-1))
    torch.testing.assert_close(tailr_loss(logits, target, gamma=0.0), ce)
    counted = target != IGNORE
    p_t = torch.softmax(logits, -1)[counted].gather(1, target[counted][:, None])
    torch.testing.assert_close(tailr_loss(logits, target, gamma=1.0), (1 - p_t).mean())


def test_tailr_near_gamma_one_is_accurate_in_float32():
    """No cancellation as gamma -> 1: float32 results match a float64 series reference.

    The reference starts from the float32 log-softmax (whose own rounding any float32 loss has).
    """
    logits = torch.tensor([[9.0, 0.0, -3.0], [0.0, 0.1, 0.2], [-20.0, 5.0, 5.0]])
    target = torch.tensor([0, 1, 0])
    logp_t = torch.log_softmax(logits, -1).gather(1, target[:, None]).squeeze(1)
    p_t = logp_t.double().exp()
    for gap in (1e-3, 1e-6, 1e-9, 1e-12):
        gamma = 1.0 - gap
        x = p_t - 1.0  # -log(1 + a x) / a = -x + a x^2 / 2 - a^2 x^3 / 3 + ...
        expected = -x + gap * x**2 / 2 - gap**2 * x**3 / 3 + gap**3 * x**4 / 4
        ours = tailr_loss(logits, target, gamma=gamma, reduction="none")
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-7)
    at_one = tailr_loss(logits, target, gamma=1.0, reduction="none")
    torch.testing.assert_close(at_one.double(), 1 - p_t, rtol=1e-5, atol=1e-7)


def test_tailr_handles_vanishing_probabilities_at_small_gamma():
    logits = torch.tensor([[0.0, -200.0], [50.0, -60.0]])
    target = torch.tensor([1, 1])
    for gamma in (0.0, 1e-30, 0.3):
        values = tailr_loss(logits, target, gamma=gamma, reduction="none")
        assert torch.isfinite(values).all()
    torch.testing.assert_close(tailr_loss(logits, target, gamma=0.0, reduction="none"),
                               torch.tensor([200.0, 110.0]))


def test_tailr_gamma_schedule():
    assert tailr_gamma_schedule(0, 10) == 0.0
    assert tailr_gamma_schedule(5, 10) == pytest.approx(0.5)
    assert tailr_gamma_schedule(10, 10) == 1.0
    assert tailr_gamma_schedule(50, 10) == 1.0
    assert tailr_gamma_schedule(3, 4, start=0.2, end=0.6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="total_steps"):
        tailr_gamma_schedule(1, 0)
    with pytest.raises(ValueError, match="start and end"):
        tailr_gamma_schedule(1, 2, end=1.5)


def test_gradcheck_in_float64():
    logits, target, embedding = make_inputs(shape=(2, 3), vocab=5, width=3)
    probs = torch.softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1)
    checks = [
        lambda x: emo_loss(x, target, embedding, reduction="none"),
        lambda x: emo_loss(x, probs, embedding),
        lambda x: emo_mle_loss(x, target, embedding, mle_weight=0.3, reduction="none"),
        # A detached ratio is invisible to finite differences, except where the cap binds on
        # every token (ratio = cap, a constant): then the per-token mixture is a smooth function.
        lambda x: emo_mle_loss(x, target, embedding, adaptive_cap=1e-3, reduction="none"),
        lambda x: emo_mle_loss(x, target, embedding, mle_weight="adaptive_batch",
                               adaptive_cap=1e-3, reduction="sum"),
        lambda x: tailr_loss(x, target, gamma=0.0, reduction="none"),
        lambda x: tailr_loss(x, target, gamma=0.7, reduction="sum"),
        lambda x: tailr_loss(x, target, gamma=1.0),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (logits,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_batch_gives_zero_loss_and_zero_grad(reduction):
    logits, _, embedding = make_inputs()
    target = torch.full(logits.shape[:-1], IGNORE)
    with torch.no_grad():
        logits[0, 0, 0] = float("nan")  # ignored rows are never looked at
    for fn in (lambda x: emo_loss(x, target, embedding, reduction=reduction),
               lambda x: emo_mle_loss(x, target, embedding, reduction=reduction),
               lambda x: emo_mle_loss(x, target, embedding, mle_weight="adaptive_batch",
                                      reduction=reduction),
               lambda x: tailr_loss(x, target, gamma=0.5, reduction=reduction)):
        value, grad = value_and_grad(fn, logits)
        assert torch.equal(value, torch.zeros_like(value))
        assert torch.equal(grad, torch.zeros_like(grad))


def test_custom_ignore_index_and_masked_logits():
    logits, target, embedding = make_inputs(ignore_some=False)
    target[0, 0] = 3
    with torch.no_grad():
        logits[..., 6] = -math.inf  # a masked class, never the target below
    target[target == 6] = 0
    ours = emo_loss(logits, target, embedding, ignore_index=3)
    mask = target != 3
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, emo_loss(logits[mask], target[mask], embedding))


def test_bf16_inputs_use_float32_math():
    logits, target, embedding = make_inputs(shape=(4, 6), vocab=50)
    low = logits.detach().bfloat16().requires_grad_()
    reference = logits.detach().bfloat16().double().requires_grad_()
    for ours_fn, ref_fn in [
        (lambda x: emo_loss(x, target, embedding), lambda x: naive_emo(x, target, embedding)),
        (lambda x: tailr_loss(x, target, gamma=0.9), lambda x: naive_tailr(x, target, 0.9)),
    ]:
        value, grad = value_and_grad(ours_fn, low)
        ref_value, ref_grad = value_and_grad(ref_fn, reference)
        assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16
        torch.testing.assert_close(value.double(), ref_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-2, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    logits, target, embedding = make_inputs()
    bad_target = target.clone()
    bad_target[0, 1] = 7
    with pytest.raises(ValueError, match=r"target ids must be in \[0, 7\)"):
        emo_loss(logits, bad_target, embedding)
    bad_target[0, 1] = -1
    with pytest.raises(ValueError, match="target ids"):
        tailr_loss(logits, bad_target, gamma=0.5)
    with pytest.raises(ValueError, match="does not match"):
        tailr_loss(logits, target[:, :-1], gamma=0.5)
    nan_logits = logits.detach().clone()
    nan_logits[1, 1, 2] = float("nan")
    target[1, 1] = 0
    with pytest.raises(ValueError, match="not finite"):
        tailr_loss(nan_logits, target, gamma=0.5)
    with pytest.raises(ValueError, match="not finite"):
        emo_loss(nan_logits, target, embedding)
    with pytest.raises(ValueError, match="empty batch"):
        tailr_loss(logits[:0], target[:0], gamma=0.5)
    with pytest.raises(TypeError, match="integer class ids"):
        tailr_loss(logits, torch.softmax(logits.detach(), -1), gamma=0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        emo_loss(logits, torch.ones_like(logits), embedding)
    with pytest.raises(ValueError, match="reduction"):
        emo_loss(logits, target, embedding, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        tailr_loss(logits, target, gamma=1.5)
    with pytest.raises(ValueError, match="threshold"):
        tailr_loss(logits, target, gamma=0.5, threshold=-0.1)
    with pytest.raises(ValueError, match="mle_weight"):
        emo_mle_loss(logits, target, embedding, mle_weight="auto")
