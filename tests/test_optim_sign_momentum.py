"""Tiger and Lion against a naive per-element reference, lazy rows, sparse gradients, resume."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from logitkit.optim import Lion, Tiger


def naive_lion(init, grads, *, lr, b1, b2, wd, maximize=False, lazy=False):
    """Python loops over elements (float64): returns (param, momentum) as nested lists."""
    rows, cols = len(init), len(init[0])
    p = [list(map(float, row)) for row in init]
    m = [[0.0] * cols for _ in range(rows)]
    for grad in grads:
        for r in range(rows):
            if lazy and all(grad[r][c] == 0 for c in range(cols)):
                continue
            for c in range(cols):
                g = -grad[r][c] if maximize else grad[r][c]
                mixed = b1 * m[r][c] + (1 - b1) * g
                u = (mixed > 0) - (mixed < 0)
                m[r][c] = b2 * m[r][c] + (1 - b2) * g
                p[r][c] = p[r][c] - lr * (u + wd * p[r][c])
    return p, m


def _run(optimizer_factory, init, grads):
    param = nn.Parameter(init.clone())
    optimizer = optimizer_factory([param])
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    return param.detach(), optimizer.state[param]["momentum"]


def _random_grads(shape, steps, seed, zero_rows=()):
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for step in range(steps):
        grad = torch.randn(shape, generator=generator)
        for row in zero_rows:
            if (row + step) % 2 == 0:
                grad[row] = 0.0
        grads.append(grad)
    return grads


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(
    "name, factory, betas",
    [
        ("lion", lambda p, **kw: Lion(p, lr=0.03, betas=(0.8, 0.95), weight_decay=0.1, **kw),
         (0.8, 0.95)),
        ("tiger", lambda p, **kw: Tiger(p, lr=0.03, beta=0.9, weight_decay=0.1, **kw),
         (0.9, 0.9)),
    ],
)
def test_matches_naive_per_element_reference(name, factory, betas, lazy, maximize):
    init = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    grads = _random_grads((4, 3), steps=6, seed=2, zero_rows=(1, 2))
    param, momentum = _run(lambda ps: factory(ps, lazy=lazy, maximize=maximize), init, grads)
    expected_p, expected_m = naive_lion(init.tolist(), [g.tolist() for g in grads], lr=0.03,
                                        b1=betas[0], b2=betas[1], wd=0.1, maximize=maximize,
                                        lazy=lazy)
    torch.testing.assert_close(param, torch.tensor(expected_p), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(momentum, torch.tensor(expected_m), rtol=1e-5, atol=1e-6)


def test_tiger_is_lion_with_equal_betas_bitwise():
    init = torch.randn(5, 4)
    grads = _random_grads((5, 4), steps=5, seed=3)
    tiger = _run(lambda ps: Tiger(ps, lr=0.01, beta=0.9, weight_decay=0.05), init, grads)
    lion = _run(lambda ps: Lion(ps, lr=0.01, betas=(0.9, 0.9), weight_decay=0.05), init, grads)
    assert torch.equal(tiger[0], lion[0]) and torch.equal(tiger[1], lion[1])


def _model_and_batches(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(20, 6), nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8),
                          nn.Linear(8, 20))
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [torch.randint(0, 20, (7,), generator=generator) for _ in range(8)]
    return model, batches


def _train(model, optimizer, batches):
    for ids in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(ids), ids.roll(1)).backward()
        optimizer.step()


@pytest.mark.parametrize("cls, options", [(Tiger, {}), (Lion, {"betas": (0.9, 0.99)})])
@pytest.mark.parametrize("momentum_dtype", [None, torch.bfloat16])
def test_foreach_and_plain_paths_are_identical(cls, options, momentum_dtype):
    results = []
    for foreach in (False, True):
        model, batches = _model_and_batches()
        optimizer = cls(model.parameters(), lr=0.01, weight_decay=0.1, foreach=foreach,
                        momentum_dtype=momentum_dtype, **options)
        _train(model, optimizer, batches)
        results.append((list(model.parameters()),
                        [optimizer.state[p]["momentum"] for p in model.parameters()]))
    (params_a, moms_a), (params_b, moms_b) = results
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(moms_a, moms_b, strict=True))
    expected = momentum_dtype or torch.float32
    assert all(m.dtype == expected for m in moms_a)


def test_bf16_momentum_is_the_rounded_fp32_momentum_after_one_step():
    init, grad = torch.randn(6, 5), torch.randn(6, 5)
    _, m32 = _run(lambda ps: Tiger(ps, lr=0.01), init, [grad])
    _, m16 = _run(lambda ps: Tiger(ps, lr=0.01, momentum_dtype=torch.bfloat16), init, [grad])
    assert m16.dtype == torch.bfloat16
    assert torch.equal(m16, m32.to(torch.bfloat16))


def test_lazy_rows_with_zero_gradient_keep_value_and_momentum_bitwise():
    param = nn.Parameter(torch.randn(6, 4))
    optimizer = Tiger([param], lr=0.1, weight_decay=0.1, lazy=True)
    param.grad = torch.randn(6, 4)
    optimizer.step()
    before_p, before_m = param.detach().clone(), optimizer.state[param]["momentum"].clone()
    grad = torch.randn(6, 4)
    grad[[0, 3, 5]] = 0.0
    param.grad = grad
    optimizer.step()
    after_m = optimizer.state[param]["momentum"]
    for row in (0, 3, 5):
        assert torch.equal(param[row], before_p[row]) and torch.equal(after_m[row], before_m[row])
    for row in (1, 2, 4):
        assert not torch.equal(param[row], before_p[row])
        assert not torch.equal(after_m[row], before_m[row])


def test_non_lazy_rows_with_zero_gradient_still_move():
    param = nn.Parameter(torch.randn(3, 4))
    optimizer = Tiger([param], lr=0.1, weight_decay=0.0)
    param.grad = torch.randn(3, 4)
    optimizer.step()
    before = param.detach().clone()
    param.grad = torch.zeros(3, 4)
    optimizer.step()  # stale momentum keeps its sign: every entry moves by exactly lr
    torch.testing.assert_close((param - before).abs(), torch.full((3, 4), 0.1))


def test_lazy_leaves_one_dimensional_parameters_dense():
    param = nn.Parameter(torch.ones(4))
    optimizer = Tiger([param], lr=0.1, weight_decay=0.5, lazy=True)
    param.grad = torch.tensor([1.0, 0.0, 0.0, 0.0])
    optimizer.step()
    # zero-gradient entries have sign 0 but still decay: 1 * (1 - 0.1 * 0.5)
    torch.testing.assert_close(param.detach(), torch.tensor([0.95 - 0.1, 0.95, 0.95, 0.95]))


def _sparse_rows(dense):
    rows = dense.ne(0).any(dim=1).nonzero().squeeze(1)
    return torch.sparse_coo_tensor(rows[None], dense[rows], dense.shape, check_invariants=True)


@pytest.mark.parametrize("cls", [Tiger, Lion])
def test_sparse_gradient_equals_dense_lazy_bitwise(cls):
    init = torch.randn(30, 4)
    grads = _random_grads((30, 4), steps=5, seed=5, zero_rows=range(0, 30, 2))
    results = []
    for make in (lambda g: g, _sparse_rows):
        param = nn.Parameter(init.clone())
        optimizer = cls([param], lr=0.05, weight_decay=0.1, lazy=True)
        for grad in grads:
            param.grad = make(grad.clone())
            optimizer.step()
        results.append((param.detach(), optimizer.state[param]["momentum"]))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_embedding_sparse_true_matches_dense_embedding_with_lazy():
    torch.manual_seed(0)
    weights = torch.randn(50, 8)
    ids = [torch.tensor([1, 4, 4, 9, 1]), torch.tensor([7, 4, 30]), torch.tensor([1, 49, 49])]
    results = []
    for sparse in (False, True):
        embedding = nn.Embedding(50, 8, sparse=sparse)
        embedding.weight.data.copy_(weights)
        optimizer = Tiger(embedding.parameters(), lr=0.05, weight_decay=0.1, lazy=True)
        for batch in ids:
            optimizer.zero_grad()
            (embedding(batch) ** 2).sum().backward()
            assert embedding.weight.grad.is_sparse == sparse
            optimizer.step()
        results.append(embedding.weight.detach())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[[1, 4, 7, 9, 30, 49]] = False
    assert torch.equal(results[1][untouched], weights[untouched])


def test_sparse_gradient_without_lazy_is_a_dense_step():
    init = torch.randn(10, 3)
    grad = torch.zeros(10, 3)
    grad[[2, 7]] = torch.randn(2, 3)
    dense = _run(lambda ps: Lion(ps, lr=0.1, weight_decay=0.1), init, [grad, grad])
    sparse = _run(lambda ps: Lion(ps, lr=0.1, weight_decay=0.1), init,
                  [_sparse_rows(grad), _sparse_rows(grad)])
    assert torch.equal(dense[0], sparse[0]) and torch.equal(dense[1], sparse[1])


@pytest.mark.parametrize("options", [
    {}, {"momentum_dtype": torch.bfloat16}, {"lazy": True}, {"accumulation_steps": 3},
    {"accumulation_steps": 3, "lazy": True, "momentum_dtype": torch.bfloat16},
    {"relative_lr": "row", "lazy": True},
])
def test_state_dict_resume_is_bit_exact(options):
    model, batches = _model_and_batches(seed=4)
    optimizer = Tiger(model.parameters(), lr=0.02, **options)
    _train(model, optimizer, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, buffer)
    _train(model, optimizer, batches[4:])

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed, _ = _model_and_batches(seed=4)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = Tiger(resumed.parameters(), lr=0.02, **options)
    resumed_optimizer.load_state_dict(saved["optim"])
    _train(resumed, resumed_optimizer, batches[4:])
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
        ma, mb = optimizer.state[a]["momentum"], resumed_optimizer.state[b]["momentum"]
        assert ma.dtype == mb.dtype and torch.equal(ma, mb)


def test_accumulation_folds_the_mean_gradient_into_the_momentum():
    init = torch.randn(4, 3)
    grads = _random_grads((4, 3), steps=6, seed=7)
    param = nn.Parameter(init.clone())
    optimizer = Tiger([param], lr=0.05, beta=0.9, weight_decay=0.1, accumulation_steps=3)
    trajectory = []
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        trajectory.append(param.detach().clone())
    assert torch.equal(trajectory[0], init) and torch.equal(trajectory[1], init)
    assert torch.equal(trajectory[3], trajectory[2]) and torch.equal(trajectory[4], trajectory[2])
    means = [sum(grads[i:i + 3]).div(3).tolist() for i in (0, 3)]
    expected_p, expected_m = naive_lion(init.tolist(), means, lr=0.05, b1=0.9, b2=0.9, wd=0.1)
    torch.testing.assert_close(param.detach(), torch.tensor(expected_p), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(optimizer.state[param]["momentum"], torch.tensor(expected_m),
                               rtol=1e-5, atol=1e-6)


def test_closure_is_called_and_its_loss_returned():
    param = nn.Parameter(torch.ones(2))
    optimizer = Lion([param], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (param ** 2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 2.0
    torch.testing.assert_close(param.detach(), torch.full((2,), 0.9))


@pytest.mark.parametrize("factory, message", [
    (lambda p: Tiger(p, lr=-1e-3), "lr"),
    (lambda p: Tiger(p, lr=math.nan), "lr"),
    (lambda p: Tiger(p, beta=1.0), "betas"),
    (lambda p: Lion(p, betas=(-0.1, 0.9)), "betas"),
    (lambda p: Lion(p, betas=(0.9, 1.5)), "betas"),
    (lambda p: Lion(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: Lion(p, accumulation_steps=2), "beta1 == beta2"),
    (lambda p: Tiger(p, accumulation_steps=0), "accumulation_steps"),
    (lambda p: Tiger(p, lr=math.inf), "lr"),
    (lambda p: Lion(p, weight_decay=math.inf), "weight_decay"),
    (lambda p: Lion(p, weight_decay=math.nan), "weight_decay"),
    (lambda p: Tiger(p, relative_lr="column"), "relative_lr"),
    (lambda p: Tiger(p, nonfinite="ignore"), "nonfinite"),
    (lambda p: Tiger(p, shrink_ratio=1.5), "shrink_ratio"),
    (lambda p: Tiger([{"params": p, "algorithm": "sgd"}]), "algorithm"),
    (lambda p: Tiger([{"params": p, "algorithm": "adamw", "eps": 0.0}]), "eps"),
    (lambda p: Tiger([{"params": p, "algorithm": "adamw", "betas": (0.9, 1.0)}]), "betas"),
    (lambda p: Tiger([{"params": p, "lr_scale": -0.5}]), "lr_scale"),
    (lambda p: Tiger(p, momentum_dtype=torch.int32), "momentum_dtype"),
    (lambda p: Tiger(p, foreach="yes"), "foreach"),
    (lambda p: Tiger([{"params": p, "lr": -1.0}]), "lr"),
])
def test_bad_hyperparameters_are_rejected(factory, message):
    with pytest.raises(ValueError, match=message):
        factory([nn.Parameter(torch.zeros(2, 2))])


def test_complex_parameters_and_unsupported_sparse_layouts_are_rejected():
    with pytest.raises(ValueError, match="complex"):
        Tiger([nn.Parameter(torch.zeros(2, dtype=torch.complex64))])
    param = nn.Parameter(torch.zeros(3, 3))
    optimizer = Tiger([param], lazy=True)
    param.grad = torch.eye(3).to_sparse()  # two sparse dimensions
    with pytest.raises(ValueError, match="sparse_dim"):
        optimizer.step()


def test_matches_lion_pytorch_external_implementation():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    model, batches = _model_and_batches(seed=9)
    twin = copy.deepcopy(model)
    ours = Lion(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5)
    theirs = lion_pytorch.Lion(twin.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5)
    _train(model, ours, batches)
    _train(twin, theirs, batches)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_matches_pytorch_optimizer_tiger():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    model, batches = _model_and_batches(seed=10)
    twin = copy.deepcopy(model)
    ours = Tiger(model.parameters(), lr=3e-3, beta=0.965, weight_decay=0.5)
    theirs = pytorch_optimizer.Tiger(twin.parameters(), lr=3e-3, beta=0.965, weight_decay=0.5)
    _train(model, ours, batches)
    _train(twin, theirs, batches)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("cls", [Lion, Tiger])
def test_large_tensors_chunked_blocked_and_non_contiguous_paths_agree_bitwise(threads, cls):
    """Above ``CHUNK`` elements per thread the plain path works in chunks and lazy rows in
    blocks of rows; a non-contiguous gradient takes the whole-tensor path. All must equal the
    foreach path (Tiger: both in the released order)."""
    generator = torch.Generator().manual_seed(11)
    init = torch.randn(1100, 500, generator=generator)  # 550k elements > 2 * CHUNK = 2 * 2**18
    grads = [torch.randn(1100, 500, generator=generator) for _ in range(3)]
    variants = {
        "foreach": (lambda ps: cls(ps, lr=0.01, weight_decay=0.1, foreach=True), lambda g: g),
        "plain": (lambda ps: cls(ps, lr=0.01, weight_decay=0.1, foreach=False), lambda g: g),
        "non_contiguous": (lambda ps: cls(ps, lr=0.01, weight_decay=0.1),
                           lambda g: g.t().contiguous().t()),
        "lazy_sparse": (lambda ps: cls(ps, lr=0.01, weight_decay=0.1, lazy=True), _sparse_rows),
    }
    results = {name: _run(factory, init, [make(g) for g in grads])
               for name, (factory, make) in variants.items()}
    reference = results.pop("foreach")
    for name, (param, momentum) in results.items():
        assert torch.equal(param, reference[0]) and torch.equal(momentum, reference[1]), name


@pytest.mark.parametrize("cls", [Tiger, Lion])
def test_lazy_rows_whose_gradient_sums_to_zero_are_still_touched(cls):
    """Touched rows are found from row sums; a non-zero row with sum 0 must not be skipped."""
    init = torch.randn(4, 2)
    grad = torch.tensor([[1.0, -1.0], [0.0, 0.0], [2.0, 3.0], [-0.5, 0.5]])
    lazy = _run(lambda ps: cls(ps, lr=0.1, weight_decay=0.1, lazy=True), init, [grad])
    dense = _run(lambda ps: cls(ps, lr=0.1, weight_decay=0.1), init, [grad])
    for row in (0, 2, 3):
        assert torch.equal(lazy[0][row], dense[0][row])
    assert torch.equal(lazy[0][1], init[1]) and not torch.equal(dense[0][1], init[1])
