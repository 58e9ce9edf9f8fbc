"""cosent_loss (sorted, O(N log N)) vs the naive N x N formula: values, gradients, ties, dtypes."""

import math

import pytest
import torch

from logitkit.matching import cosent_loss


def naive_double_loop(scores, labels, scale):
    """log(1 + sum over (i, j) with labels[i] > labels[j] of exp(scale * (s_j - s_i)))."""
    total = 1.0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if labels[i] > labels[j]:
                total += math.exp(scale * (scores[j] - scores[i]))
    return math.log(total)


def naive_matrix(scores, labels, scale):
    """The same formula on the full N x N matrix (differentiable, stable): the reference."""
    differences = scale * (scores[None, :] - scores[:, None])  # [i, j] = scale * (s_j - s_i)
    ordered = labels[:, None] > labels[None, :]
    differences = differences.masked_fill(~ordered, float("-inf"))
    return torch.logsumexp(torch.cat([differences.new_zeros(1), differences.flatten()]), dim=0)


def tie_pattern(kind, n, gen):
    """Labels with a given structure of ties, as float64."""
    if kind == "distinct":
        return torch.randperm(n, generator=gen).double() * 0.37
    if kind == "all_tied":
        return torch.full((n,), 2.5, dtype=torch.float64)
    if kind == "two_groups":
        return (torch.rand(n, generator=gen) < 0.5).double()
    if kind == "few_values":
        return torch.randint(0, 4, (n,), generator=gen).double()
    if kind == "one_outlier_top":
        labels = torch.zeros(n, dtype=torch.float64)
        labels[n // 2] = 1.0
        return labels
    if kind == "one_outlier_bottom":
        labels = torch.ones(n, dtype=torch.float64)
        labels[0] = -3.0
        return labels
    if kind == "stsb_like":  # STS-B scores: steps of 0.2 in [0, 5], many ties
        return torch.randint(0, 26, (n,), generator=gen).double() / 5
    raise AssertionError(kind)


TIE_KINDS = ["distinct", "all_tied", "two_groups", "few_values", "one_outlier_top",
             "one_outlier_bottom", "stsb_like"]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 32])
@pytest.mark.parametrize("kind", TIE_KINDS)
@pytest.mark.parametrize("scale", [0.5, 1.0, 20.0, 300.0])
def test_value_matches_naive_double_loop(n, kind, scale):
    gen = torch.Generator().manual_seed(1000 * n + len(kind))
    scores = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    labels = tie_pattern(kind, n, gen)
    got = cosent_loss(scores, labels, scale=scale).item()
    expected = naive_double_loop(scores.tolist(), labels.tolist(), scale)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kind", TIE_KINDS)
@pytest.mark.parametrize("scale", [1.0, 20.0, 50.0])
def test_value_and_gradient_match_the_matrix_formula(kind, scale):
    gen = torch.Generator().manual_seed(len(kind))
    n = 257
    scores = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = tie_pattern(kind, n, gen)
    ours = cosent_loss(scores, labels, scale=scale)
    (grad_ours,) = torch.autograd.grad(ours, scores)
    reference = naive_matrix(scores, labels, scale)
    (grad_reference,) = torch.autograd.grad(reference, scores)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", TIE_KINDS)
def test_gradcheck_float64(kind):
    gen = torch.Generator().manual_seed(7)
    scores = torch.randn(9, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = tie_pattern(kind, 9, gen)
    assert torch.autograd.gradcheck(lambda s: cosent_loss(s, labels, scale=3.0), (scores,))
    assert torch.autograd.gradgradcheck(lambda s: cosent_loss(s, labels, scale=3.0), (scores,))


def test_tied_pairs_contribute_nothing():
    # labels [2, 2, 0]: only the pairs (0, 2) and (1, 2) count, never (0, 1) or (1, 0)
    scores = torch.tensor([0.1, 0.7, 0.4], dtype=torch.float64)
    labels = torch.tensor([2.0, 2.0, 0.0])
    expected = math.log(1 + math.exp(5 * (0.4 - 0.1)) + math.exp(5 * (0.4 - 0.7)))
    assert cosent_loss(scores, labels, scale=5.0).item() == pytest.approx(expected, rel=1e-12)
    # moving scores inside a tie group changes nothing that the tie could have added
    swapped = scores[[1, 0, 2]]
    assert cosent_loss(swapped, labels, scale=5.0).item() == pytest.approx(expected, rel=1e-12)


def test_batch_order_and_label_transform_do_not_matter():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(50, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 6, (50,), generator=gen).double()
    base = cosent_loss(scores, labels).item()
    perm = torch.randperm(50, generator=gen)
    assert cosent_loss(scores[perm], labels[perm]).item() == pytest.approx(base, rel=1e-12)
    assert cosent_loss(scores, 7 * labels**3 + 2).item() == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("labels", [[3.0, 3.0, 3.0, 3.0], [1.5]])
def test_batch_without_ordered_pair_is_zero_with_zero_grad(labels):
    scores = torch.linspace(-1, 1, len(labels), requires_grad=True)
    loss = cosent_loss(scores, torch.tensor(labels), scale=20.0)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_column_shapes_integer_and_boolean_labels():
    scores = torch.tensor([0.3, -0.2, 0.9, 0.1], dtype=torch.float64)
    labels = torch.tensor([2, 0, 5, 2])
    expected = naive_double_loop(scores.tolist(), labels.tolist(), 20.0)
    for s, y in [(scores, labels), (scores, labels[:, None]), (scores[:, None], labels),
                 (scores[:, None], labels[:, None].double())]:
        assert cosent_loss(s, y).item() == pytest.approx(expected, rel=1e-12)
    flags = torch.tensor([True, False, True, False])
    expected = naive_double_loop(scores.tolist(), flags.int().tolist(), 20.0)
    assert cosent_loss(scores, flags).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    gen = torch.Generator().manual_seed(3)
    n = 1024
    exact_scores = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 26, (n,), generator=gen).double() / 5
    half = exact_scores.to(dtype).requires_grad_()
    loss = cosent_loss(half, labels.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and half.grad.dtype == dtype
    # reference: the same half-rounded scores, the formula in float64
    rounded = half.detach().double().requires_grad_()
    reference = naive_matrix(rounded, labels.to(dtype).double(), 20.0)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    # the gradient is only rounded once, to the input dtype (eps 2^-8 for bf16, 2^-11 for fp16)
    eps = torch.finfo(dtype).eps
    error = (half.grad.double() - rounded.grad).abs().max() / rounded.grad.abs().max()
    assert error <= eps


def test_float32_matches_float64_closely_at_large_n():
    gen = torch.Generator().manual_seed(5)
    n = 1500
    scores = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 26, (n,), generator=gen).double() / 5
    exact = naive_matrix(scores, labels, 20.0).item()
    assert cosent_loss(scores.float(), labels.float()).item() == pytest.approx(exact, rel=1e-5)


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


def test_equals_sentence_transformers_cosent_loss():
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(64, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 6, (64,), generator=gen).double()
    theirs = losses.CoSENTLoss(model=None, scale=20.0).compute_loss_from_embeddings([u, v], labels)
    (grad_theirs,) = torch.autograd.grad(theirs, u)
    ours = cosent_loss(torch.nn.functional.cosine_similarity(u, v), labels)
    (grad_ours,) = torch.autograd.grad(ours, u)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "error", "match"),
    [
        (torch.zeros(3), torch.zeros(4), {}, ValueError, "same length"),
        (torch.zeros(2, 2), torch.zeros(2, 2), {}, ValueError, r"1-D or \(N, 1\)"),
        (torch.zeros(2), torch.zeros(1, 2), {}, ValueError, r"labels must be 1-D or \(N, 1\)"),
        (torch.zeros(0), torch.zeros(0), {}, ValueError, "non-empty"),
        (torch.tensor([0.1, float("nan")]), torch.zeros(2), {}, ValueError, "NaN"),
        (torch.zeros(2), torch.tensor([1.0, float("inf")]), {}, ValueError, "NaN"),
        (torch.tensor([1, 2]), torch.zeros(2), {}, TypeError, "floating-point"),
        ([0.1, 0.2], torch.zeros(2), {}, TypeError, "torch.Tensor"),
        (torch.zeros(2), torch.zeros(2), {"scale": 0.0}, ValueError, "scale"),
        (torch.zeros(2), torch.zeros(2), {"scale": float("inf")}, ValueError, "scale"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        cosent_loss(scores, labels, **kwargs)
