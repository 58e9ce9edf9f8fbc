"""Fused losses on PEFT models: a PeftModel is accepted as it is, and adapters on the output
layer (LoRA, modules_to_save) give the loss and gradients of the adapted layer's own logits.

Reference: the PEFT model's own forward (Hugging Face's cross-entropy on its full logits), and
for TaiLr a naive per-token formula on those logits, written here.
"""

from __future__ import annotations

import pytest
import torch

from logitkit.losses import TaiLrLoss
from logitkit.losses.causal_lm import patch_causal_lm, unpatch_causal_lm

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

V = 48


def _llama(tied: bool = False):
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=32,
                                      tie_word_embeddings=tied, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def _batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, V, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _peft(config, tied: bool = False):
    model = peft.get_peft_model(_llama(tied), config)
    with torch.no_grad():  # B starts at zero: move it so the adapter changes the logits
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _loss_and_grads(model, batch, seed=0):
    torch.manual_seed(seed)  # the same dropout masks for the model's own and the fused forward
    loss = model(**batch).loss
    trainable = [p for p in model.parameters() if p.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, trainable)


def _assert_same(ours, own, atol=2e-6):
    torch.testing.assert_close(ours[0], own[0], atol=atol, rtol=1e-5)
    assert len(ours[1]) == len(own[1]) > 0
    for a, b in zip(ours[1], own[1], strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


LORA_CASES = {
    "attention": dict(target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    "lm_head": dict(target_modules=["q_proj", "lm_head"], lora_dropout=0.0),
    "lm_head_dropout": dict(target_modules=["lm_head"], lora_dropout=0.2),
    "lm_head_bias": dict(target_modules=["lm_head"], lora_dropout=0.0, lora_bias=True),
    "lm_head_rslora": dict(target_modules=["lm_head"], lora_dropout=0.1, use_rslora=True),
}


@pytest.mark.parametrize("case", sorted(LORA_CASES))
def test_a_peft_model_is_fused_with_the_loss_and_gradients_of_its_own_forward(case):
    config = peft.LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **LORA_CASES[case])
    model = _peft(config).train()
    batch = _batch()
    own = _loss_and_grads(model, batch)
    assert patch_causal_lm(model) is model  # the PeftModel itself, no "transformers >= 4.50"
    ours = _loss_and_grads(model, batch)
    _assert_same(ours, own)
    # In training the logits are never formed.
    assert model(**batch).logits.shape[1] == 0
    unpatch_causal_lm(model)
    _assert_same(_loss_and_grads(model, batch), own, atol=0)


def test_lora_on_the_head_trains_with_tailr_on_the_adapted_logits():
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["lm_head"], lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    model = _peft(config, tied=True).train()
    batch = _batch()
    gamma = 0.7

    def naive_tailr():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logp = logits[:, :-1].log_softmax(-1)
        target = batch["labels"][:, 1:]
        counted = target != -100
        p_t = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0].exp()
        per_token = -torch.log(gamma + (1 - gamma) * p_t) / (1 - gamma)
        return per_token[counted].mean()

    torch.manual_seed(0)
    reference = naive_tailr()
    trainable = [p for p in model.parameters() if p.requires_grad]
    own = (reference.detach(), torch.autograd.grad(reference, trainable))
    patch_causal_lm(model, TaiLrLoss(gamma))
    _assert_same(_loss_and_grads(model, batch), own)
    lora_b = [g for (n, p), g in zip(((n, p) for n, p in model.named_parameters()
                                      if p.requires_grad), own[1], strict=True)
              if "lm_head" in n and "lora_B" in n]
    assert lora_b and lora_b[0].abs().sum() > 0  # the head's adapter gets a gradient


def test_modules_to_save_head_trains_its_copy():
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                             modules_to_save=["lm_head"], task_type="CAUSAL_LM")
    model = _peft(config).train()
    batch = _batch()
    own = _loss_and_grads(model, batch)
    patch_causal_lm(model)
    ours = _loss_and_grads(model, batch)
    _assert_same(ours, own)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    head_copy = names.index(next(n for n in names if "modules_to_save" in n and "lm_head" in n))
    assert ours[1][head_copy].abs().sum() > 0


def test_merged_and_disabled_adapters_on_the_head():
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"], lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    model = _peft(config).eval()
    batch = _batch()
    with torch.no_grad():
        adapted = model(**batch).loss
        with model.disable_adapter():
            plain = model(**batch).loss
        patch_causal_lm(model)
        assert torch.allclose(model(**batch).loss, adapted, atol=2e-6)
        with model.disable_adapter():
            assert torch.allclose(model(**batch).loss, plain, atol=2e-6)
        model.merge_adapter()
        assert torch.allclose(model(**batch).loss, adapted, atol=2e-5)
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapter matters


def test_prompt_tuning_peft_model_is_fused():
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    model = peft.get_peft_model(_llama(), config).train()
    batch = _batch()
    own = _loss_and_grads(model, batch)
    patch_causal_lm(model)
    _assert_same(_loss_and_grads(model, batch), own)


def test_dora_on_the_head_is_refused_by_name():
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"], use_dora=True,
                             task_type="CAUSAL_LM")
    model = _peft(config)
    with pytest.raises(ValueError, match="DoRA"):
        patch_causal_lm(model)


def test_fused_loss_trainer_takes_a_peft_model(tmp_path):
    from logitkit.losses.hf import FusedLossTrainer

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"],
                             lora_dropout=0.0, task_type="CAUSAL_LM")
    model = _peft(config)
    batch = _batch()
    rows = [{key: value[i].tolist() for key, value in batch.items()} for i in range(3)]
    with torch.no_grad():
        before = model.eval()(**batch).loss
    args = transformers.TrainingArguments(str(tmp_path), max_steps=3, learning_rate=1e-2,
                                          per_device_train_batch_size=3, report_to=[],
                                          use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = FusedLossTrainer(model=model, args=args, train_dataset=rows, loss=TaiLrLoss(0.5))
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and logged[-1] < logged[0]
    with torch.no_grad():
        assert model.eval()(**batch).loss < before
