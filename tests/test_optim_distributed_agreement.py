"""Tiger and Lion on 2 gloo processes where ranks see different gradients: a NaN in one rank's
FSDP2 shard, DDP's ``no_sync()`` gradient accumulation (in the optimizer and in ``.grad``), FSDP2
accumulation without gradient sync, lazy AdamW rows touched on one shard only, and resume in the
middle of an accumulation window. Each run must equal single-process training on the same global
batches (the reference below: one process, the whole batch), every rank must end with the same
parameters, and no rank may hang (each run has a deadline)."""

import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from logitkit.optim import make_optimizer
from tests.distributed_helpers import free_port, join_gloo, leave_worker

WORLD = 2
VOCAB = 41
DEADLINE_S = 120

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo")


def _model():
    """Odd sizes, so FSDP2's shards are uneven (21 + 20 embedding rows, 8 + 7 hidden rows)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, 15), nn.GELU(), nn.LayerNorm(15),
                         nn.Linear(15, VOCAB))


def _micro_batches(calls):
    """Global batch of 8 ids per call; early calls only use ids < 16 (in rank 0's FSDP2 shard of
    the embedding), later ones all ids, so lazy rows of one shard stay untouched for a while."""
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 16 if call < 3 else VOCAB, (8,), generator=generator)
            for call in range(calls)]


def _loss(model, ids):
    return nn.functional.cross_entropy(model(ids), (7 * ids + 3) % VOCAB)


def _optimizer(model, case):
    optimizer = make_optimizer(model, optimizer=case.get("optimizer", "tiger"), lr=0.05,
                               weight_decay=0.1, **case["options"])
    if case.get("lazy_adamw"):
        optimizer.param_groups[-1]["lazy"] = True  # the embedding group: lazy AdamW rows
    return optimizer


def _poison(model, case, call, rank=None):
    """NaN in one entry of the gradient of ``case["nan"] = (param index, call)``: on ``rank``'s
    local gradient (its shard under FSDP2), or anywhere in the whole gradient (rank None)."""
    if case.get("nan") is None or case["nan"][1] != call:
        return
    param = list(model.parameters())[case["nan"][0]]
    grad = param.grad
    local = grad.to_local() if hasattr(grad, "to_local") else grad
    if rank is None or rank == 1:
        local.view(-1)[0] = math.nan


def single_process(case):
    """The reference: one process, the whole global batch of every call."""
    model = _model()
    optimizer = _optimizer(model, case)
    k = case.get("k", 1)
    in_grad = case.get("path") == "grad"
    for call, ids in enumerate(_micro_batches(case["calls"])):
        loss = _loss(model, ids)
        (loss / k if in_grad else loss).backward()
        _poison(model, case, call)
        if not in_grad or call % k == k - 1:
            optimizer.step()
            optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def _distributed(rank, case, out):
    model = _model()
    fsdp = case["mode"] == "fsdp"
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in (model[0], model[1], model[4]):
            fully_shard(layer)
        fully_shard(model)
        forward = model
    else:
        forward = nn.parallel.DistributedDataParallel(model)
    optimizer = _optimizer(model, case)
    k = case.get("k", 1)
    in_grad = case.get("path") == "grad"
    for call, ids in enumerate(_micro_batches(case["calls"])):
        local_ids = ids.chunk(WORLD)[rank]
        closes = call % k == k - 1
        sync = closes or not case.get("no_sync")
        if fsdp:
            model.set_requires_gradient_sync(sync)
            loss = _loss(forward, local_ids)
            (loss / k if in_grad else loss).backward()
        else:
            with forward.no_sync() if not sync else _nothing():
                loss = _loss(forward, local_ids)
                (loss / k if in_grad else loss).backward()
        _poison(model, case, call, rank)
        if not in_grad or closes:
            optimizer.step()
            optimizer.zero_grad()
        if case.get("resume_at") == call:
            state = optimizer.state_dict()
            optimizer = _optimizer(model, case)
            optimizer.load_state_dict(state)
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
              for p in model.parameters()]
    gathered = [[torch.empty_like(p) for _ in range(WORLD)] for p in params]
    for p, slots in zip(params, gathered, strict=True):
        dist.all_gather(slots, p.detach().contiguous())
    if rank == 0:
        torch.save({"params": params, "replicas": gathered}, out)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _worker(rank, port, case, out):
    join_gloo(rank, port, WORLD)
    try:
        _distributed(rank, case, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    leave_worker()


def run_two_processes(case, tmp_path):
    """Spawn the 2 ranks; fail (and kill them) if they have not finished by the deadline."""
    out = tmp_path / "result.pt"
    context = mp.spawn(_worker, args=(free_port(), case, str(out)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"ranks still running after {DEADLINE_S} s (hang): {case}")
    return torch.load(out)


def _check(case, tmp_path):
    result = run_two_processes(case, tmp_path)
    expected = single_process(case)
    for index, (got, want, replicas) in enumerate(
            zip(result["params"], expected, result["replicas"], strict=True)):
        assert torch.equal(replicas[0], replicas[1]), f"replicas of parameter {index} differ"
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6, msg=f"parameter {index}")
    return result, expected


NAN_CASES = {
    "fsdp-relative-skip": {"mode": "fsdp", "options": {"relative_lr": True}},
    "fsdp-relative-shrink": {"mode": "fsdp",
                             "options": {"relative_lr": True, "nonfinite": "shrink"}},
    "fsdp-absolute-skip": {"mode": "fsdp", "options": {}},
    "fsdp-lion-adamw": {"mode": "fsdp", "optimizer": "lion",
                        "options": {"embeddings": "adamw", "relative_lr": True,
                                    "nonfinite": "shrink", "betas": (0.9, 0.99)}},
    "ddp-no-sync-k2-nan": {"mode": "ddp", "no_sync": True, "k": 2,
                           "options": {"relative_lr": True, "accumulation_steps": 2}},
    "ddp-synced-lion-nan": {"mode": "ddp", "optimizer": "lion",
                            "options": {"relative_lr": True, "nonfinite": "shrink"}},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NAN_CASES))
def test_a_nan_on_one_rank_is_one_decision_on_every_rank(name, tmp_path):
    """Parameter 1 (the first Linear's weight, sharded by rows under FSDP2) gets a NaN on rank 1
    only at call 2: every rank skips (or shrinks) the whole parameter, as one process does."""
    case = {**NAN_CASES[name], "calls": 6, "nan": (1, 2)}
    with pytest.warns(RuntimeWarning, match="non-finite|NaN"):
        expected = single_process(case)
    result = run_two_processes(case, tmp_path)
    for index, (got, want) in enumerate(zip(result["params"], expected, strict=True)):
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6, msg=f"parameter {index}")


ACCUMULATION_CASES = {
    "ddp-in-optimizer-k3": {"mode": "ddp", "no_sync": True, "k": 3,
                            "options": {"accumulation_steps": 3}},
    "ddp-in-optimizer-k2-relative-lazy": {"mode": "ddp", "no_sync": True, "k": 2,
                                          "options": {"accumulation_steps": 2,
                                                      "relative_lr": True}},
    "ddp-in-optimizer-k3-adamw": {"mode": "ddp", "no_sync": True, "k": 3,
                                  "options": {"accumulation_steps": 3, "embeddings": "adamw"}},
    "ddp-in-optimizer-k3-resume": {"mode": "ddp", "no_sync": True, "k": 3, "resume_at": 4,
                                   "options": {"accumulation_steps": 3, "relative_lr": True}},
    "ddp-in-optimizer-k2-lion": {"mode": "ddp", "no_sync": True, "k": 2, "optimizer": "lion",
                                 "options": {"accumulation_steps": 2, "betas": (0.95, 0.95)}},
    "ddp-in-grad-k3": {"mode": "ddp", "no_sync": True, "k": 3, "path": "grad",
                       "options": {"relative_lr": True}},
    "fsdp-in-optimizer-k2": {"mode": "fsdp", "no_sync": True, "k": 2,
                             "options": {"accumulation_steps": 2, "relative_lr": True}},
    "fsdp-in-optimizer-k3-resume": {"mode": "fsdp", "no_sync": True, "k": 3, "resume_at": 1,
                                    "options": {"accumulation_steps": 3,
                                                "embeddings": "adamw"}},
    "fsdp-in-grad-k2": {"mode": "fsdp", "no_sync": True, "k": 2, "path": "grad",
                        "options": {"relative_lr": True, "embeddings": "adamw"}},
    "fsdp-adamw-lazy-rows-on-one-shard": {"mode": "fsdp", "k": 1, "lazy_adamw": True,
                                          "options": {"embeddings": "adamw"}},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCUMULATION_CASES))
def test_accumulation_across_ranks_equals_one_process(name, tmp_path):
    """In-optimizer accumulation under DDP's ``no_sync()`` (local gradients on all but the last
    micro-step) and FSDP2 without gradient sync, the "accumulate in .grad, step once" path, and
    resume in the middle of a window: the parameters of one process on the global batches."""
    case = {**ACCUMULATION_CASES[name], "calls": 9}
    result, expected = _check(case, tmp_path)
    start = _model()
    assert not torch.equal(expected[1], start[1].weight.detach())


def _column_sharded_worker(rank, port, out):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    join_gloo(rank, port, WORLD)
    try:
        model = _model()
        fully_shard(model[0], shard_placement_fn=lambda param: Shard(1))
        fully_shard(model)
        optimizer = make_optimizer(model, lr=0.05)  # the embedding group is lazy
        _loss(model, _micro_batches(1)[0].chunk(WORLD)[rank]).backward()
        before = [p.full_tensor() for p in model.parameters()]
        try:
            optimizer.step()
            message = ""
        except ValueError as error:
            message = str(error)
        unchanged = all(torch.equal(a, p.full_tensor())
                        for a, p in zip(before, model.parameters(), strict=True))
        if rank == 0:
            torch.save({"message": message, "unchanged": unchanged}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    leave_worker()


@pytest.mark.slow
def test_lazy_rows_refuse_a_parameter_sharded_along_columns(tmp_path):
    """Tensor-parallel column shards (here FSDP2 with ``Shard(1)``) hold partial rows: lazy rows
    would decide "untouched" from a part of a row. The step refuses before anything moves."""
    out = tmp_path / "result.pt"
    mp.spawn(_column_sharded_worker, args=(free_port(), str(out)), nprocs=WORLD)
    result = torch.load(out)
    assert "sharded along dim 1" in result["message"] and "lazy=True" in result["message"]
    assert result["unchanged"]
