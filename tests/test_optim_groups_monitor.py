"""param_groups / make_optimizer / MixedOptimizer, and the +-1/wd saturation detector."""

import io

import pytest
import torch
from torch import nn

from logitkit.optim import (
    MixedOptimizer,
    SaturationMonitor,
    Tiger,
    find_saturated_rows,
    make_optimizer,
    param_groups,
)


class Net(nn.Module):
    def __init__(self, tie=False):
        super().__init__()
        self.embed = nn.Embedding(12, 4)
        self.hidden = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(4))
        self.head = nn.Linear(4, 12, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(self.hidden(self.embed(ids)) * self.scale))


def _names(model, groups):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: sorted(by_id[id(p)] for p in g["params"]) for g in groups}


def test_groups_split_decay_no_decay_and_embeddings():
    model = Net()
    groups = param_groups(model, weight_decay=0.1)
    assert _names(model, groups) == {
        "decay": ["head.weight", "hidden.weight"],
        "no_decay": ["hidden.bias", "norm.bias", "norm.weight", "scale"],
        "embedding": ["embed.weight"],
    }
    options = {g["name"]: (g["weight_decay"], g.get("lazy")) for g in groups}
    assert options == {"decay": (0.1, None), "no_decay": (0.0, None), "embedding": (0.1, True)}


def test_head_option_tied_weights_and_frozen_parameters():
    model = Net()
    model.hidden.bias.requires_grad_(False)
    names = _names(model, param_groups(model, head="head.weight", lazy_embeddings=False))
    assert names["embedding"] == ["embed.weight", "head.weight"]
    assert "hidden.bias" not in names["no_decay"]
    tied = Net(tie=True)
    groups = param_groups(tied)
    assert sum(len(g["params"]) for g in groups) == len(list(tied.parameters()))
    assert _names(tied, groups)["embedding"] == ["embed.weight"]
    with pytest.raises(ValueError, match="not a parameter"):
        param_groups(model, head="nope.weight")


def _steps(model, optimizer, steps=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 6, (5,), generator=generator)  # rows 6..11 are never seen
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(ids), ids).backward()
        optimizer.step()


def test_make_optimizer_lazy_embeddings_leave_unseen_rows_alone():
    model = Net()
    before = model.embed.weight.detach().clone()
    optimizer = make_optimizer(model, lr=0.01, embeddings="lazy")
    _steps(model, optimizer)
    assert torch.equal(model.embed.weight[6:], before[6:])
    assert not torch.equal(model.embed.weight[:6], before[:6])


def test_adamw_embeddings_match_a_standalone_adamw():
    torch.manual_seed(0)
    model = Net()
    reference = Net()
    reference.load_state_dict(model.state_dict())
    mixed = make_optimizer(model, lr=0.01, weight_decay=0.1, embeddings="adamw",
                           embedding_lr=0.003)
    assert isinstance(mixed, MixedOptimizer)
    others = [p for n, p in reference.named_parameters() if n != "embed.weight"]
    groups = param_groups(reference, weight_decay=0.1)
    tiger = Tiger([g for g in groups if g["name"] != "embedding"], lr=0.01, weight_decay=0.1)
    adamw = torch.optim.AdamW([reference.embed.weight], lr=0.003, weight_decay=0.1)
    assert len(others) == sum(len(g["params"]) for g in tiger.param_groups)
    _steps(model, mixed)
    _steps(reference, MixedOptimizer([tiger, adamw]))
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="more than one"):
        MixedOptimizer([tiger, Tiger(others)])


def test_mixed_optimizer_state_dict_resumes_bit_exactly():
    torch.manual_seed(1)
    model = Net()
    optimizer = make_optimizer(model, lr=0.01, embeddings="adamw")
    _steps(model, optimizer, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, buffer)
    _steps(model, optimizer, seed=2)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = Net()
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = make_optimizer(resumed, lr=0.01, embeddings="adamw")
    resumed_optimizer.load_state_dict(saved["optim"])
    _steps(resumed, resumed_optimizer, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="optimizer states"):
        resumed_optimizer.load_state_dict({"optimizers": []})
    assert len(resumed_optimizer.param_groups) == 3


def naive_saturated_rows(weight, wd, tolerance, fraction):
    found = []
    for r, row in enumerate(weight.tolist()):
        near = sum(1 for x in row if abs(abs(x) - 1 / wd) <= tolerance / wd)
        if near >= fraction * len(row):
            found.append(r)
    return found


def test_find_saturated_rows_matches_naive_definition():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(40, 10, generator=generator) * 3
    signs = torch.randint(0, 2, (40, 10), generator=generator) * 2.0 - 1.0
    pile = signs * (100 + torch.randn(40, 10, generator=generator))
    mask = torch.rand(40, 10, generator=generator) < torch.linspace(0, 1, 40)[:, None]
    weight = torch.where(mask, pile, weight)
    for tolerance, fraction in [(0.01, 0.5), (0.02, 0.8), (0.05, 1.0), (0.0, 0.1)]:
        found = find_saturated_rows(weight, 0.01, tolerance=tolerance, fraction=fraction)
        assert found.tolist() == naive_saturated_rows(weight, 0.01, tolerance, fraction)
    assert 0 < find_saturated_rows(weight, 0.01, tolerance=0.02).numel() < 40


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(5), 0.01), "2 dimensions"),
    ((torch.zeros(2, 2), 0.0), "weight_decay"),
    ((torch.full((2, 2), float("nan")), 0.01), "NaN"),
])
def test_find_saturated_rows_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        find_saturated_rows(*args)
    with pytest.raises(ValueError, match="fraction"):
        find_saturated_rows(torch.zeros(2, 2), 0.1, fraction=0.0)


@pytest.mark.parametrize("lazy", [False, True])
def test_stale_momentum_drives_a_row_to_one_over_weight_decay(lazy):
    """One gradient, then none: plain Tiger walks the row to +-1/wd; lazy Tiger does not."""
    embedding = nn.Embedding(3, 4)
    optimizer = Tiger(embedding.parameters(), lr=0.5, weight_decay=0.01, lazy=lazy)
    monitor = SaturationMonitor(embedding, 0.01, every=500, tolerance=0.01, fraction=1.0)
    embedding(torch.tensor([1])).sum().backward()
    for _ in range(2000):
        optimizer.step()
        embedding.weight.grad.zero_()
        monitor.step()
    steps, counts = monitor.counts("weight")
    assert steps == [0, 500, 1000, 1500, 2000]
    if lazy:
        assert counts == [0] * 5
    else:
        assert counts[-1] == 1 and monitor.latest["weight"].tolist() == [1]
        torch.testing.assert_close(embedding.weight[1], torch.full((4,), -100.0), atol=0.5, rtol=0)
    with pytest.raises(ValueError, match="unknown weight"):
        monitor.counts("bias")
