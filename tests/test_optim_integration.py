"""The optimizers where users train: every torch lr scheduler (OneCycleLR/CyclicLR cycle Tiger's
beta), GradScaler, Hugging Face Trainer (with resume), and the half-swap tied output layer."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from logitkit.optim import HalfSwapTiedHead, Lion, Tiger, make_optimizer, param_groups
from logitkit.optim.tied import swap_halves


class Net(nn.Module):
    def __init__(self, vocab=12, width=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        return self.head(self.norm(self.hidden(self.embed(ids))))


SCHEDULERS = {
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda s: 1 / (s + 1)),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda s: 0.9),
    "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[1, 3], gamma=0.5),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=4),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=6, power=2.0),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=2),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=8),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.5, total_iters=2), lr_scheduler.ExponentialLR(o, 0.9)],
        milestones=[2]),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, 0.5, total_iters=2), lr_scheduler.ExponentialLR(o, 0.9)]),
}


def _batch(step, vocab=12):
    generator = torch.Generator().manual_seed(step)
    return torch.randint(0, vocab // 2, (6,), generator=generator)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("optimizer_name", ["tiger", "lion"])
def test_every_scheduler_drives_every_group(name, optimizer_name):
    """Each step moves a sign parameter by exactly the group's current lr (no decay, absolute
    steps), uses the current beta, and the AdamW embedding group follows the same schedule."""
    torch.manual_seed(0)
    model = Net()
    options = {"beta": 0.9} if optimizer_name == "tiger" else {"betas": (0.9, 0.99)}
    optimizer = make_optimizer(model, optimizer=optimizer_name, lr=1e-2, weight_decay=0.0,
                               embeddings="adamw", **options)
    scheduler = SCHEDULERS[name](optimizer)
    lrs = set()
    for step in range(6):
        lr = optimizer.param_groups[0]["lr"]
        beta1 = optimizer.param_groups[0]["betas"][0]
        lrs.add(round(lr, 12))
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr] * 3)
        hidden = model.hidden.weight
        before = hidden.detach().clone()
        momentum = (optimizer.state[hidden]["momentum"].clone() if optimizer.state.get(hidden)
                    else torch.zeros_like(hidden))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(_batch(step)), _batch(step + 100)).backward()
        grad = hidden.grad.clone()
        optimizer.step()
        direction = torch.sign(beta1 * momentum + (1 - beta1) * grad)
        torch.testing.assert_close(hidden.detach(), before - lr * direction, rtol=0, atol=1e-7)
        if name == "ReduceLROnPlateau":
            scheduler.step(1.0)
        else:
            scheduler.step()
    assert len(lrs) > 1  # the schedule really changed the step size
    assert "exp_avg" in optimizer.state[model.embed.weight]


def test_reduce_on_plateau_and_cycled_beta_of_tiger():
    param = nn.Parameter(torch.ones(3))
    optimizer = Tiger([param], lr=0.1)
    plateau = lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    for _ in range(3):
        param.grad = torch.ones(3)
        optimizer.step()
        plateau.step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    tiger = Tiger([nn.Parameter(torch.ones(3))], lr=0.1, beta=0.97)
    cyclic = lr_scheduler.OneCycleLR(tiger, max_lr=0.1, total_steps=10, base_momentum=0.8,
                                     max_momentum=0.9)
    assert tiger.param_groups[0]["betas"] == (0.9, 0.97)  # Tiger reads betas[0]
    tiger.param_groups[0]["params"][0].grad = torch.ones(3)
    tiger.step()
    cyclic.step()
    assert 0.8 <= tiger.param_groups[0]["betas"][0] < 0.9


def test_grad_scaler_skips_overflow_steps_and_otherwise_equals_unscaled_training():
    torch.manual_seed(1)
    model = Net()
    twin = copy.deepcopy(model)
    optimizer = make_optimizer(model, lr=1e-2, embeddings="adamw", relative_lr=True)
    reference = make_optimizer(twin, lr=1e-2, embeddings="adamw", relative_lr=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for step in range(5):
        for net, opt in ((model, optimizer), (twin, reference)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(_batch(step)), _batch(step + 50))
            if net is model:
                if step == 2:
                    loss = loss * math.inf  # overflow: the scaler must skip this step
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            elif step != 2:
                loss.backward()
                opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    assert scaler.get_scale() == 2.0**9
    assert optimizer.nonfinite_steps == 0  # the scaler caught it first


@pytest.mark.slow
def test_hugging_face_trainer_runs_and_resumes_bit_exactly(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class LM(Net):
        def forward(self, input_ids, labels):
            logits = super().forward(input_ids)
            return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()),
                    "logits": logits}

    generator = torch.Generator().manual_seed(2)
    rows = torch.randint(0, 6, (24, 5), generator=generator)
    data = [{"input_ids": r, "labels": (r * 5 + 1) % 12} for r in rows]

    def run(out, max_steps, resume=None):
        torch.manual_seed(3)
        model = LM()
        optimizer = make_optimizer(model, lr=1e-2, embeddings="adamw", relative_lr=True)
        scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=6)
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
            gradient_accumulation_steps=2, save_strategy="steps", save_steps=3,
            logging_steps=1, report_to=[], use_cpu=True, seed=4, data_seed=4,
            dataloader_num_workers=0, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                       optimizers=(optimizer, scheduler))
        trainer.train(resume_from_checkpoint=resume)
        return model, optimizer

    full, optimizer = run(tmp_path / "full", 6)
    start = LM()
    assert not torch.equal(full.embed.weight, start.embed.weight)
    assert "exp_avg" in optimizer.state[full.embed.weight]
    assert "momentum" in optimizer.state[full.hidden.weight]
    run(tmp_path / "part", 3)
    resumed, _ = run(tmp_path / "part", 6, resume=str(tmp_path / "part" / "checkpoint-3"))
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_swap_halves_and_the_tied_head_match_a_naive_definition():
    for width in (6, 7):
        hidden = torch.randn(2, 3, width, dtype=torch.float64)
        half = width // 2
        expected = torch.tensor([[[row[i] for i in list(range(half, width)) + list(range(half))]
                                  for row in batch] for batch in hidden.tolist()],
                                dtype=torch.float64)
        assert torch.equal(swap_halves(hidden), expected)
        embed = nn.Embedding(5, width).double()
        head = HalfSwapTiedHead(embed.weight, bias=True).double()
        assert head.weight is embed.weight
        logits = head(hidden)
        naive = torch.einsum("btd,vd->btv", expected, embed.weight) + head.bias
        torch.testing.assert_close(logits, naive)
        torch.autograd.gradcheck(swap_halves, (hidden.clone().requires_grad_(),))
        (grad,) = torch.autograd.grad(logits.square().sum(), embed.weight)
        (naive_grad,) = torch.autograd.grad(naive.square().sum(), embed.weight)
        torch.testing.assert_close(grad, naive_grad)
    with pytest.raises(ValueError, match="2-D"):
        HalfSwapTiedHead(nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match="hidden size"):
        HalfSwapTiedHead(nn.Parameter(torch.zeros(3, 4)))(torch.zeros(2, 5))


def test_half_swap_tie_removes_the_large_initial_loss_of_plain_tying():
    """The reason for the swap (kexue.fm/archives/9698): with a tied head, the logit of the input
    token itself is |w_i|^2 / sigma = sqrt(d) after a norm (init variance 1/d), so the loss of
    predicting another token is ~log(e^sqrt(d) + V) instead of ~log V; swapping halves makes it
    ~log V. And the tied weight is one parameter in one group."""
    torch.manual_seed(5)
    vocab, width = 1000, 256
    embed = nn.Embedding(vocab, width)
    nn.init.normal_(embed.weight, std=width**-0.5)
    norm = nn.LayerNorm(width, elementwise_affine=False)
    ids = torch.randint(0, vocab, (512,))
    targets = (ids + 1) % vocab
    plain = nn.functional.cross_entropy(norm(embed(ids)) @ embed.weight.t(), targets)
    swapped = nn.functional.cross_entropy(HalfSwapTiedHead(embed.weight)(norm(embed(ids))),
                                          targets)
    assert plain.item() > 2 * math.log(vocab) and swapped.item() < 1.2 * math.log(vocab)
    model = Net()
    model.head = HalfSwapTiedHead(model.embed.weight)
    groups = {g["name"]: g["params"] for g in param_groups(model)}
    assert sum(p is model.embed.weight for p in groups["embedding"]) == 1
    optimizer = Lion(model.parameters(), lr=1e-3)
    nn.functional.cross_entropy(model(_batch(0)), _batch(1)).backward()
    assert bool(model.embed.weight.grad.ne(0).any(dim=1).all())  # every row gets a gradient
    optimizer.step()
