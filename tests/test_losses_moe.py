"""patch_causal_lm on the MoE causal LMs of the installed transformers, and on OPT.

A MoE model adds ``router_aux_loss_coef * aux_loss`` (its router's load-balancing loss) to its
loss when ``output_router_logits`` is on; the patched model must do the same (same loss, same
gradients), or refuse the model with an error that names ``output_router_logits=False``.
Every ``*ForCausalLM`` whose config has MoE fields is built from a tiny config; those that do
not build (or cannot run) that way are skipped with the reason.
"""

from __future__ import annotations

import time

import pytest
import torch

from logitkit.losses.causal_lm import patch_causal_lm, unpatch_causal_lm

transformers = pytest.importorskip("transformers")

V = 64
MOE_FIELDS = ("router_aux_loss_coef", "aux_loss_coef", "num_experts", "num_local_experts",
              "moe_num_experts", "n_routed_experts")
TINY = dict(vocab_size=V, hidden_size=32, intermediate_size=32, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, expert_intermediate_size=16, ffn_hidden_size=32,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=64, num_experts=4, num_local_experts=4, moe_num_experts=4,
            n_routed_experts=4, num_experts_per_tok=2, top_k=2, moe_topk=2, n_group=1,
            topk_group=1, output_router_logits=True, router_aux_loss_coef=0.5, aux_loss_coef=0.5,
            router_jitter_noise=0.0, input_jitter_noise=0.0, attention_dropout=0.0,
            hidden_dropout=0.0, dropout=0.0, kv_lora_rank=8, q_lora_rank=8, qk_nope_head_dim=8,
            qk_rope_head_dim=8, v_head_dim=8, first_k_dense_replace=0, pad_token_id=0,
            bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)


def _moe_classes() -> list[str]:
    names = []
    for name in sorted(dir(transformers)):
        if not name.endswith("ForCausalLM") or name.startswith("Auto"):
            continue
        config_class = getattr(transformers, name.removesuffix("ForCausalLM") + "Config", None)
        try:
            config = config_class()
        except Exception:  # noqa: BLE001 - no matching config class, or no default config
            continue
        if any(hasattr(config, field) for field in MOE_FIELDS):
            names.append(name)
    return names


def _tiny(name: str):
    config_class = getattr(transformers, name.removesuffix("ForCausalLM") + "Config")
    defaults = config_class()
    overrides = {key: value for key, value in TINY.items() if hasattr(defaults, key)}
    torch.manual_seed(0)
    return getattr(transformers, name)(config_class(**overrides)).train()


def _batch(rows=2, length=10):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, -3:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _reference(name):
    """(model, its own output and gradients), or pytest.skip with the reason."""
    try:
        start = time.perf_counter()
        model = _tiny(name)
        inputs = _batch()
        reference = model(**inputs)
        grads = _grads(model, reference.loss)
    except Exception as error:  # noqa: BLE001 - a class that a tiny config cannot build or run
        pytest.skip(f"{name} does not build/run from a tiny config: "
                    f"{type(error).__name__}: {str(error)[:150]}")
    if time.perf_counter() - start > 10:
        pytest.skip(f"{name} takes over 10 s on CPU with a tiny config")
    return model, inputs, reference, grads


@pytest.mark.parametrize("name", _moe_classes())
def test_moe_aux_loss_is_added_or_the_model_is_refused(name):
    model, inputs, reference, ref_grads = _reference(name)
    aux = getattr(reference, "aux_loss", None)
    try:
        patch_causal_lm(model)
        ours = model(**inputs)
    except ValueError as error:
        assert name in str(error)  # refused for its head or logits, or its aux loss:
        if "aux_loss" not in str(error):
            return
        assert "output_router_logits=False" in str(error)
        unpatch_causal_lm(model)
        model.config.output_router_logits = False
        if model(**inputs).get("aux_loss") is not None:
            return
        own = model(**inputs).loss
        torch.testing.assert_close(patch_causal_lm(model)(**inputs).loss, own)
        return
    torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-5, atol=1e-5)
    if aux is not None:
        assert torch.allclose(ours.aux_loss, aux)
    ours_grads = _grads(model, ours.loss)
    assert ours_grads.keys() == ref_grads.keys()
    for key, grad in ref_grads.items():
        torch.testing.assert_close(ours_grads[key], grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_mixtral_adds_the_weighted_aux_loss_and_nothing_without_router_logits():
    model, inputs, reference, ref_grads = _reference("MixtralForCausalLM")
    assert reference.aux_loss is not None
    patch_causal_lm(model)
    ours = model(**inputs)
    torch.testing.assert_close(ours.loss, reference.loss)
    without = model(**inputs, output_router_logits=False)
    assert without.aux_loss is None
    torch.testing.assert_close(without.loss, reference.loss - 0.5 * reference.aux_loss)
    as_tuple = model(**inputs, return_dict=False)
    torch.testing.assert_close(as_tuple[0], reference.loss)
    model.router_aux_loss_coef = 0.25  # what Mixtral's forward reads
    unpatch_causal_lm(model)
    own = model(**inputs).loss
    torch.testing.assert_close(patch_causal_lm(model)(**inputs).loss, own)


def test_opt_reads_the_decoder_output_and_matches_its_own_loss():
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=V, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0,
        attention_dropout=0.0, pad_token_id=0, bos_token_id=0, eos_token_id=0)).train()
    inputs = _batch()
    reference = model(**inputs)
    ref_grads = _grads(model, reference.loss)
    patch_causal_lm(model, chunk_size=7)
    ours = model(**inputs)
    assert ours.logits.shape[1] == 0
    torch.testing.assert_close(ours.loss, reference.loss)
    ours_grads = _grads(model, ours.loss)
    for key, grad in ref_grads.items():
        torch.testing.assert_close(ours_grads[key], grad, rtol=1e-4, atol=1e-6)
