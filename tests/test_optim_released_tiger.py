"""The released Tiger's rule (relative step sizes, 0.5 lr and no decay for vectors, the NaN shrink,
accumulation on one global counter) against a naive reference written here from its description
(github.com/bojone/tiger, tiger.py), and lazy accumulation against lazy Tiger on the mean gradient.
"""

import math

import pytest
import torch
from torch import nn

from logitkit.optim import Lion, Tiger, make_optimizer, param_groups


def released_tiger_reference(params, grads, *, lr, beta, wd, k=1, shrink=0.99):
    """Per-element float loops. ``params``: name -> (kind, nested list); kinds: "matrix" (step
    lr * RMS of the tensor), "embedding" (lr * RMS of the row), "bias" (0.5 lr, no decay, shrinks
    to 0), "norm" (0.5 lr, no decay, shrinks to 1). ``grads``: one dict name -> nested list per
    call. Call t (from 0, one counter for all) decays the momentum when t % k == 0 and moves the
    weights when (t + 1) % k == 0; a gradient with a NaN or inf leaves the momentum as it is and
    shrinks the weights instead."""
    values = {n: [list(map(float, row)) for row in _as_rows(v)] for n, (_, v) in params.items()}
    momenta = {n: [[0.0] * len(row) for row in rows] for n, rows in values.items()}
    for t, step in enumerate(grads):
        b1 = beta if t % k == 0 else 1.0
        b2 = (1 - beta) / k
        lr_t = lr if (t + 1) % k == 0 else 0.0
        for name, (kind, _) in params.items():
            p, m, g = values[name], momenta[name], _as_rows(step[name])
            bad = any(not math.isfinite(x) for row in g for x in row)
            if kind in ("bias", "norm"):
                rates, decay = [[0.5 * lr_t] * len(row) for row in p], 0.0
            elif kind == "embedding":
                rates = [[lr_t * _rms(row)] * len(row) for row in p]
                decay = wd
            else:
                whole = _rms([x for row in p for x in row])
                rates, decay = [[lr_t * whole] * len(row) for row in p], wd
            center = 1.0 if kind == "norm" else 0.0
            for r, row in enumerate(p):
                for c in range(len(row)):
                    if bad:
                        row[c] = (row[c] - center) * shrink + center
                        continue
                    m[r][c] = b1 * m[r][c] + b2 * g[r][c]
                    sign = (m[r][c] > 0) - (m[r][c] < 0)
                    row[c] = row[c] - rates[r][c] * (sign + decay * row[c])
    return {n: _from_rows(values[n], params[n][1]) for n in params}


def _as_rows(v):
    return [v] if not isinstance(v[0], list) else v


def _from_rows(rows, like):
    return rows[0] if not isinstance(like[0], list) else rows


def _rms(xs):
    return math.sqrt(sum(x * x for x in xs) / len(xs))


class Released(nn.Module):
    """Embedding, a linear layer (matrix + bias) and a LayerNorm (gamma, beta)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)


KINDS = {"embed.weight": "embedding", "proj.weight": "matrix", "proj.bias": "bias",
         "norm.weight": "norm", "norm.bias": "bias"}


def _released_case(k, nan_calls=(), seed=0, calls=9):
    torch.manual_seed(seed)
    model = Released().double()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    generator = torch.Generator().manual_seed(seed + 1)
    grads = []
    for t in range(calls):
        step = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64)
                for n, p in model.named_parameters()}
        step["embed.weight"][[1, 3]] = 0.0  # rows without gradient still move in the released rule
        if t in nan_calls:
            step["proj.weight"][0, 1] = math.nan
            step["norm.weight"][2] = math.inf
        grads.append(step)
    return model, grads


def _train_released_groups(model, grads, k, warns):
    """``make_optimizer``'s released groups (relative steps, NaN shrink) on the given gradients,
    one dict name -> gradient per call."""
    optimizer = make_optimizer(model, lr=0.02, weight_decay=0.1, embeddings="dense",
                               relative_lr=True, beta=0.9, nonfinite="shrink",
                               accumulation_steps=k)
    with pytest.warns(RuntimeWarning, match="non-finite|NaN") if warns else _no_warning():
        for step in grads:
            for name, p in model.named_parameters():
                p.grad = step[name].clone()
            optimizer.step()


@pytest.mark.parametrize("k, nan_calls", [(1, ()), (1, (2, 5)), (3, ()), (3, (1, 5))])
def test_relative_lr_matches_the_released_rule(k, nan_calls):
    model, grads = _released_case(k, nan_calls)
    init = {n: (KINDS[n], p.detach().tolist()) for n, p in model.named_parameters()}
    _train_released_groups(model, grads, k, warns=bool(nan_calls))
    expected = released_tiger_reference(init, [{n: g.tolist() for n, g in s.items()}
                                               for s in grads], lr=0.02, beta=0.9, wd=0.1, k=k)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), torch.tensor(expected[name], dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12, msg=name)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_released_groups():
    model = Released()
    groups = {g["name"]: g for g in param_groups(model, relative_lr=True)}
    assert {n: len(g["params"]) for n, g in groups.items()} == {
        "decay": 1, "no_decay": 2, "norm": 1, "embedding": 1}
    assert groups["embedding"]["relative_lr"] == "row" and groups["decay"]["relative_lr"] is True
    assert groups["norm"]["shrink_center"] == 1.0 and groups["norm"]["weight_decay"] == 0.0
    assert groups["no_decay"]["lr_scale"] == 0.5 and groups["norm"]["lr_scale"] == 0.5


@pytest.mark.slow
def test_relative_rule_pushes_a_stale_row_to_the_bound_within_7600_steps():
    """The issue's numbers: lr 1e-3, wd 0.01, entries starting at 1, momentum of constant sign
    (float64, so it does not underflow): relative steps reach 95 by ~7.5k steps, absolute steps
    only ~19 after 20k."""
    results = {}
    for relative, steps in (("row", 7600), (False, 20_000)):
        row = nn.Parameter(torch.ones(1, 4, dtype=torch.float64))
        optimizer = Tiger([row], lr=1e-3, weight_decay=0.01, relative_lr=relative)
        row.grad = -torch.ones_like(row)
        optimizer.step()
        row.grad.zero_()
        for _ in range(steps - 1):
            optimizer.step()
        results[relative] = row.detach()
    assert bool((results["row"] > 95).all()) and bool((results["row"] < 100).all())
    torch.testing.assert_close(results[False], torch.full((1, 4), 18.94, dtype=torch.float64),
                               atol=0.02, rtol=0)


def naive_lion_relative(init, grads, *, lr, b1, b2, wd, per_row):
    p = [list(map(float, row)) for row in init]
    m = [[0.0] * len(row) for row in p]
    for grad in grads:
        whole = _rms([x for row in p for x in row])
        rates = [lr * (_rms(row) if per_row else whole) for row in p]
        for r, row in enumerate(p):
            for c in range(len(row)):
                mixed = b1 * m[r][c] + (1 - b1) * grad[r][c]
                sign = (mixed > 0) - (mixed < 0)
                m[r][c] = b2 * m[r][c] + (1 - b2) * grad[r][c]
                row[c] -= rates[r] * (sign + wd * row[c])
    return p


@pytest.mark.parametrize("relative", [True, "row"])
@pytest.mark.parametrize("lazy", [False, True])
def test_lion_relative_lr_matches_naive_reference(relative, lazy):
    init = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    grads = [torch.randn(5, 3, generator=generator, dtype=torch.float64) for _ in range(4)]
    param = nn.Parameter(init.clone())
    optimizer = Lion([param], lr=0.05, betas=(0.8, 0.95), weight_decay=0.2, relative_lr=relative,
                     lazy=lazy)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    expected = naive_lion_relative(init.tolist(), [g.tolist() for g in grads], lr=0.05, b1=0.8,
                                   b2=0.95, wd=0.2, per_row=relative == "row")
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_relative_lr_lazy_rows_use_the_rms_of_the_whole_tensor_or_the_row():
    init = torch.randn(6, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grad = torch.randn(6, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grad[[0, 2, 5]] = 0.0
    for relative in (True, "row"):
        lazy, dense = nn.Parameter(init.clone()), nn.Parameter(init.clone())
        Tiger([lazy], lr=0.1, relative_lr=relative, lazy=True)
        optimizers = [Tiger([p], lr=0.1, relative_lr=relative, lazy=flag)
                      for p, flag in ((lazy, True), (dense, False))]
        for p, optimizer in zip((lazy, dense), optimizers, strict=True):
            p.grad = grad.clone()
            optimizer.step()
        touched = [1, 3, 4]
        # touched rows move exactly as in the dense step (same RMS), the others not at all
        torch.testing.assert_close(lazy[touched], dense[touched], rtol=0, atol=0)
        assert torch.equal(lazy.detach()[[0, 2, 5]], init[[0, 2, 5]])


def test_accumulation_counter_is_global_when_a_gradient_is_missing():
    """Parameter b has no gradient in some calls; it must still move on calls 2, 5, ... (k=3),
    exactly as if its missing gradients were zero."""
    a, b = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(4))
    twin_a, twin_b = nn.Parameter(a.detach().clone()), nn.Parameter(b.detach().clone())
    optimizer = Tiger([a, b], lr=0.05, beta=0.9, weight_decay=0.1, accumulation_steps=3)
    twin = Tiger([twin_a, twin_b], lr=0.05, beta=0.9, weight_decay=0.1, accumulation_steps=3)
    generator = torch.Generator().manual_seed(8)
    trajectory = []
    for call in range(9):
        ga, gb = torch.randn(3, 2, generator=generator), torch.randn(4, generator=generator)
        a.grad, twin_a.grad = ga.clone(), ga.clone()
        present = call not in (1, 3, 4, 8)  # missing at a window start, middle and end
        b.grad = gb.clone() if present else None
        twin_b.grad = gb.clone() if present else torch.zeros(4)
        before = b.detach().clone()
        optimizer.step()
        twin.step()
        trajectory.append(not torch.equal(before, b.detach()))
        assert torch.equal(a, twin_a) and torch.equal(b, twin_b)
    assert trajectory == [False, False, True] * 3
    assert all(g["micro_step"] == 9 for g in optimizer.param_groups)


def naive_lazy_tiger_on_means(init, windows, *, lr, beta, wd):
    """Lazy Tiger, one step per window on the mean gradient; a row counts as touched when any
    gradient in its window has a non-zero entry in it."""
    p = [list(map(float, row)) for row in init]
    m = [[0.0] * len(row) for row in p]
    for window in windows:
        k = len(window)
        for r, row in enumerate(p):
            if all(all(x == 0 for x in grad[r]) for grad in window):
                continue
            for c in range(len(row)):
                mean = sum(grad[r][c] for grad in window) / k
                m[r][c] = beta * m[r][c] + (1 - beta) * mean
                sign = (m[r][c] > 0) - (m[r][c] < 0)
                row[c] = row[c] - lr * (sign + wd * row[c])
    return p, m


def test_lazy_accumulation_equals_lazy_tiger_on_the_mean_gradient():
    init = torch.randn(6, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    generator = torch.Generator().manual_seed(10)
    windows = []
    for w in range(3):
        window = []
        for i in range(2):
            grad = torch.randn(6, 3, generator=generator, dtype=torch.float64)
            grad[[0, 5]] = 0.0  # never touched
            grad[1 + (w + i) % 4] = 0.0  # touched in one micro-step of the window only
            window.append(grad)
        windows.append(window)
    param = nn.Parameter(init.clone())
    optimizer = Tiger([param], lr=0.05, beta=0.9, weight_decay=0.1, lazy=True,
                      accumulation_steps=2)
    for window in windows:
        for grad in window:
            param.grad = grad.to_sparse(1) if grad is window[0] else grad.clone()
            optimizer.step()
    expected_p, expected_m = naive_lazy_tiger_on_means(
        init.tolist(), [[g.tolist() for g in w] for w in windows], lr=0.05, beta=0.9, wd=0.1)
    torch.testing.assert_close(param.detach(), torch.tensor(expected_p, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(optimizer.state[param]["momentum"],
                               torch.tensor(expected_m, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    assert torch.equal(param.detach()[[0, 5]], init[[0, 5]])


def released_tiger_torch(init, kinds, grads, *, lr, beta, wd, k=1, shrink=0.99, lazy=()):
    """The released Tiger (tiger.py) in its own expression order, with plain torch ops, so a float64
    run can be compared bit for bit. Call ``t`` (from 0, one counter): ``b1 = beta`` if
    ``t % k == 0`` else 1, ``b2 = (1 - beta) / k``, ``lr_t = lr`` if ``(t + 1) % k == 0`` else 0;
    ``m = b1 * m + b2 * g``; the rate is ``lr_t * sqrt(mean(var ** 2))`` ("matrix"), per row
    ("embedding"), ``lr_t`` ("absolute", with decay) or ``0.5 * lr_t`` with ``d = 0`` ("bias",
    "norm"); ``u = (sign(m) + d * var) * rate; var = var - u``. A non-finite gradient shrinks
    ``var`` towards 0 (1 for "norm") and leaves ``m``. Names in ``lazy`` move only rows touched in
    the window (a row's ``b1`` applies at its first touch), as logitkit's lazy rows."""
    values = {n: v.clone() for n, v in init.items()}
    momenta = {n: torch.zeros_like(v) for n, v in init.items()}
    windows = {n: torch.zeros(init[n].shape[0], 1, dtype=torch.bool) for n in lazy}
    for t, step in enumerate(grads):
        b1 = beta if t % k == 0 else 1.0
        b2 = (1 - beta) / k
        lr_t = lr if (t + 1) % k == 0 else 0.0
        for name, kind in kinds.items():
            var, m, g = values[name], momenta[name], step[name]
            center = 1.0 if kind == "norm" else 0.0
            if not bool(torch.isfinite(g).all()):
                values[name] = (var - center) * shrink + center
                continue
            d = 0.0 if kind in ("bias", "norm") else wd
            if kind in ("bias", "norm"):
                rate = lr_t * 0.5
            elif kind == "embedding":
                rate = lr_t * torch.sqrt(torch.mean(var**2, dim=-1, keepdim=True))
            elif kind == "matrix":
                rate = lr_t * torch.sqrt(torch.mean(var**2))
            else:
                rate = lr_t
            if name in lazy:
                if t % k == 0:
                    windows[name].zero_()
                touched = (g != 0).any(dim=1, keepdim=True)
                rows_b1 = torch.where(touched & ~windows[name], beta, 1.0).to(var.dtype)
                momenta[name] = torch.where(touched, rows_b1 * m + b2 * g, m)
                windows[name] |= touched
            else:
                momenta[name] = b1 * m + b2 * g
            u = (torch.sign(momenta[name]) + d * var) * rate
            values[name] = var - u
            if name in lazy:
                values[name] = torch.where(windows[name], values[name], var)
    return values


@pytest.mark.parametrize("k, nan_calls", [(1, ()), (1, (2, 5)), (3, ()), (3, (1, 5))])
def test_released_groups_are_bit_identical_to_the_released_order(k, nan_calls):
    model, grads = _released_case(k, nan_calls, calls=60)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_released_groups(model, grads, k, warns=bool(nan_calls))
    expected = released_tiger_torch(init, KINDS, grads, lr=0.02, beta=0.9, wd=0.1, k=k)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), expected[name]), name


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("relative", [False, True, "row"])
def test_tiger_is_bit_identical_to_the_released_order_in_float64(relative, k, lazy):
    """60 calls on a matrix (rows 1 and 4 often without gradient, row 6 never) and a bias
    (0.5 lr, no decay): every parameter equals the released expression order bit for bit."""
    generator = torch.Generator().manual_seed(12)
    init = {"w": torch.randn(7, 5, generator=generator, dtype=torch.float64),
            "b": torch.randn(5, generator=generator, dtype=torch.float64)}
    grads = []
    for t in range(60):
        step = {n: torch.randn(v.shape, generator=generator, dtype=torch.float64)
                for n, v in init.items()}
        step["w"][[1, 4, 6] if t % 3 else [6]] = 0.0
        grads.append(step)
    w, b = nn.Parameter(init["w"].clone()), nn.Parameter(init["b"].clone())
    optimizer = Tiger([{"params": [w]}, {"params": [b], "lr_scale": 0.5, "weight_decay": 0.0}],
                      lr=0.02, beta=0.9, weight_decay=0.1, relative_lr=relative, lazy=lazy,
                      accumulation_steps=k)
    for step in grads:
        w.grad, b.grad = step["w"].clone(), step["b"].clone()
        optimizer.step()
    kind = {False: "absolute", True: "matrix", "row": "embedding"}[relative]
    expected = released_tiger_torch(init, {"w": kind, "b": "bias"}, grads, lr=0.02, beta=0.9,
                                    wd=0.1, k=k, lazy=("w",) if lazy else ())
    assert torch.equal(w.detach(), expected["w"]) and torch.equal(b.detach(), expected["b"])
    if lazy:
        assert torch.equal(w.detach()[6], init["w"][6])
