"""load_head on checkpoints written here in every supported format, and its errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from logitkit.audit import load_head

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(12, 4)).astype(np.float32)
BIAS = RNG.normal(size=12).astype(np.float32)


def test_safetensors_file_with_lm_head_and_bias(tmp_path):
    path = tmp_path / "head.safetensors"
    save_file({"lm_head.weight": WEIGHT, "lm_head.bias": BIAS,
               "other.weight": np.zeros((3, 3), np.float32)}, str(path))
    weight, bias, tokenizer = load_head(path)
    np.testing.assert_array_equal(weight, WEIGHT)
    np.testing.assert_array_equal(bias, BIAS)
    assert tokenizer is None
    weight, bias, _ = load_head(path, key="other.weight")
    assert weight.shape == (3, 3) and bias is None


def test_hf_folder_with_tied_embeddings_and_prediction_bias(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"embeddings.word_embeddings.weight": WEIGHT, "cls.predictions.bias": BIAS,
               "embeddings.LayerNorm.bias": np.zeros(4, np.float32)},
              str(tmp_path / "model.safetensors"))
    weight, bias, _ = load_head(tmp_path)
    np.testing.assert_array_equal(weight, WEIGHT)
    np.testing.assert_array_equal(bias, BIAS)


@pytest.mark.parametrize("name", ["model.embed_tokens.weight", "transformer.wte.weight"])
def test_hf_folder_with_pytorch_bin(tmp_path, name):
    (tmp_path / "config.json").write_text("{}")
    torch.save({name: torch.from_numpy(WEIGHT)}, tmp_path / "pytorch_model.bin")
    weight, bias, _ = load_head(tmp_path)
    np.testing.assert_array_equal(weight, WEIGHT)
    assert bias is None


def test_pt_state_dict_in_half_precision(tmp_path):
    path = tmp_path / "head.pt"
    torch.save({"output.weight": torch.from_numpy(WEIGHT).half()}, path)
    weight, _, _ = load_head(path)
    np.testing.assert_allclose(weight, WEIGHT, atol=1e-2)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "w.npy", WEIGHT)
    weight, bias, _ = load_head(tmp_path / "w.npy")
    np.testing.assert_array_equal(weight, WEIGHT)
    assert bias is None and isinstance(weight, np.memmap)
    np.savez(tmp_path / "h.npz", weight=WEIGHT, bias=BIAS)
    weight, bias, _ = load_head(tmp_path / "h.npz")
    np.testing.assert_array_equal(bias, BIAS)


def test_tokenizer_json_is_loaded(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"tok{i}": i for i in range(12)}
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="tok0")
    tokenizers.Tokenizer(model).save(str(tmp_path / "tokenizer.json"))
    np.save(tmp_path / "w.npy", WEIGHT)
    _, _, tokenizer = load_head(tmp_path / "w.npy")
    assert tokenizer.id_to_token(5) == "tok5"


def test_missing_key_lists_available_keys(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"encoder.weight": WEIGHT[:, :2].copy()}, str(path))
    with pytest.raises(KeyError, match="encoder.weight"):
        load_head(path)
    with pytest.raises(KeyError, match="available keys"):
        load_head(path, key="lm_head.weight")


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"lm_head.weight": np.ones(5, np.float32)}, "2-D"),
        ({"lm_head.weight": np.full((3, 2), np.nan, np.float32)}, "NaN"),
        ({"lm_head.weight": WEIGHT, "lm_head.bias": np.ones(3, np.float32)}, "bias"),
        ({"lm_head.weight": np.ones((3, 2), np.int32)}, "dtype"),
    ],
)
def test_bad_tensors_are_rejected(tmp_path, tensors, match):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=match):
        load_head(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npy", ".npz"])
def test_corrupt_files_raise_value_error(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_head(path)


def test_missing_paths_and_unsupported_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_head(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_head(tmp_path)
    (tmp_path / "w.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported"):
        load_head(tmp_path / "w.txt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_head(tmp_path)
