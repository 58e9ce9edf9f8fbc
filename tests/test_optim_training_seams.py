"""Where the optimizers meet a training loop: ``torch.compile(optimizer.step)``, zero-initialised
matrices under ``relative_lr``, schedulers that cycle momentum, and ``GradScaler`` skipping a
micro-step of an accumulation window."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from logitkit.optim import Lion, Tiger, make_optimizer


def _embedding_and_linear(seed=0):
    torch.manual_seed(seed)
    return nn.Embedding(50, 8), nn.Linear(8, 4)


COMPILED = {
    "tiger-row": (Tiger, {"relative_lr": "row"}),
    "tiger-relative": (Tiger, {"relative_lr": True}),
    "tiger-lazy-accumulation": (Tiger, {"lazy": True, "accumulation_steps": 2}),
    "lion-lazy": (Lion, {"lazy": True, "weight_decay": 0.1}),
    "lion-adamw-group": (Lion, {}),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_step_equals_the_eager_step_without_recompiles(name):
    """``torch.compile(optimizer.step)`` (crashed with ``relative_lr="row"``, recompiled per
    parameter otherwise) runs the data-dependent step eagerly: identical parameters, no
    recompilation."""
    from torch._dynamo.utils import counters

    cls, options = COMPILED[name]
    torch._dynamo.reset()
    counters.clear()
    runs = []
    for compiled in (True, False):
        embed, linear = _embedding_and_linear()
        groups = [{"params": embed.parameters()}, {"params": linear.parameters()}]
        if name == "lion-adamw-group":
            groups[0]["algorithm"] = "adamw"
        optimizer = cls(groups, lr=0.01, **options)
        step = torch.compile(optimizer.step) if compiled else optimizer.step
        for call in range(6):
            optimizer.zero_grad()
            linear(embed(torch.tensor([1 + call, 2, 3]))).pow(2).sum().backward()
            step()
        runs.append([p.detach() for p in (*embed.parameters(), *linear.parameters())])
    for compiled, eager in zip(*runs, strict=True):
        assert torch.equal(compiled, eager)
    assert not counters["recompiles"]


def test_a_zero_matrix_under_relative_lr_is_named_in_a_warning():
    """LoRA-style: B starts at zero, so ``lr * RMS(B) = 0`` and it never trains."""
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    nn.init.zeros_(model[1].weight)
    optimizer = Tiger(model.named_parameters(), lr=0.1, relative_lr=True)
    model(torch.ones(2, 4)).sum().backward()
    with pytest.warns(RuntimeWarning, match=r"'1\.weight'.*exactly zero.*stay zero"):
        optimizer.step()
    assert torch.equal(model[1].weight, torch.zeros(2, 3))  # the documented behaviour stays
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once, at the first step only
        optimizer.step()


def test_zero_rows_with_a_gradient_are_counted_under_row_relative_lr():
    embed = nn.Embedding(6, 3, padding_idx=0)  # the padding row is zero and gets no gradient
    with torch.no_grad():
        embed.weight[4] = 0.0
    optimizer = Tiger([{"params": embed.parameters(), "name": "embedding"}], lr=0.1,
                      relative_lr="row")
    embed(torch.tensor([0, 2, 4])).sum().backward()
    with pytest.warns(RuntimeWarning, match=r"group 0 \('embedding'\).*1 of its 6 rows"):
        optimizer.step()


@pytest.mark.parametrize("options", [{"relative_lr": False}, {"relative_lr": True}])
def test_no_warning_for_trainable_matrices(options):
    model = nn.Linear(4, 3)
    nn.init.zeros_(model.bias)
    if not options["relative_lr"]:
        nn.init.zeros_(model.weight)  # an absolute step moves a zero matrix
    optimizer = Tiger(model.parameters(), lr=0.1, **options)
    model(torch.ones(1, 4)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()


def test_cycle_momentum_on_lion_with_accumulation_is_refused_at_the_first_step():
    """The constructor refuses beta1 != beta2 with accumulation; a scheduler must not get it
    past ``step()``."""
    param = nn.Parameter(torch.ones(3))
    optimizer = Lion([param], lr=0.1, betas=(0.9, 0.9), accumulation_steps=2)
    lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    param.grad = torch.ones(3)
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(3))
    with pytest.raises(ValueError, match="beta1 == beta2"):
        Lion([param], betas=(0.85, 0.9), accumulation_steps=2)


def test_cycled_tiger_beta_is_used_and_announced_once():
    param = nn.Parameter(torch.ones(3))
    optimizer = Tiger([param], lr=0.1, beta=0.965)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    param.grad = torch.ones(3)
    with pytest.warns(RuntimeWarning, match="cycle_momentum=False"):
        optimizer.step()
    assert optimizer.state[param]["momentum"][0].item() == pytest.approx(1 - 0.95)
    scheduler.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    scheduler = lr_scheduler.OneCycleLR(Tiger([param], lr=0.1), max_lr=0.1, total_steps=10,
                                        cycle_momentum=False)
    assert scheduler.optimizer.param_groups[0]["betas"] == (0.965, 0.965)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(12, 4)
        self.head = nn.Linear(4, 12)

    def forward(self, ids):
        return self.head(self.embed(ids))


def _loss(model, call):
    generator = torch.Generator().manual_seed(call)
    ids = torch.randint(0, 12, (6,), generator=generator)
    return nn.functional.cross_entropy(model(ids), (ids * 5 + 1) % 12)


@pytest.mark.parametrize("options", [{"embeddings": "lazy"},
                                     {"embeddings": "adamw", "relative_lr": True}])
def test_grad_scaler_skip_keeps_the_accumulation_window_in_phase(options):
    """k = 2, overflow at call 1: the parameters move at calls 1, 3 and 5 (the window's last
    calls), and the skipped call counts as a call without a gradient."""
    model, twin = _Net(), _Net()
    optimizer = make_optimizer(model, lr=1e-2, accumulation_steps=2, **options)
    reference = make_optimizer(twin, lr=1e-2, accumulation_steps=2, **options)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    moved = []
    for call in range(6):
        before = model.head.weight.detach().clone()
        optimizer.zero_grad()
        loss = _loss(model, call) * (math.inf if call == 1 else 1.0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        moved.append(not torch.equal(before, model.head.weight))
        reference.zero_grad()
        if call != 1:
            _loss(twin, call).backward()
        reference.step()
    assert [i for i, m in enumerate(moved) if m] == [1, 3, 5]
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    assert scaler.get_scale() == 2.0**7 and optimizer.nonfinite_steps == 0


def test_grad_scaler_after_unscale_for_clipping_equals_unscaled_training():
    model = _Net()
    twin = copy.deepcopy(model)
    optimizer = make_optimizer(model, lr=1e-2, relative_lr=True)
    reference = make_optimizer(twin, lr=1e-2, relative_lr=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6)
    for call in range(4):
        optimizer.zero_grad()
        scaler.scale(_loss(model, call)).backward()
        if call % 2:
            scaler.unscale_(optimizer)  # the user's clipping path: no second unscale
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        reference.zero_grad()
        _loss(twin, call).backward()
        if call % 2:
            nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        reference.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_the_zero_matrix_warning_also_fires_under_a_warm_up_from_lr_zero():
    model = nn.Linear(3, 2)
    nn.init.zeros_(model.weight)
    optimizer = Tiger(model.parameters(), lr=0.1, relative_lr=True)
    lr_scheduler.LambdaLR(optimizer, lambda step: step / 10)  # lr 0 at the first step
    model(torch.ones(1, 3)).sum().backward()
    with pytest.warns(RuntimeWarning, match="exactly zero"):
        optimizer.step()
