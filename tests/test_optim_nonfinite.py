"""No silent damage: non-finite gradients (skip / raise / shrink), group validation before the group
is added, non-finite hyperparameters, and the warning for weight decay lost to rounding."""

import math
import warnings

import pytest
import torch
from torch import nn

from logitkit.optim import Lion, Tiger


def _two_params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (nn.Parameter(torch.randn(4, 3, generator=generator)),
            nn.Parameter(torch.randn(5, generator=generator)))


def _grads(steps, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, generator=generator), torch.randn(5, generator=generator))
            for _ in range(steps)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("options", [{}, {"lazy": True}, {"relative_lr": True},
                                     {"momentum_dtype": torch.bfloat16}])
def test_skip_leaves_the_parameter_and_its_state_as_if_the_gradient_were_absent(bad, options):
    grads = _grads(5)
    runs = []
    for poisoned in (True, False):
        a, b = _two_params()
        optimizer = Tiger([a, b], lr=0.01, weight_decay=0.1, **options)
        for step, (ga, gb) in enumerate(grads):
            a.grad, b.grad = ga.clone(), gb.clone()
            if step == 2:
                if poisoned:
                    a.grad[1, 2] = bad
                else:
                    a.grad = None
            if poisoned and step == 2:
                with pytest.warns(RuntimeWarning, match="skipped the update of 1 parameter"):
                    optimizer.step()
            else:
                optimizer.step()
        runs.append((a.detach(), b.detach(), optimizer.state[a]["momentum"], optimizer))
    (a1, b1, m1, opt1), (a2, b2, m2, _) = runs
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and torch.equal(m1, m2)
    assert bool(torch.isfinite(m1).all())
    assert (opt1.nonfinite_steps, opt1.nonfinite_updates) == (1, 1)


def test_sparse_and_adamw_gradients_are_checked_too():
    embedding = nn.Embedding(6, 3, sparse=True)
    dense = nn.Parameter(torch.randn(3, 3))
    optimizer = Tiger([{"params": embedding.parameters(), "lazy": True},
                       {"params": [dense], "algorithm": "adamw"}], lr=0.1)
    embedding(torch.tensor([1, 4])).sum().backward()
    embedding.weight.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 4]]), torch.tensor([[1.0, math.nan, 0.0], [1.0, 1.0, 1.0]]), (6, 3),
        check_invariants=True)
    dense.grad = torch.full((3, 3), math.inf)
    before = [embedding.weight.detach().clone(), dense.detach().clone()]
    with pytest.warns(RuntimeWarning, match="2 parameter"):
        optimizer.step()
    assert torch.equal(embedding.weight, before[0]) and torch.equal(dense, before[1])
    assert not optimizer.state[dense]  # AdamW state was never created by the skipped step


def test_warnings_come_at_powers_of_two_with_counts():
    a, b = _two_params()
    optimizer = Lion([a, b], lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            a.grad, b.grad = torch.full((4, 3), math.nan), torch.full((5,), math.nan)
            optimizer.step()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 3  # steps 1, 2 and 4
    assert "4 step(s) with skipped updates so far (8 updates" in messages[-1]
    assert (optimizer.nonfinite_steps, optimizer.nonfinite_updates) == (5, 10)


def test_raise_policy_updates_nothing():
    a, b = _two_params()
    optimizer = Tiger([{"params": [b]}, {"params": [a], "nonfinite": "raise"}], lr=0.1)
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
    optimizer.step()
    saved = [a.detach().clone(), b.detach().clone(), optimizer.state[b]["momentum"].clone()]
    a.grad[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        optimizer.step()
    assert torch.equal(a, saved[0]) and torch.equal(b, saved[1])  # b's group came first
    assert torch.equal(optimizer.state[b]["momentum"], saved[2])
    assert [g["micro_step"] for g in optimizer.param_groups] == [1, 1]


def test_shrink_policy_shrinks_towards_the_center():
    a, _ = _two_params()
    norm = nn.Parameter(torch.full((3,), 2.0))
    optimizer = Tiger([{"params": [a]}, {"params": [norm], "shrink_center": 1.0}], lr=0.1,
                      nonfinite="shrink", shrink_ratio=0.9)
    before = a.detach().clone()
    a.grad, norm.grad = torch.full((4, 3), math.nan), torch.full((3,), math.inf)
    with pytest.warns(RuntimeWarning):
        optimizer.step()
    torch.testing.assert_close(a.detach(), before * 0.9)
    torch.testing.assert_close(norm.detach(), torch.full((3,), 1.9))


def test_a_finite_gradient_whose_sum_overflows_is_not_skipped():
    param = nn.Parameter(torch.zeros(2, 3))
    optimizer = Tiger([param], lr=0.1, weight_decay=0.0, lazy=True)
    param.grad = torch.full((2, 3), 3e38)  # the float32 sum is inf, every entry is finite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    torch.testing.assert_close(param.detach(), torch.full((2, 3), -0.1))
    half = nn.Parameter(torch.zeros(4, dtype=torch.float16))
    half_optimizer = Tiger([half], lr=0.5, weight_decay=0.0)
    half.grad = torch.full((4,), 60000.0, dtype=torch.float16)  # sum > float16 max
    half_optimizer.step()
    assert torch.equal(half.detach(), torch.full((4,), -0.5, dtype=torch.float16))


@pytest.mark.parametrize("bad_group, message", [
    ({"lr": math.inf}, "lr"),
    ({"lr": math.nan}, "lr"),
    ({"weight_decay": math.inf}, "weight_decay"),
    ({"beta": 1.0}, "betas"),
    ({"relative_lr": "col"}, "relative_lr"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"algorithm": "adamw", "betas": (0.9, 1.0)}, "betas"),
    ({"accumulation_steps": 0}, "accumulation_steps"),
])
def test_add_param_group_validates_before_appending(bad_group, message):
    a, b = _two_params()
    optimizer = Tiger([a], lr=0.01)
    with pytest.raises(ValueError, match=message):
        optimizer.add_param_group({"params": [b], **bad_group})
    assert len(optimizer.param_groups) == 1
    assert all(p is not b for g in optimizer.param_groups for p in g["params"])
    optimizer.add_param_group({"params": [b], "beta": 0.5})  # the same parameter, valid now
    assert optimizer.param_groups[1]["betas"] == (0.5, 0.5)
    with pytest.raises(ValueError, match="more than one"):
        optimizer.add_param_group({"params": [b]})
    assert len(optimizer.param_groups) == 2


@pytest.mark.parametrize("key, value", [("lr", math.inf), ("weight_decay", math.nan),
                                        ("lr", -1.0), ("betas", (1.5, 0.9))])
def test_values_changed_between_steps_are_checked_before_any_update(key, value):
    a, b = _two_params()
    optimizer = Lion([{"params": [a]}, {"params": [b]}], lr=0.01)
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
    optimizer.param_groups[1][key] = value
    before = a.detach().clone()
    with pytest.raises(ValueError, match=key):
        optimizer.step()
    assert torch.equal(a, before) and not optimizer.state[a]


@pytest.mark.parametrize("dtype, lr, weight_decay, lost", [
    (torch.bfloat16, 1e-3, 0.01, True),
    (torch.bfloat16, 0.1, 0.1, False),
    (torch.float16, 1e-3, 0.1, True),
    (torch.float16, 0.1, 0.1, False),
    (torch.float32, 1e-3, 1e-2, False),
])
def test_warns_once_when_weight_decay_underflows(dtype, lr, weight_decay, lost):
    param = nn.Parameter(torch.full((8,), 0.75, dtype=dtype))
    optimizer = Tiger([param], lr=lr, weight_decay=weight_decay)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            param.grad = torch.zeros_like(param)  # sign 0: only the decay acts
            optimizer.step()
    decay_warnings = [w for w in caught if "weight decay has no effect" in str(w.message)]
    assert len(decay_warnings) == (1 if lost else 0)
    # the warning tells the truth: the decay really did (not) change the weights
    assert torch.equal(param.detach(), torch.full((8,), 0.75, dtype=dtype)) == lost
