"""TRL's SFTTrainer with the fused losses: FusedLossSFTTrainer trains the chosen loss (logged
loss and gradients), CE equals SFTTrainer's own loss (dense and MoE), and a model patched by
patch_causal_lm is refused by the plain SFTTrainer instead of silently training CE.

References: naive per-token formulas on the model's own full logits, written here, and TRL's
own ``SFTTrainer.compute_loss`` for cross-entropy.
"""

from __future__ import annotations

import pytest
import torch

from logitkit.losses import TaiLrLoss, patch_causal_lm

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from logitkit.losses.trl import FusedLossSFTTrainer  # noqa: E402

V = 48


def _tokenizer():
    vocab = {f"t{i}": i for i in range(V)}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t1"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, pad_token="t0",
                                                eos_token="t2", unk_token="t1")


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=32,
                                      pad_token_id=0, eos_token_id=2)
    return transformers.LlamaForCausalLM(config)


def _mixtral():
    torch.manual_seed(0)
    config = transformers.MixtralConfig(vocab_size=V, hidden_size=32, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=32,
                                        num_local_experts=4, num_experts_per_tok=2,
                                        router_aux_loss_coef=0.3, output_router_logits=True,
                                        pad_token_id=0, eos_token_id=2)
    return transformers.MixtralForCausalLM(config)


def _dataset(rows=4):
    gen = torch.Generator().manual_seed(5)
    lengths = [9, 6, 8, 7, 9, 5][:rows]  # the collator pads (labels -100 there)
    return datasets.Dataset.from_list(
        [{"input_ids": torch.randint(3, V, (n,), generator=gen).tolist()} for n in lengths])


def _args(tmp_path, **overrides):
    settings = dict(max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                    save_strategy="no", logging_steps=1, learning_rate=1e-3,
                    disable_tqdm=True)
    return trl.SFTConfig(str(tmp_path), **{**settings, **overrides})


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def _naive_tailr(model, batch, gamma, threshold):
    """-max(b, w) log p_t with w = p_t / (gamma + (1 - gamma) p_t) detached, mean over labels."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].log_softmax(-1)
    target = batch["labels"][:, 1:]
    counted = target != -100
    logp_t = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    p_t = logp_t.exp().detach()
    weight = torch.clamp(p_t / (gamma + (1 - gamma) * p_t), min=threshold)
    return -(weight * logp_t)[counted].mean()


def _grads(loss, model):
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


def _assert_close(ours, reference):
    torch.testing.assert_close(ours[0].detach(), reference[0].detach(), atol=2e-6, rtol=1e-5)
    for a, b in zip(ours[1], reference[1], strict=True):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-4)


def test_sft_trainer_trains_and_logs_the_chosen_loss(tmp_path):
    model = _llama()
    trainer = FusedLossSFTTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset(),
                                  processing_class=_tokenizer(),
                                  loss=TaiLrLoss(0.8, threshold=0.2))
    batch = _batch(trainer)
    assert (batch["labels"] == -100).any()  # padding is ignored
    model.train()
    reference = _naive_tailr(model, batch, 0.8, 0.2)
    expected = (reference, _grads(reference, model))
    ours = trainer.compute_loss(model, dict(batch))
    _assert_close((ours, _grads(ours, model)), expected)
    trainer.train()  # one step on the whole dataset: the logged loss is the initial one
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(reference.item(), rel=1e-5)
    # tokens seen: the compute_loss call above and the training step, on the same batch
    assert logged["num_tokens"] == 2 * int(batch["attention_mask"].sum())
    with torch.no_grad():
        cross_entropy = torch.nn.functional.cross_entropy(
            model(input_ids=batch["input_ids"]).logits[:, :-1].reshape(-1, V),
            batch["labels"][:, 1:].reshape(-1))
    assert abs(logged["loss"] - cross_entropy.item()) > 1.0  # not SFTTrainer's CE (about 3.9)


def test_evaluation_reports_the_loss_and_token_metrics(tmp_path):
    model = _llama()
    trainer = FusedLossSFTTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset(),
                                  eval_dataset=_dataset(), processing_class=_tokenizer(),
                                  loss=TaiLrLoss(0.5, threshold=0.0))
    metrics = trainer.evaluate()
    batch = _batch(trainer)
    with torch.no_grad():
        reference = _naive_tailr(model.eval(), batch, 0.5, 0.0)
    # float32 sums in another order (the evaluation loop's batches and fused chunks, against
    # full logits here): 1.2e-5 apart on an AVX-512 machine; gamma 0.49 for 0.5 moves it by 2%
    assert metrics["eval_loss"] == pytest.approx(float(reference), rel=1e-4)
    assert 0.0 <= metrics["eval_mean_token_accuracy"] <= 1.0
    assert 0.0 < metrics["eval_entropy"] <= float(torch.log(torch.tensor(V))) + 1e-4


@pytest.mark.parametrize("build", [_llama, _mixtral], ids=["dense", "moe"])
def test_cross_entropy_equals_sft_trainers_own_loss(tmp_path, build):
    """With loss=None (CE), the fused loss is SFTTrainer's, router aux loss and accumulation
    weighting included (num_items_in_batch given, 2 accumulation steps)."""
    ours_trainer = FusedLossSFTTrainer(model=build(), args=_args(tmp_path / "a"),
                                       train_dataset=_dataset(), processing_class=_tokenizer())
    own_trainer = trl.SFTTrainer(model=build(), args=_args(tmp_path / "b"),
                                 train_dataset=_dataset(), processing_class=_tokenizer())
    batch = _batch(own_trainer)
    items = int((batch["labels"][:, 1:] != -100).sum()) + 5  # as if more tokens accumulated
    results = []
    for trainer in (ours_trainer, own_trainer):
        trainer.current_gradient_accumulation_steps = 2
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
        results.append((loss, _grads(loss, trainer.model)))
    _assert_close(*results)
    if build is _mixtral:
        assert ours_trainer._metrics["train"]["aux_loss"]


def test_a_patched_model_in_the_plain_sft_trainer_is_refused_not_trained_with_ce(tmp_path):
    model = patch_causal_lm(_llama(), TaiLrLoss(0.8))
    trainer = trl.SFTTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset(),
                             processing_class=_tokenizer())
    with pytest.raises(RuntimeError, match="FusedLossSFTTrainer"):
        trainer.train()


@pytest.mark.parametrize("option", [{"loss_type": "dft"}, {"label_smoothing_factor": 0.1}])
def test_options_that_replace_the_loss_are_refused(tmp_path, option):
    with pytest.raises(ValueError, match="would replace it"):
        FusedLossSFTTrainer(model=_llama(), args=_args(tmp_path, **option),
                            train_dataset=_dataset(), processing_class=_tokenizer(),
                            loss=TaiLrLoss(0.5))
    with pytest.raises(ValueError, match="compute_loss_func"):
        FusedLossSFTTrainer(model=_llama(), args=_args(tmp_path), train_dataset=_dataset(),
                            processing_class=_tokenizer(), loss=TaiLrLoss(0.5),
                            compute_loss_func=lambda *a, **k: 0)


def test_peft_config_with_lora_and_a_trained_head_copy(tmp_path):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                             modules_to_save=["lm_head"], lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    trainer = FusedLossSFTTrainer(model=_llama(), args=_args(tmp_path),
                                  train_dataset=_dataset(), processing_class=_tokenizer(),
                                  peft_config=config, loss=TaiLrLoss(0.6, threshold=0.1))
    model = trainer.model
    assert isinstance(model, peft.PeftModel)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    batch = _batch(trainer)
    model.train()
    reference = _naive_tailr(model, batch, 0.6, 0.1)
    ours = trainer.compute_loss(model, dict(batch))
    _assert_close((ours, _grads(ours, model)), (reference, _grads(reference, model)))


def test_lora_on_the_head_points_to_the_trainer_that_fuses_it(tmp_path):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"],
                             task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="FusedLossTrainer"):
        FusedLossSFTTrainer(model=_llama(), args=_args(tmp_path), train_dataset=_dataset(),
                            processing_class=_tokenizer(), peft_config=config)
