"""cosent_loss against a naive double loop; gradients, ties, empty orderings, stability, errors."""

import math

import pytest
import torch

from logitkit.matching import CoSENTLoss, cosent_loss


def naive_cosent(scores, labels, scale):
    """log(1 + sum over (i, j) with labels[i] > labels[j] of exp(scale * (s_j - s_i)))."""
    total = 1.0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if labels[i] > labels[j]:
                total += math.exp(scale * (scores[j] - scores[i]))
    return math.log(total)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("label_kind", ["integer_ties", "continuous"])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_matches_naive_double_loop(n, label_kind, scale):
    gen = torch.Generator().manual_seed(n)
    scores = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    if label_kind == "integer_ties":
        labels = torch.randint(0, 4, (n,), generator=gen).double()
    else:
        labels = torch.rand(n, generator=gen, dtype=torch.float64) * 5
    expected = naive_cosent(scores.tolist(), labels.tolist(), scale)
    assert cosent_loss(scores, labels, scale=scale).item() == pytest.approx(expected, rel=1e-12)


def test_float32_and_integer_labels_agree_with_naive():
    scores = torch.tensor([0.3, -0.2, 0.9, 0.1])
    labels = torch.tensor([2, 0, 5, 2])
    expected = naive_cosent(scores.tolist(), labels.tolist(), 20.0)
    loss = cosent_loss(scores, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_gradcheck_float64_with_ties():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1.0, 3.0, 1.0, 2.5, 3.0, 0.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: cosent_loss(s, labels, scale=3.0), (scores,))


def test_ties_are_ignored():
    # labels [2, 2, 0]: only the pairs (0, 2) and (1, 2) count, never (0, 1) or (1, 0)
    scores = torch.tensor([0.1, 0.7, 0.4], dtype=torch.float64)
    labels = torch.tensor([2.0, 2.0, 0.0])
    expected = math.log(1 + math.exp(5 * (0.4 - 0.1)) + math.exp(5 * (0.4 - 0.7)))
    assert cosent_loss(scores, labels, scale=5.0).item() == pytest.approx(expected, rel=1e-12)
    swapped = scores[[1, 0, 2]]
    assert cosent_loss(swapped, labels, scale=5.0).item() == pytest.approx(expected, rel=1e-12)


def test_only_label_order_matters():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(10, generator=gen, dtype=torch.float64)
    labels = torch.rand(10, generator=gen, dtype=torch.float64)
    base = cosent_loss(scores, labels)
    assert cosent_loss(scores, 7 * labels**3 + 2).item() == pytest.approx(base.item(), rel=1e-12)


@pytest.mark.parametrize("labels", [[3.0, 3.0, 3.0, 3.0], [1.5]])
def test_batch_without_ordered_pair_is_zero_with_zero_grad(labels):
    scores = torch.linspace(-1, 1, len(labels), requires_grad=True)
    loss = cosent_loss(scores, torch.tensor(labels), scale=20.0)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_large_scale_is_stable():
    # naive exp(1e4 * 2) overflows; the loss must approach its largest term, with finite grads
    scores = torch.tensor([-1.0, 1.0, 0.0], requires_grad=True)
    labels = torch.tensor([2.0, 0.0, 1.0])
    scale = 1e4
    loss = cosent_loss(scores, labels, scale=scale)
    loss.backward()
    largest_term = scale * (1.0 - (-1.0))  # pair (0, 1): labels 2 > 0, s_1 - s_0 = 2
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    assert largest_term <= loss.item() <= largest_term + math.log(4)
    # correctly ordered pairs far apart give a loss of ~0, not NaN
    good = cosent_loss(torch.tensor([5.0, -5.0]), torch.tensor([1.0, 0.0]), scale=scale)
    assert good.item() == 0.0


def test_module_wrapper_matches_function():
    scores, labels = torch.tensor([0.2, 0.8, -0.1]), torch.tensor([1.0, 0.5, 3.0])
    module = CoSENTLoss(scale=7.0)
    assert torch.equal(module(scores, labels), cosent_loss(scores, labels, scale=7.0))
    assert "scale=7.0" in repr(module)


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "error", "match"),
    [
        (torch.zeros(3), torch.zeros(4), {}, ValueError, "same length"),
        (torch.zeros(2, 2), torch.zeros(2, 2), {}, ValueError, "1-D"),
        (torch.zeros(0), torch.zeros(0), {}, ValueError, "non-empty"),
        (torch.tensor([0.1, float("nan")]), torch.zeros(2), {}, ValueError, "NaN"),
        (torch.zeros(2), torch.tensor([1.0, float("nan")]), {}, ValueError, "NaN"),
        (torch.tensor([1, 2]), torch.zeros(2), {}, TypeError, "floating-point"),
        ([0.1, 0.2], torch.zeros(2), {}, TypeError, "torch.Tensor"),
        (torch.zeros(2), torch.zeros(2), {"scale": 0.0}, ValueError, "scale"),
        (torch.zeros(2), torch.zeros(2), {"scale": float("inf")}, ValueError, "scale"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        cosent_loss(scores, labels, **kwargs)
