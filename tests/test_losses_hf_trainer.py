"""FusedLossTrainer: real ``transformers.Trainer`` runs on tiny random GPT-2 / Llama / Granite."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

from logitkit.losses.causal_lm import unpatch_causal_lm  # noqa: E402
from logitkit.losses.hf import FusedLossTrainer, GammaScheduleCallback  # noqa: E402
from logitkit.losses.modules import EMOLoss, TaiLrLoss, make_compute_loss_func  # noqa: E402

IGNORE = -100
V = 48
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=V, n_positions=32, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)),
    "granite": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(
        **SMALL, logits_scaling=1.0, embedding_multiplier=2.0, residual_multiplier=0.5)),
}


def make(name):
    torch.manual_seed(0)
    return MODELS[name]()


def examples(count, seed=0, length=10):
    """Sequences with a learnable pattern (next = 3 * current + 1 mod V), right padding and
    labels -100 on the padding."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        ids = torch.empty(length, dtype=torch.long)
        ids[0] = torch.randint(0, V, (1,), generator=gen)
        for j in range(1, length):
            ids[j] = (3 * ids[j - 1] + 1) % V
        mask = torch.ones(length, dtype=torch.long)
        mask[length - i % 4:] = 0  # 0 to 3 padded positions
        rows.append({"input_ids": ids, "attention_mask": mask,
                     "labels": ids.masked_fill(mask == 0, IGNORE)})
    return rows


def arguments(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[], save_strategy="no",
                   logging_steps=1, disable_tqdm=True, seed=0, dataloader_num_workers=0,
                   per_device_train_batch_size=4, per_device_eval_batch_size=8,
                   learning_rate=3e-3, max_steps=12, lr_scheduler_type="constant")
    return transformers.TrainingArguments(**{**options, **overrides})


def train_losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def batch_of(rows):
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


@pytest.mark.parametrize("name", ["gpt2", pytest.param("llama", marks=pytest.mark.slow),
                                  pytest.param("granite", marks=pytest.mark.slow)])
def test_trainer_trains_with_emo_and_evaluates(name, tmp_path):
    model = make(name)
    cost = model.get_output_embeddings().weight.detach().clone()
    train, held_out = examples(16), examples(8, seed=1)
    shapes = []

    def metrics(prediction):  # evaluation still returns the logits for metrics
        shapes.append(prediction.predictions.shape)
        return {}

    trainer = FusedLossTrainer(model=model, args=arguments(tmp_path), train_dataset=train,
                               eval_dataset=held_out, loss=EMOLoss(cost, mle_weight="adaptive"),
                               compute_metrics=metrics)
    before = trainer.evaluate()["eval_loss"]
    assert shapes == [(8, 10, V)]
    trainer.train()
    losses = train_losses(trainer)
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]
    after = trainer.evaluate()["eval_loss"]
    assert after < before
    # eval_loss is the EMO loss on the held-out batch, as the non-fused adapter computes it
    model.eval()
    inputs = batch_of(held_out)
    with torch.no_grad():
        labels = inputs["labels"]
        outputs = unpatch_causal_lm(model)(input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"])
        reference = make_compute_loss_func(EMOLoss(cost, mle_weight="adaptive"))(outputs, labels)
    torch.testing.assert_close(torch.tensor(after), reference, rtol=1e-5, atol=1e-6)


def test_trainer_refuses_a_model_with_scaled_logits(tmp_path):
    torch.manual_seed(0)
    model = transformers.GraniteForCausalLM(transformers.GraniteConfig(**SMALL,
                                                                       logits_scaling=8.0))
    with pytest.raises(ValueError, match="logits_scaling"):
        FusedLossTrainer(model=model, args=arguments(tmp_path), train_dataset=examples(4))
    with pytest.raises(ValueError, match="compute_loss_func"):
        FusedLossTrainer(model=make("gpt2"), args=arguments(tmp_path), train_dataset=examples(4),
                         compute_loss_func=make_compute_loss_func())


@pytest.mark.parametrize("loss", ["ce", pytest.param("tailr", marks=pytest.mark.slow)])
def test_gradient_accumulation_equals_the_full_batch(loss, tmp_path):
    """4 sequences with different padding: one step on all 4 = two accumulated steps of 2
    (num_items_in_batch counts the tokens of the whole accumulated batch)."""
    results = []
    for per_device, accumulation in ((4, 1), (2, 2)):
        model = make("llama")
        trainer = FusedLossTrainer(
            model=model, train_dataset=examples(4),
            loss=None if loss == "ce" else TaiLrLoss(0.5, threshold=0.1),
            args=arguments(tmp_path, per_device_train_batch_size=per_device,
                           gradient_accumulation_steps=accumulation, max_steps=3, optim="sgd",
                           learning_rate=0.5))
        trainer.train()
        results.append({k: p.detach().clone() for k, p in model.named_parameters()})
    start = dict(make("llama").named_parameters())
    for name, value in results[0].items():
        assert not torch.equal(value, start[name].detach())
        torch.testing.assert_close(results[1][name], value, rtol=1e-5, atol=1e-6)


def test_gamma_schedule_callback_ramps_gamma_per_optimizer_step(tmp_path):
    loss = TaiLrLoss(0.0)
    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(loss.gamma)

    trainer = FusedLossTrainer(
        model=make("gpt2"), train_dataset=examples(8), loss=loss,
        args=arguments(tmp_path, max_steps=4, per_device_train_batch_size=2,
                       gradient_accumulation_steps=2),
        callbacks=[GammaScheduleCallback(loss, start=0.2, end=0.8), Record()])
    trainer.train()
    torch.testing.assert_close(torch.tensor(seen), torch.tensor([0.2, 0.35, 0.5, 0.65]))
    with pytest.raises(TypeError, match="gamma"):
        GammaScheduleCallback(EMOLoss(torch.randn(V, 4)))
    with pytest.raises(ValueError, match="start and end"):
        GammaScheduleCallback(loss, end=1.5)
