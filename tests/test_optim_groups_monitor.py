"""param_groups / make_optimizer (AdamW embedding groups), and the +-1/wd saturation detector with
its early-warning drift signal."""

import io
import math

import pytest
import torch
from torch import nn

from logitkit.optim import (
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
    """One optimizer: Tiger on the sign groups, AdamW on the embedding group, identical to Tiger
    plus torch.optim.AdamW stepped side by side."""
    torch.manual_seed(0)
    model = Net()
    reference = Net()
    reference.load_state_dict(model.state_dict())
    mixed = make_optimizer(model, lr=0.01, weight_decay=0.1, embeddings="adamw",
                           embedding_lr=0.003)
    assert isinstance(mixed, torch.optim.Optimizer)
    assert [g["algorithm"] for g in mixed.param_groups] == ["sign", "sign", "adamw"]
    groups = param_groups(reference, weight_decay=0.1)
    tiger = Tiger([g for g in groups if g["name"] != "embedding"], lr=0.01, weight_decay=0.1)
    adamw = torch.optim.AdamW([reference.embed.weight], lr=0.003, weight_decay=0.1,
                              foreach=False)

    class Both:
        def zero_grad(self):
            tiger.zero_grad()
            adamw.zero_grad()

        def step(self):
            tiger.step()
            adamw.step()

    _steps(model, mixed)
    _steps(reference, Both())
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    state = mixed.state[model.embed.weight]
    expected = adamw.state[reference.embed.weight]["exp_avg_sq"]
    torch.testing.assert_close(state["exp_avg_sq"], expected)


def naive_adamw(init, grads, *, lr, b1, b2, eps, wd):
    p = list(map(float, init))
    m, v = [0.0] * len(p), [0.0] * len(p)
    for t, grad in enumerate(grads, start=1):
        for i, g in enumerate(grad):
            p[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("lazy", [False, True])
def test_adamw_group_matches_naive_reference_and_lazy_rows_stay(lazy):
    init = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    grads = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(5)]
    for grad in grads:
        grad[2] = 0.0
    param = nn.Parameter(init.clone())
    optimizer = Tiger([{"params": [param], "algorithm": "adamw", "lazy": lazy,
                        "betas": (0.8, 0.95), "eps": 1e-6}], lr=0.01, weight_decay=0.1)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    expected = naive_adamw(init.flatten().tolist(), [g.flatten().tolist() for g in grads],
                           lr=0.01, b1=0.8, b2=0.95, eps=1e-6, wd=0.1)
    expected = torch.tensor(expected, dtype=torch.float64).view(4, 3)
    if lazy:
        assert torch.equal(param.detach()[2], init[2])
        keep = [0, 1, 3]
        torch.testing.assert_close(param.detach()[keep], expected[keep], rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-12)


def test_adamw_accumulation_steps_on_the_mean_gradient():
    init = torch.randn(5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    grads = [torch.randn(5, generator=generator, dtype=torch.float64) for _ in range(6)]
    param = nn.Parameter(init.clone())
    optimizer = Tiger([{"params": [param], "algorithm": "adamw"}], lr=0.01, weight_decay=0.1,
                      accumulation_steps=3)
    for i, grad in enumerate(grads):
        param.grad = None if i == 4 else grad.clone()  # a missing gradient counts as zero
        optimizer.step()
    means = [(grads[0] + grads[1] + grads[2]) / 3, (grads[3] + grads[5]) / 3]
    expected = naive_adamw(init.tolist(), [m.tolist() for m in means], lr=0.01, b1=0.9, b2=0.999,
                           eps=1e-8, wd=0.1)
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("embeddings", ["adamw", "lazy"])
def test_make_optimizer_state_dict_resumes_bit_exactly(embeddings):
    torch.manual_seed(1)
    model = Net()
    optimizer = make_optimizer(model, lr=0.01, embeddings=embeddings, relative_lr=True)
    _steps(model, optimizer, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, buffer)
    _steps(model, optimizer, seed=2)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = Net()
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = make_optimizer(resumed, lr=0.01, embeddings=embeddings, relative_lr=True)
    resumed_optimizer.load_state_dict(saved["optim"])
    _steps(resumed, resumed_optimizer, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(resumed_optimizer.param_groups) == 4


def test_state_dict_from_before_betas_and_group_options_loads():
    """A checkpoint whose Tiger groups have ``beta`` and none of the newer keys."""
    param = nn.Parameter(torch.randn(3, 2))
    optimizer = Tiger([param], lr=0.01, beta=0.9)
    param.grad = torch.randn(3, 2)
    optimizer.step()
    old = optimizer.state_dict()
    for group in old["param_groups"]:
        group["beta"] = group.pop("betas")[0]
        for key in ("relative_lr", "nonfinite", "shrink_ratio", "lr_scale", "algorithm", "eps",
                    "shrink_center", "micro_step"):
            group.pop(key)
    fresh = Tiger([param], lr=0.01, beta=0.5)
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["betas"] == (0.9, 0.9)
    assert fresh.param_groups[0]["micro_step"] == 1
    fresh.step()


def naive_saturated_rows(weight, wd, tolerance, fraction):
    found = []
    for r, row in enumerate(weight.tolist()):
        near = sum(1 for x in row if abs(abs(x) - 1 / wd) <= tolerance / wd)
        if near >= fraction * len(row):
            found.append(r)
    return found


def _piled_weight(rows, cols, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator) * 3
    signs = torch.randint(0, 2, (rows, cols), generator=generator) * 2.0 - 1.0
    pile = signs * (100 + torch.randn(rows, cols, generator=generator))
    mask = torch.rand(rows, cols, generator=generator) < torch.linspace(0, 1, rows)[:, None]
    return torch.where(mask, pile, weight).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_find_saturated_rows_matches_naive_definition(dtype):
    weight = _piled_weight(40, 10, seed=3, dtype=dtype)
    for tolerance, fraction in [(0.01, 0.5), (0.02, 0.8), (0.05, 1.0), (0.0, 0.1)]:
        found = find_saturated_rows(weight, 0.01, tolerance=tolerance, fraction=fraction)
        assert found.tolist() == naive_saturated_rows(weight, 0.01, tolerance, fraction)
    assert 0 < find_saturated_rows(weight, 0.01, tolerance=0.02).numel() < 40


def test_find_saturated_rows_in_many_blocks_and_on_views(monkeypatch):
    """Small blocks (as for a large matrix), a 3-D weight and a non-contiguous one."""
    import logitkit.optim.monitor as monitor

    monkeypatch.setattr(monitor, "MAX_BLOCK", 50)
    weight = _piled_weight(300, 20, seed=4)
    expected = naive_saturated_rows(weight, 0.01, 0.03, 0.6)
    assert find_saturated_rows(weight, 0.01, tolerance=0.03, fraction=0.6).tolist() == expected
    assert find_saturated_rows(weight.view(300, 4, 5), 0.01, tolerance=0.03,
                               fraction=0.6).tolist() == expected
    transposed = weight.t().contiguous().t()
    assert find_saturated_rows(transposed, 0.01, tolerance=0.03, fraction=0.6).tolist() == expected
    boundary = torch.tensor([[95.0, -105.0], [94.99, 105.01]])  # tolerance 5% of 100: [95, 105]
    assert find_saturated_rows(boundary, 0.01, fraction=1.0).tolist() == [0]


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(5), 0.01), "2 dimensions"),
    ((torch.zeros(2, 2), 0.0), "weight_decay"),
    ((torch.full((2, 2), float("nan")), 0.01), "NaN"),
    ((torch.tensor([[1.0, float("inf")]]), 0.01), "NaN"),
    ((torch.zeros(2, 2), float("inf")), "weight_decay"),
])
def test_find_saturated_rows_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        find_saturated_rows(*args)
    with pytest.raises(ValueError, match="fraction"):
        find_saturated_rows(torch.zeros(2, 2), 0.1, fraction=0.0)


@pytest.mark.parametrize("lazy", [False, True])
def test_stale_momentum_drives_a_row_to_one_over_weight_decay(lazy):
    """One gradient, then none: plain Tiger walks the row to +-1/wd; lazy Tiger does not. The
    drift signal (row moved with a zero gradient) fires long before the row saturates."""
    embedding = nn.Embedding(3, 4)
    optimizer = Tiger(embedding.parameters(), lr=0.5, weight_decay=0.01, lazy=lazy)
    monitor = SaturationMonitor(embedding, 0.01, every=500, tolerance=0.01, fraction=1.0)
    monitor.attach(optimizer)
    embedding(torch.tensor([1])).sum().backward()
    optimizer.step()  # the only step with a gradient
    embedding.weight.grad.zero_()
    for _ in range(1999):
        optimizer.step()
    steps, counts = monitor.counts("weight")
    _, drifting = monitor.counts("weight", "drifting")
    _, grew = monitor.counts("weight", "grew_without_gradient")
    assert steps == [0, 500, 1000, 1500, 2000]
    if lazy:
        assert counts == [0] * 5 and drifting == [0] * 5 and grew == [0] * 5
    else:
        assert counts[-1] == 1 and monitor.latest["weight"].tolist() == [1]
        torch.testing.assert_close(embedding.weight[1], torch.full((4,), -100.0), atol=0.5, rtol=0)
        assert counts[1] == 0 and drifting[1] == 1  # warned at step 500, saturated later
        rows, drift = monitor.drifting_rows("weight")
        assert rows.tolist() == [1] and 0.9 < float(drift[0]) < 1.0
        assert grew[1] == 1  # rows 0 and 2 only shrink by decay; row 1 grows
    with pytest.raises(ValueError, match="unknown weight"):
        monitor.counts("bias")


def test_drift_matches_a_naive_norm_growth_sum():
    """track_every=1: drift[r] = sum over steps where row r's gradient is zero of (|w_r| after -
    |w_r| before), times wd / sqrt(columns)."""
    weight = nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    optimizer = Tiger([weight], lr=0.05, weight_decay=0.1)
    monitor = SaturationMonitor({"w": weight}, 0.1, every=2, track_every=1)
    generator = torch.Generator().manual_seed(11)
    expected = [0.0] * 5
    for step in range(6):
        grad = torch.randn(5, 3, generator=generator, dtype=torch.float64)
        grad[[step % 5, (step + 2) % 5]] = 0.0
        weight.grad = grad
        before = weight.detach().norm(dim=1).tolist()
        optimizer.step()
        monitor.step()
        after = weight.detach().norm(dim=1).tolist()
        idle = [r for r in range(5) if bool((grad[r] == 0).all())]
        for r in idle:
            expected[r] += (after[r] - before[r]) * 0.1 / math.sqrt(3)
        grew = [r for r in idle if after[r] > before[r]]
        assert monitor.grew_without_gradient["w"] == len(grew)
    torch.testing.assert_close(monitor.drift["w"], torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


def naive_interval_drift(norms, touched, tracked, wd, cols):
    """The documented drift from per-call data: ``norms[c]`` (row norms after call c, c = 0 the
    construction), ``touched[c]`` (rows with a non-zero gradient row at call c) and the tracking
    calls ``tracked``: sum over intervals (t', t] with no gradient on the row at call t of
    |w(t)| - |w(t')|, times wd / sqrt(cols); and the rows without gradient at the last tracking
    call that grew over its interval."""
    drift = [0.0] * len(norms[0])
    grew = 0
    for prev, now in zip([0, *tracked], tracked, strict=False):
        idle = [r for r in range(len(drift)) if r not in touched[now]]
        for r in idle:
            drift[r] += (norms[now][r] - norms[prev][r]) * wd / math.sqrt(cols)
        grew = sum(1 for r in idle if norms[now][r] > norms[prev][r])
    return drift, grew


def _record(weight, grad, norms, touched):
    norms.append(weight.detach().double().norm(dim=1).tolist())
    touched.append({r for r in range(grad.shape[0]) if bool(grad[r].ne(0).any())})


@pytest.mark.parametrize("every, track_every", [(4, 3), (100, 10), (5, 1)])
def test_drift_per_tracking_interval_matches_a_naive_reference(every, track_every):
    """Tracking calls: multiples of track_every and of every; random gradients with zero rows
    (wide rows: the zero test must read the whole gradient row)."""
    weight = nn.Parameter(torch.randn(6, 40, dtype=torch.float64))
    with torch.no_grad():
        weight[5] *= 0.01  # near zero: stale momentum grows it
    optimizer = Tiger([weight], lr=0.05, weight_decay=0.1)
    monitor = SaturationMonitor({"w": weight}, 0.1, every=every, track_every=track_every)
    generator = torch.Generator().manual_seed(12)
    norms, touched, tracked = [weight.detach().norm(dim=1).tolist()], [set()], []
    for call in range(1, 31):
        grad = torch.randn(6, 40, generator=generator, dtype=torch.float64)
        grad[torch.rand(6, generator=generator) < 0.6] = 0.0
        grad[0, :-1] = 0.0  # row 0: only its last entry can be non-zero
        grad[5] = 1.0 if call <= 2 else 0.0  # row 5: a gradient, then stale momentum only
        weight.grad = grad
        optimizer.step()
        monitor.step()
        _record(weight, grad, norms, touched)
        if call % track_every == 0 or call % every == 0:
            tracked.append(call)
            expected, grew = naive_interval_drift(norms, touched, tracked, 0.1, 40)
            torch.testing.assert_close(monitor.drift["w"],
                                       torch.tensor(expected, dtype=torch.float64),
                                       rtol=1e-9, atol=1e-12)
            assert monitor.grew_without_gradient["w"] == grew
    assert float(monitor.drift["w"][5]) > 0.05  # pushed by stale momentum after call 2


def test_tracking_work_runs_only_at_tracking_calls(monkeypatch):
    """Row norms and zero gradient rows are read at construction (norms) and at the tracking
    calls only (multiples of track_every and of every); between them the drift stays untouched
    although the weight moves (here without any gradient). Tracking at every call would read
    them at every call."""
    import logitkit.optim.monitor as monitor_module

    reads = []
    for helper in ("_row_norms", "_idle_rows"):
        real = getattr(monitor_module, helper)
        monkeypatch.setattr(monitor_module, helper,
                            lambda weight, real=real, helper=helper:
                            reads.append(helper) or real(weight))
    weight = torch.zeros(4, 3)
    monitor = SaturationMonitor({"w": weight}, 0.1, every=25, track_every=10)
    assert reads == ["_row_norms"]
    drift_before = monitor.drift["w"].clone()
    tracked = []
    for call in range(1, 51):
        weight[1] += 0.5  # moves without a gradient: drifts, but only seen at tracking calls
        before = len(reads)
        monitor.step()
        if len(reads) > before:
            assert reads[before:] == ["_row_norms", "_idle_rows"]
            tracked.append(call)
            drift_before = monitor.drift["w"].clone()
            torch.testing.assert_close(drift_before[1], torch.tensor(call * 0.5 * 0.1))
        else:
            assert torch.equal(monitor.drift["w"], drift_before)
    assert tracked == [10, 20, 25, 30, 40, 50]
    steps, drifting = monitor.counts("w", "drifting")
    assert steps == [0, 25, 50] and drifting == [0, 1, 1]


def test_default_monitor_tracks_one_call_in_twenty():
    """The defaults: drift is updated at calls 20, 40, ... and checked at 100."""
    weight = torch.zeros(2, 3)
    monitor = SaturationMonitor({"w": weight}, 0.1)
    assert (monitor.every, monitor.track_every) == (100, 20)
    weight[0] += 1.0
    for _ in range(19):
        monitor.step()
    assert float(monitor.drift["w"][0]) == 0.0
    monitor.step()
    assert float(monitor.drift["w"][0]) == pytest.approx(math.sqrt(3) * 0.1 / math.sqrt(3))


def test_sparse_gradients_mark_exactly_their_rows():
    weight = torch.zeros(4, 2, requires_grad=True)
    monitor = SaturationMonitor({"w": weight}, 0.1, every=1)
    weight.grad = torch.sparse_coo_tensor([[1, 3, 3]], [[1.0, 0.0], [2.0, 0.0], [-2.0, 0.0]],
                                          (4, 2), check_invariants=True)
    with torch.no_grad():
        weight += 1.0
    monitor.step()  # row 3's gradient sums to zero: no gradient
    assert sorted(monitor.drifting_rows("w")[0].tolist()) == [0, 2, 3]
    assert monitor.grew_without_gradient["w"] == 3


def test_planted_drifting_row_found_at_default_settings():
    """An embedding-like weight under Tiger at the default every/track_every/warn_drift: rows get
    random gradients at most steps; row 7 (near zero) gets one gradient and then none. The
    monitor's drift equals the documented definition computed naively; row 7 is the only
    drifting row, flagged at the first check (step 100), and its drift is that of per-step
    tracking up to the growth of its one step with a gradient."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(64, 32))
    with torch.no_grad():
        weight[7] *= 0.01
    optimizer = Tiger([weight], lr=0.01, weight_decay=0.1)
    monitor = SaturationMonitor({"w": weight}, 0.1)
    monitor.attach(optimizer)
    generator = torch.Generator().manual_seed(13)
    norms, touched, tracked = [weight.detach().double().norm(dim=1).tolist()], [set()], []
    per_step = [0.0] * 64
    for call in range(1, 201):
        grad = torch.randn(64, 32, generator=generator)
        grad[torch.rand(64, generator=generator) < 0.1] = 0.0
        grad[7] = grad[7] if call == 1 else 0.0
        weight.grad = grad
        optimizer.step()
        _record(weight, grad, norms, touched)
        for r in set(range(64)) - touched[-1]:
            per_step[r] += (norms[-1][r] - norms[-2][r]) * 0.1 / math.sqrt(32)
        if call % 20 == 0:
            tracked.append(call)
    expected, grew = naive_interval_drift(norms, touched, tracked, 0.1, 32)
    torch.testing.assert_close(monitor.drift["w"],
                               torch.tensor(expected, dtype=torch.float64).float(),
                               rtol=1e-4, atol=1e-6)
    assert monitor.grew_without_gradient["w"] == grew
    rows, drift = monitor.drifting_rows("w")
    assert rows.tolist() == [7] and float(drift[0]) > 0.15
    one_step = 0.01 * math.sqrt(32) * 0.1 / math.sqrt(32)
    assert 0.0 <= float(drift[0]) - per_step[7] <= one_step * 1.01
    steps, drifting = monitor.counts("w", "drifting")
    assert steps == [0, 100, 200] and drifting == [0, 1, 1]


def test_track_every_must_be_a_positive_int():
    with pytest.raises(ValueError, match="track_every"):
        SaturationMonitor({"w": torch.zeros(2, 2)}, 0.1, track_every=0)
