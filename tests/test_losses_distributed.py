"""Fused losses inside the forward under torch.distributed on CPU (gloo, 2 processes).

``DDP(patch_causal_lm(model, loss))`` and ``fully_shard`` (FSDP2) on a patched model give the loss
and the gradients of single-process training on the whole batch, for CE, EMO (adaptive) and
TaiLr, on GPT-2 (tied head), Llama (untied) and a SmolLM2-shaped Llama (tied). Each rank gets
half of the rows (with different padding), the loss is Hugging Face Trainer's: the sum over the
rank's tokens divided by the global token count (``num_items_in_batch``), times the world size
(DDP and FSDP2 average gradients over ranks).

The last test runs ``FusedLossTrainer`` under ``torchrun`` (2 processes) and compares the trained
weights with a single-process run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from logitkit.losses.causal_lm import patch_causal_lm
from logitkit.losses.modules import EMOLoss, TaiLrLoss
from tests.distributed_helpers import free_port, join_gloo

transformers = pytest.importorskip("transformers")

WORLD = 2
IGNORE = -100
V = 40
REPO_ROOT = Path(__file__).resolve().parents[1]


def _model(arch):
    torch.manual_seed(0)
    if arch == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=2, n_embd=16, n_head=2, vocab_size=V, n_positions=16, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    # SmolLM2-135M's shape (tied head, 9 heads / 3 kv heads, rope theta 1e5), scaled down
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=18, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0))


def _loss(kind, model):
    if kind == "ce":
        return None
    if kind == "emo":
        return EMOLoss(model.get_output_embeddings().weight.detach().clone(),
                       mle_weight="adaptive")
    return TaiLrLoss(0.7, threshold=0.2)


def _per_token(kind):
    """Whether the loss is a sum of per-token terms (then shards add up to the whole batch).
    EMO's "adaptive" is the authors' per-token mixture where "adaptive_batch" (one ratio per
    batch) also exists; before that change, "adaptive" was the batch form."""
    if kind != "emo":
        return True
    try:
        EMOLoss(torch.ones(2, 1), mle_weight="adaptive_batch")
    except (TypeError, ValueError):
        return False
    return True


CASES = [(arch, kind) for arch in ("gpt2", "llama", "smollm2") for kind in ("ce", "emo", "tailr")]


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (4, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    mask[3, -5:] = 0
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[2, :4] = IGNORE  # an unscored prompt: ranks hold different token counts
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _shard(batch, rank):
    return {key: value.chunk(WORLD)[rank] for key, value in batch.items()}


def _count(batch):
    return (batch["labels"][:, 1:] != IGNORE).sum()


def _loss_and_grads(forward, model, inputs, count, scale=1.0):
    loss = forward(**inputs, num_items_in_batch=count).loss * scale
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return loss.detach(), grads


def _worker(rank, port, out):
    join_gloo(rank, port, WORLD)
    from torch.distributed.fsdp import fully_shard

    try:
        batch = _batch()
        local, count = _shard(batch, rank), _count(batch)
        results = {}
        for arch, kind in CASES:
            model = _model(arch)
            patch_causal_lm(model, _loss(kind, model), chunk_size=5)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            loss, grads = _loss_and_grads(ddp, model, local, count, scale=WORLD)
            dist.all_reduce(loss)
            results["ddp", arch, kind] = loss / WORLD, grads

            model = _model(arch)
            patch_causal_lm(model, _loss(kind, model), chunk_size=5)
            for block in model.base_model.get_submodule("h" if arch == "gpt2" else "layers"):
                fully_shard(block)
            fully_shard(model)
            loss, grads = _loss_and_grads(model, model, local, count, scale=WORLD)
            dist.all_reduce(loss)
            grads = {name: grad.full_tensor() for name, grad in grads.items()}
            results["fsdp", arch, kind] = loss / WORLD, grads
        torch.save(results, f"{out}.{rank}")
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


@functools.cache
def _single_process(arch, kind, shards):
    """Loss and gradients of one process: the whole batch (shards=1) or the sum of per-shard
    passes (shards=2: what the ranks compute together, whatever the loss)."""
    model = _model(arch)
    patch_causal_lm(model, _loss(kind, model), chunk_size=5)
    batch = _batch()
    total = 0.0
    for rank in range(shards):
        inputs = _shard(batch, rank) if shards > 1 else batch
        loss, grads = _loss_and_grads(model, model, inputs, _count(batch))
        total = total + loss
    return total, grads


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fused") / "results"
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD)
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize(("arch", "kind"), CASES)
def test_two_processes_match_single_process_training(distributed_results, mode, arch, kind):
    whole_loss, whole_grads = _single_process(arch, kind, shards=1)
    split_loss, split_grads = _single_process(arch, kind, shards=WORLD)
    if _per_token(kind):
        torch.testing.assert_close(split_loss, whole_loss)
        expected_loss, expected_grads = whole_loss, whole_grads
    else:  # the batch-ratio mixture: the ranks can only reproduce the per-shard computation
        expected_loss, expected_grads = split_loss, split_grads
    for rank, results in enumerate(distributed_results):
        loss, grads = results[mode, arch, kind]
        torch.testing.assert_close(loss, expected_loss, msg=f"rank {rank}")
        assert grads.keys() == expected_grads.keys()
        for name, expected in expected_grads.items():
            assert expected.abs().sum() > 0, name  # every parameter receives a gradient
            torch.testing.assert_close(grads[name], expected, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, r=rank, n=name: f"rank {r}, {n}: {m}")


# ----------------------------------------------------------------------------------------------
# FusedLossTrainer under torchrun: `python -m torch.distributed.run --nproc_per_node 2 ...`.


def _train_with_trainer(out_dir):
    """Three optimizer steps of FusedLossTrainer (TaiLr with a gamma ramp) on 4 sequences: one
    global batch of 4 per step, so the run does not depend on how batches are sampled."""
    from logitkit.losses.hf import FusedLossTrainer, GammaScheduleCallback

    model = _model("llama")
    loss = TaiLrLoss(0.0)
    rows = [{key: value[i] for key, value in _batch().items()} for i in range(4)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = transformers.TrainingArguments(
        output_dir=str(out_dir), use_cpu=True, report_to=[], save_strategy="no",
        disable_tqdm=True, seed=0, per_device_train_batch_size=4 // world, max_steps=3,
        optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", logging_steps=1)
    trainer = FusedLossTrainer(model=model, args=args, train_dataset=rows, loss=loss,
                               callbacks=[GammaScheduleCallback(loss, start=0.0, end=0.9)])
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_trainer_under_torchrun_matches_single_process(tmp_path):
    pytest.importorskip("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
               f"--master_port={free_port()}", "-m", "tests.test_losses_distributed",
               str(tmp_path)]
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = _train_with_trainer(tmp_path / "single")
    start = dict(_model("llama").named_parameters())
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"params.{rank}")
        for name, value in expected.items():
            assert not torch.equal(value, start[name].detach()), name
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, r=rank, n=name: f"rank {r}, {n}: {m}")


if __name__ == "__main__":  # one process of the torchrun launch above
    torch.set_num_threads(1)
    params = _train_with_trainer(Path(sys.argv[1]) / "run")
    torch.save(params, Path(sys.argv[1]) / f"params.{os.environ['RANK']}")
