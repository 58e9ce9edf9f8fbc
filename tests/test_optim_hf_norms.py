"""param_groups(relative_lr=True) on tiny Hugging Face models: every norm scale sits in a norm
group whose ``shrink_center`` is its neutral value, 1 for ``x * w`` norms and 0 for zero-centred
``x * (1 + w)`` norms (Gemma, Qwen3-Next, Nemotron), and ``nonfinite="shrink"`` pulls it there.

The test's references are its own: a table of each architecture's norm classes and their centres
(read off the transformers sources), cross-checked against the attribute names transformers gives
its norm layers (``input_layernorm``, ``q_norm``, ``ln_f``, ``LayerNorm``, ...). No hub access.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from logitkit.optim import make_optimizer, param_groups

transformers = pytest.importorskip("transformers")

V = 64
TINY = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=0)
GEMMA3 = dict(TINY, sliding_window=16)
QWEN3_NEXT = dict(TINY, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
                  linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=16,
                  linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2,
                  moe_intermediate_size=32, shared_expert_intermediate_size=32)
T5 = dict(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
          num_heads=2, pad_token_id=0, eos_token_id=0, decoder_start_token_id=0)
GPT2 = dict(n_layer=1, n_embd=32, n_head=2, vocab_size=V, n_positions=64, bos_token_id=0,
            eos_token_id=0)
BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
MOBILEBERT = dict(BERT, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                  intermediate_size=32)  # NoNorm: x * w + b, no normalisation

# architecture -> (model class, config class, config, {norm class name: neutral value})
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", TINY, {"LlamaRMSNorm": 1.0}),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", TINY, {"Qwen2RMSNorm": 1.0}),
    "mistral": ("MistralForCausalLM", "MistralConfig", TINY, {"MistralRMSNorm": 1.0}),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", TINY, {"Qwen3RMSNorm": 1.0}),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", TINY, {"Olmo2RMSNorm": 1.0}),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", TINY, {"Phi3RMSNorm": 1.0}),
    "cohere_qk_norm": ("CohereForCausalLM", "CohereConfig", dict(TINY, use_qk_norm=True),
                       {"CohereLayerNorm": 1.0}),  # q/k norms: (heads, head_dim) scales
    "t5": ("T5ForConditionalGeneration", "T5Config", T5, {"T5LayerNorm": 1.0}),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", GPT2, {"LayerNorm": 1.0}),
    "bert": ("BertForMaskedLM", "BertConfig", BERT, {"LayerNorm": 1.0}),
    "mobilebert": ("MobileBertForMaskedLM", "MobileBertConfig", MOBILEBERT,
                   {"NoNorm": 1.0, "LayerNorm": 1.0}),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", TINY, {"GemmaRMSNorm": 0.0}),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", GEMMA3, {"Gemma2RMSNorm": 0.0}),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", GEMMA3, {"Gemma3RMSNorm": 0.0}),
    "nemotron": ("NemotronForCausalLM", "NemotronConfig", TINY, {"NemotronLayerNorm1P": 0.0}),
    "qwen3_next": ("Qwen3NextForCausalLM", "Qwen3NextConfig", QWEN3_NEXT,
                   {"Qwen3NextRMSNorm": 0.0, "Qwen3NextRMSNormGated": 1.0}),
    "olmo": ("OlmoForCausalLM", "OlmoConfig", TINY, {"OlmoLayerNorm": None}),  # no parameters
}
# the attribute names transformers gives norm layers: *norm, *layernorm, layer_norm, ln_*
NORM_ATTRIBUTE = re.compile(r"(norm|^ln_\w+)$", re.IGNORECASE)


def build(key: str) -> nn.Module:
    model_class, config_class, config, _ = ARCHITECTURES[key]
    missing = [n for n in (model_class, config_class) if not hasattr(transformers, n)]
    if missing:
        pytest.skip(f"transformers {transformers.__version__} has no {missing}")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, model_class)(getattr(transformers, config_class)(**config))


def reference_norms(key: str, model: nn.Module) -> dict[str, float]:
    """Full name of each norm scale -> its neutral value, from the architecture's table; checked
    against the attribute names of the norm layers."""
    table = ARCHITECTURES[key][3]
    by_class = {f"{name}.weight": table[type(module).__name__]
                for name, module in model.named_modules()
                if type(module).__name__ in table
                and isinstance(getattr(module, "weight", None), nn.Parameter)}
    by_attribute = {f"{name}.weight" for name, module in model.named_modules()
                    if name and NORM_ATTRIBUTE.search(name.rsplit(".", 1)[-1])
                    and isinstance(getattr(module, "weight", None), nn.Parameter)}
    assert set(by_class) == by_attribute, "the table and the attribute names disagree"
    return by_class


def located(model: nn.Module, groups: list[dict]) -> dict[str, dict]:
    """Full parameter name -> its group; every trainable parameter exactly once."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    where = {}
    for group in groups:
        for p in group["params"]:
            assert by_id[id(p)] not in where, f"{by_id[id(p)]} is in two groups"
            where[by_id[id(p)]] = group
    assert set(where) == set(by_id.values())
    return where


@pytest.mark.parametrize("key", sorted(ARCHITECTURES))
def test_every_norm_scale_is_in_a_norm_group_with_its_neutral_centre(key):
    model = build(key)
    norms = reference_norms(key, model)
    groups = param_groups(model, relative_lr=True)
    where = located(model, groups)
    for name, centre in norms.items():
        assert where[name]["name"].startswith("norm"), f"{name} is in {where[name]['name']!r}"
        assert where[name]["shrink_center"] == centre, name
        assert where[name]["weight_decay"] == 0.0 and where[name]["lr_scale"] == 0.5
        assert where[name]["relative_lr"] is False
    in_norm_groups = {n for n, g in where.items() if g["name"].startswith("norm")}
    assert in_norm_groups == set(norms)  # no matrix, bias or other vector in a norm group
    params = dict(model.named_parameters())
    for name, group in where.items():
        if name not in norms and params[name].dim() >= 2 and group["name"] != "embedding":
            assert group["name"] == "decay", name
    centres = {g["name"]: g["shrink_center"] for g in groups if g["name"].startswith("norm")}
    kinds = set(norms.values())
    if kinds == {0.0, 1.0}:  # both kinds: "norm" has centre 1, "norm_zero_centred" centre 0
        assert centres == {"norm": 1.0, "norm_zero_centred": 0.0}
    else:  # one kind: "norm", with that kind's centre
        assert centres == ({"norm": kinds.pop()} if kinds else {})


@pytest.mark.parametrize("key", ["llama", "gemma", "cohere_qk_norm", "qwen3_next"])
def test_without_relative_lr_norm_scales_get_no_decay(key):
    model = build(key)
    norms = reference_norms(key, model)
    where = located(model, param_groups(model))
    assert {where[name]["name"] for name in norms} == {"no_decay"}


def test_llama_has_a_norm_group_and_gemma_shrinks_to_zero():
    """The issue: LlamaRMSNorm weights fell into "no_decay" (shrink centre 0)."""
    for key, centre in (("llama", 1.0), ("gemma", 0.0)):
        model = build(key)
        groups = {g["name"]: g for g in param_groups(model, relative_lr=True)}
        assert groups["norm"]["shrink_center"] == centre
        assert len(groups["norm"]["params"]) == 2 * 2 + 1  # two per layer and the final one


def naive_shrink(weight: torch.Tensor, centre: float, ratio: float = 0.99) -> torch.Tensor:
    return centre + ratio * (weight.double() - centre)


@pytest.mark.parametrize("key", ["llama", "gemma", "qwen3_next", "t5"])
def test_nan_gradient_on_norm_scales_shrinks_them_towards_their_neutral_value(key):
    model = build(key)
    norms = reference_norms(key, model)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the centre, so that a shrink shows
        for name in norms:
            params[name].copy_(torch.randn(params[name].shape, generator=generator) + 0.5)
    optimizer = make_optimizer(model, lr=0.01, relative_lr=True, nonfinite="shrink")
    before = {name: params[name].detach().clone() for name in norms}
    for name, p in params.items():
        p.grad = torch.zeros_like(p)
        if name in norms:
            p.grad.view(-1)[0] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        optimizer.step()
    for name, centre in norms.items():
        torch.testing.assert_close(params[name].double(), naive_shrink(before[name], centre),
                                   rtol=1e-6, atol=1e-6, msg=name)


def test_meta_and_half_precision_models_get_the_same_centres():
    for key, centre in (("gemma", 0.0), ("llama", 1.0)):
        model_class, config_class, config, _ = ARCHITECTURES[key]
        with torch.device("meta"):
            meta = getattr(transformers, model_class)(getattr(transformers, config_class)(**config))
        for model in (meta, build(key).to(torch.bfloat16), build(key).half()):
            groups = {g["name"]: g for g in param_groups(model, relative_lr=True)}
            assert groups["norm"]["shrink_center"] == centre
            assert len(groups["norm"]["params"]) == 5 and "norm_zero_centred" not in groups


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def test_the_probe_leaves_modules_hooks_and_the_global_rng_alone():
    model = build("gemma").to(torch.bfloat16)
    module = model.model.norm
    with torch.no_grad():
        module.weight.copy_(torch.randn(module.weight.shape))
        module.weight[3] = float("nan")
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    before = bits(module.weight)
    version = module.weight._version
    rng = torch.get_rng_state()
    groups = {g["name"]: g for g in param_groups(model, relative_lr=True)}
    assert groups["norm"]["shrink_center"] == 0.0
    assert torch.equal(bits(module.weight), before) and module.weight._version == version
    assert torch.equal(torch.get_rng_state(), rng) and calls == []


class ZeroCentredLayerNorm2d(nn.LayerNorm):
    """A channels-first LayerNorm (ConvNeXt style) scaled by 1 + weight."""

    def forward(self, x):
        x = nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape,
                                     1 + self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class FusedAddRMSNorm(nn.Module):
    """forward(x, residual): the probe cannot run it, so the name's default centre 1 holds."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n))

    def forward(self, x, residual):
        x = x + residual
        return nn.functional.rms_norm(x, x.shape[-1:], 1 + self.weight), x


class UnitOffsetNorm(nn.Module):
    """A ``gamma`` scale with a unit offset, as in Moonshine streaming."""

    def __init__(self, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return nn.functional.layer_norm(x, x.shape[-1:]) * (self.gamma + 1)


class NormedEmbedding(nn.Module):
    """A matrix in a module named like a norm: not a norm layer (its forward takes ids)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, n))

    def forward(self, ids):
        return nn.functional.normalize(self.weight[ids], dim=-1)


@pytest.mark.parametrize(("make", "scale", "group", "centre"), [
    (lambda: ZeroCentredLayerNorm2d(6), "weight", "norm", 0.0),
    (lambda: nn.GroupNorm(2, 6), "weight", "norm", 1.0),
    (lambda: nn.BatchNorm2d(6), "weight", "norm", 1.0),
    (lambda: FusedAddRMSNorm(6), "weight", "norm", 1.0),
    (lambda: UnitOffsetNorm(6), "gamma", "norm", 0.0),
    (lambda: NormedEmbedding(6), "weight", "decay", None),
    (lambda: nn.PReLU(6), "weight", "no_decay", None),
])
def test_norm_layers_outside_transformers(make, scale, group, centre):
    module = make()
    buffers = {name: bits(b) for name, b in module.named_buffers() if b.is_floating_point()}
    groups = param_groups(nn.Sequential(module), relative_lr=True, weight_decay=0.1)
    (found,) = [g for g in groups if any(p is getattr(module, scale) for p in g["params"])]
    assert found["name"] == group and found.get("shrink_center") == centre
    assert all(torch.equal(bits(b), buffers[n]) for n, b in module.named_buffers()
               if n in buffers)
