"""patch_causal_lm / causal_lm_loss on tiny random Hugging Face models (no downloads).

Accepted architectures must reproduce the model's own loss and gradients; architectures whose
logits are not ``lm_head(last_hidden_state)`` must be refused, whatever their config calls it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import subprocess
import sys

import pytest
import torch

from logitkit.losses.causal_lm import causal_lm_loss, patch_causal_lm, unpatch_causal_lm
from logitkit.losses.modules import CrossEntropyLoss, EMOLoss, TaiLrLoss

transformers = pytest.importorskip("transformers")

IGNORE = -100
V = 64
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def gpt2(**overrides):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=V, n_positions=64, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **overrides))


def llama(tied=False):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL,
                                                                  tie_word_embeddings=tied))


def smollm2():
    """SmolLM2-135M's config (Llama, tied head, rope theta 1e5, 9 heads / 3 kv heads, SiLU),
    scaled down: width 36 = 9 heads x 4, 2 layers."""
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=36, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=64,
        rope_theta=100000.0, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0))


def llama_with_head_bias():
    model = llama()
    model.lm_head = torch.nn.Linear(32, V, bias=True)
    torch.nn.init.normal_(model.lm_head.bias)
    return model


def llama_checkpointed():
    model = llama()
    model.config.use_cache = False
    enable = getattr(model, "activation_checkpointing_enable", None)  # newer name
    (enable or model.gradient_checkpointing_enable)()
    return model


def granite(logits_scaling):
    return transformers.GraniteForCausalLM(transformers.GraniteConfig(
        **SMALL, logits_scaling=logits_scaling, embedding_multiplier=2.0,
        residual_multiplier=0.5, attention_multiplier=0.25))


ACCEPTED = {
    "gpt2": gpt2,
    "llama-untied": llama,
    "llama-tied": lambda: llama(tied=True),
    "llama-head-bias": llama_with_head_bias,
    "llama-gradient-checkpointing": llama_checkpointed,
    "smollm2": smollm2,
    "granite-scaling-1": lambda: granite(1.0),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**SMALL)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SMALL)),
}


def _refused():
    """(factory, which check fails); FalconH1's mamba layers take ~20 s on CPU: slow."""
    output, hidden = "output layer.s logits", "final hidden states"
    cases = [
        pytest.param(lambda: granite(8.0), output, id="granite-scaling-8"),
        pytest.param(lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **SMALL, head_dim=8, final_logit_softcapping=30.0)), output, id="gemma2-softcap"),
        pytest.param(lambda: transformers.CohereForCausalLM(transformers.CohereConfig(
            **SMALL, logit_scale=0.0625)), output, id="cohere-logit-scale"),
    ]
    if hasattr(transformers, "FalconH1Config"):
        cases.append(pytest.param(
            lambda: transformers.FalconH1ForCausalLM(transformers.FalconH1Config(
                **SMALL, lm_head_multiplier=2.0)), output, id="falcon-h1-multiplier",
            marks=pytest.mark.slow))
    if hasattr(transformers, "MiniCPM3Config"):
        mla = {**SMALL, "num_key_value_heads": 4, "kv_lora_rank": 16, "q_lora_rank": 16,
               "qk_nope_head_dim": 8, "qk_rope_head_dim": 8}
        cases.append(pytest.param(
            lambda: transformers.MiniCPM3ForCausalLM(transformers.MiniCPM3Config(
                **mla, dim_model_base=256)), hidden, id="minicpm3-hidden-scaling"))
    return cases


def make(factory):
    torch.manual_seed(0)
    return factory().train()


def batch(seed=1, rows=3, length=12):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, -4:] = 0  # right padding on the last row
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[0, :3] = IGNORE  # a prompt that is not scored
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads_of(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(ours, reference):
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("name", ACCEPTED)
def test_patched_model_reproduces_its_own_loss_and_gradients(name):
    model = make(ACCEPTED[name])
    inputs = batch()
    reference = model(**inputs)
    ref_grads = grads_of(model, reference.loss)
    patch_causal_lm(model, chunk_size=5)
    ours = model(**inputs)
    assert ours.logits.shape == (3, 0, V)  # training: the logits are never formed
    torch.testing.assert_close(ours.loss, reference.loss)
    assert_same_grads(grads_of(model, ours.loss), ref_grads)
    count = torch.tensor(50)
    torch.testing.assert_close(model(**inputs, num_items_in_batch=count).loss,
                               unpatch_causal_lm(model)(**inputs, num_items_in_batch=count).loss)


@pytest.mark.parametrize(("factory", "where"), _refused())
def test_models_with_transformed_logits_are_refused(factory, where):
    model = make(factory)
    inputs = batch()
    with pytest.raises(ValueError, match=f"transforms the {where}"):
        patch_causal_lm(model)
    assert "forward" not in model.__dict__  # left unpatched
    with pytest.raises(ValueError, match=f"transforms the {where}"):
        causal_lm_loss(model, inputs)
    assert model(**inputs).loss.isfinite()


def test_the_check_looks_at_the_forward_not_the_config():
    """A config field that this architecture ignores does not matter; a changed forward does."""
    model = make(gpt2)
    model.config.final_logit_softcapping = 30.0  # GPT-2 ignores it
    inputs = batch()
    torch.testing.assert_close(causal_lm_loss(model, inputs), model(**inputs).loss)

    class SoftCapped(transformers.GPT2LMHeadModel):
        def forward(self, input_ids=None, labels=None, logits_to_keep=0, **kwargs):
            output = super().forward(input_ids, labels=labels, logits_to_keep=logits_to_keep,
                                     **kwargs)
            output.logits = 50.0 * torch.tanh(output.logits / 50.0)
            return output

    torch.manual_seed(0)
    capped = SoftCapped(model.config)
    with pytest.raises(ValueError, match="transforms the output layer's logits"):
        patch_causal_lm(capped)


def test_eval_mode_returns_the_models_logits_with_the_fused_loss():
    model = make(llama)
    inputs = batch()
    model.eval()
    reference = model(**inputs)
    patch_causal_lm(model, TaiLrLoss(0.3))
    ours = model(**inputs)
    torch.testing.assert_close(ours.logits, reference.logits)
    expected = naive_tailr(reference.logits, inputs["labels"], gamma=0.3)
    torch.testing.assert_close(ours.loss, expected)
    patch_causal_lm(model, TaiLrLoss(0.3), eval_logits=False)
    assert model(**inputs).logits.shape[1] == 0
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(**inputs, logits_to_keep=torch.tensor([0, 1]))
    as_tuple = model(**inputs, return_dict=False)
    torch.testing.assert_close(as_tuple[0], expected)


def naive_emo(logits, labels, embedding):
    """Shifted EMO with an explicit V x V cosine cost and a loop over tokens."""
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    cost = 1.0 - unit @ unit.T
    values = [(torch.softmax(logits[b, i], 0) * cost[:, int(labels[b, i + 1])]).sum()
              for b in range(labels.shape[0]) for i in range(labels.shape[1] - 1)
              if labels[b, i + 1] != IGNORE]
    return torch.stack(values).mean()


def naive_tailr(logits, labels, *, gamma, threshold=None):
    values = []
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1] - 1):
            t = int(labels[b, i + 1])
            if t == IGNORE:
                continue
            p_t = torch.softmax(logits[b, i], 0)[t]
            if threshold is None:
                values.append(-torch.log(gamma + (1 - gamma) * p_t) / (1 - gamma))
            else:
                weight = torch.clamp(p_t / (gamma + (1 - gamma) * p_t), min=threshold)
                values.append(-weight.detach() * torch.log(p_t))
    return torch.stack(values).mean()


@pytest.mark.parametrize("name", ["gpt2", "smollm2"])
def test_emo_and_tailr_inside_the_forward_match_naive_references(name):
    model = make(ACCEPTED[name])
    inputs = batch()
    embedding = model.get_output_embeddings().weight.detach().clone()
    plain = {k: v for k, v in inputs.items() if k != "labels"}
    for loss, reference in [
        (EMOLoss(embedding), lambda logits: naive_emo(logits, inputs["labels"], embedding)),
        (TaiLrLoss(0.6, threshold=0.2),
         lambda logits: naive_tailr(logits, inputs["labels"], gamma=0.6, threshold=0.2)),
    ]:
        unpatch_causal_lm(model)
        expected = reference(model(**plain).logits)
        ref_grads = grads_of(model, expected)
        patch_causal_lm(model, loss, chunk_size=7)
        ours = model(**inputs).loss
        torch.testing.assert_close(ours, expected)
        assert_same_grads(grads_of(model, ours), ref_grads)


def test_causal_lm_loss_masks_padding_without_labels():
    model = make(gpt2)
    inputs = batch()
    del inputs["labels"]
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, IGNORE)
    expected = model(**inputs, labels=labels).loss
    torch.testing.assert_close(causal_lm_loss(model, inputs), expected)
    unmasked = model(**inputs, labels=inputs["input_ids"]).loss
    assert not torch.allclose(causal_lm_loss(model, inputs), unmasked)


def test_causal_lm_loss_keeps_an_existing_patch_and_validates():
    model = make(gpt2)
    inputs = batch()
    emo = EMOLoss(model.lm_head.weight.detach().clone(), mle_weight=0.5)
    patch_causal_lm(model, emo)
    ce = causal_lm_loss(model, inputs, CrossEntropyLoss())
    torch.testing.assert_close(ce, unpatch_causal_lm(copy.deepcopy(model))(**inputs).loss)
    assert model.__dict__["_logitkit_fused_loss"].loss is emo  # restored after the call
    with pytest.raises(ValueError, match="input_ids"):
        causal_lm_loss(model, {"labels": inputs["labels"]})
    with pytest.raises(ValueError, match="labels"):
        causal_lm_loss(model, {**inputs, "labels": inputs["labels"][:, :-1]})
    with pytest.raises(ValueError, match="causal LM"):
        causal_lm_loss(torch.nn.Linear(3, 3), inputs)
    with pytest.raises(TypeError, match="OutputLoss"):
        patch_causal_lm(model, torch.nn.CrossEntropyLoss())


def test_patch_keeps_signature_state_dict_and_survives_deepcopy():
    model = make(llama)
    signature = inspect.signature(model.forward)
    keys = set(model.state_dict())
    patch_causal_lm(model, EMOLoss(model.lm_head.weight.detach().clone()))
    assert inspect.signature(model.forward) == signature  # Trainer reads it
    assert set(model.state_dict()) == keys  # the loss is not saved with the model
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lm_head.weight.mul_(2.0)
    inputs = batch()
    assert not torch.allclose(twin(**inputs).loss, model(**inputs).loss)  # twin uses its own head
    twin_loss = twin(**inputs).loss
    unpatch_causal_lm(model)
    assert "forward" not in model.__dict__
    assert model(**inputs).logits.shape == (3, 12, V)
    assert not model.model._forward_pre_hooks  # the guard left with the patch
    torch.testing.assert_close(twin(**inputs).loss, twin_loss)  # the twin's patch is its own
    # The twin still refuses a forward that replaced its patched one and skips it.
    twin.forward = lambda **kw: twin.model(input_ids=kw["input_ids"])
    with pytest.raises(RuntimeError, match="replaced afterwards"):
        twin(**inputs)


def test_a_replaced_forward_that_bypasses_the_patch_is_refused():
    model = patch_causal_lm(make(gpt2), TaiLrLoss(0.5))
    inputs = batch()
    patched = model.forward
    model.transformer(input_ids=inputs["input_ids"])  # a direct call of the base model: fine
    model.forward = functools.wraps(patched)(lambda **kw: patched(**kw))  # wraps it: fine
    fused = model(**inputs).loss
    model.transformer(input_ids=inputs["input_ids"])
    model.forward = lambda **kw: model.transformer(input_ids=kw["input_ids"])  # bypasses it
    with pytest.raises(RuntimeError, match="replaced afterwards"):
        model(**inputs)
    model.forward = patched
    torch.testing.assert_close(model(**inputs).loss, fused)


def test_importing_the_losses_does_not_import_transformers():
    code = "import sys, logitkit.losses; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    without = "import sys; sys.modules['transformers'] = None; import logitkit.losses.hf"
    run = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True)
    assert run.returncode != 0 and 'pip install "logitkit[hf]"' in run.stderr
