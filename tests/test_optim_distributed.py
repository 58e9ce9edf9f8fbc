"""Tiger under torch.distributed on CPU (gloo, 2 processes): DDP and FSDP2 (``fully_shard``) give
the parameters of single-process training on the same global batch, with absolute and with the
released Tiger's relative step sizes (under FSDP2 the whole-tensor RMS is that of the full
tensor) and an AdamW embedding group."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from logitkit.optim import make_optimizer
from tests.distributed_helpers import free_port, join_gloo, leave_worker

WORLD = 2
STEPS = 4


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(40, 8), nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16),
                         nn.Linear(16, 40))


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 20, (8,), generator=generator) for _ in range(STEPS)]


OPTIONS = {"absolute": {"embeddings": "lazy"},
           "relative": {"embeddings": "lazy", "relative_lr": True},
           "adamw": {"embeddings": "adamw", "relative_lr": True}}


def _train(model, ids_per_step, options, forward=None):
    """Tiger steps; ``forward`` is the wrapped model (DDP) if any."""
    optimizer = make_optimizer(model, lr=0.05, weight_decay=0.1, **OPTIONS[options])
    for ids in ids_per_step:
        optimizer.zero_grad()
        nn.functional.cross_entropy((forward or model)(ids), (7 * ids + 3) % 40).backward()
        optimizer.step()


def _worker(rank, port, mode, options, out):
    join_gloo(rank, port, WORLD)
    try:
        model = _model()
        local = [ids.chunk(WORLD)[rank] for ids in _batches()]
        if mode == "ddp":
            _train(model, local, options, forward=nn.parallel.DistributedDataParallel(model))
            params = [p.detach() for p in model.parameters()]
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in (model[0], model[1], model[4]):
                fully_shard(layer)
            fully_shard(model)
            _train(model, local, options)
            params = [p.full_tensor().detach() for p in model.parameters()]
        if rank == 0:
            torch.save(params, out)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()
    leave_worker()


@pytest.mark.slow
@pytest.mark.parametrize("mode, options", [("ddp", "absolute"), ("fsdp", "absolute"),
                                           ("fsdp", "relative"), ("ddp", "adamw")])
def test_two_process_training_matches_single_process(mode, options, tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "params.pt"
    mp.spawn(_worker, args=(free_port(), mode, options, str(out)), nprocs=WORLD)
    single = _model()
    _train(single, _batches(), options)
    expected = [p.detach() for p in single.parameters()]
    got = torch.load(out)
    assert len(got) == len(expected)
    start = _model()
    for a, b, before in zip(got, expected, start.parameters(), strict=True):
        assert not torch.equal(b, before)  # every parameter moved
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    if OPTIONS[options]["embeddings"] == "lazy":
        # rows 20..39 of the embedding were never seen: lazy rows left them as initialised
        assert torch.equal(got[0][20:], start[0].weight.detach()[20:])
