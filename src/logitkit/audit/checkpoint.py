"""Read the output layer (weight, bias, tokenizer) of a checkpoint without loading the model.

``load_head(path, key=None) -> (weight, bias_or_None, tokenizer_or_None)`` accepts

* a ``.safetensors`` file (memory-mapped with ``safetensors.safe_open``; only the head is read),
* a Hugging Face model folder (``config.json`` plus ``*.safetensors`` or ``pytorch_model.bin``):
  the LM head ``lm_head.weight``/``cls.predictions.decoder.weight`` or, for tied heads, the word
  embeddings, with a bias such as ``lm_head.bias`` or ``cls.predictions.bias``; ``tokenizer.json``
  is loaded with ``tokenizers`` when present (also for a file inside such a folder),
* a ``.pt``/``.pth``/``.bin`` state dict (``torch.load(mmap=True, weights_only=True)``),
* a ``.npy`` array or ``.npz`` archive (``np.load(mmap_mode="r")``).

``key`` names the weight tensor explicitly; otherwise the first of ``WEIGHT_KEYS`` present is used.
The bias is ``<name>.bias`` beside ``<name>.weight`` when present; for a weight found by the
search, else the first of ``BIAS_KEYS`` present (e.g. ``cls.predictions.bias`` for a tied head).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_KEYS = (
    "lm_head.weight",
    "cls.predictions.decoder.weight",
    "output.weight",
    "embed_out.weight",
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "embeddings.word_embeddings.weight",
    "bert.embeddings.word_embeddings.weight",
    "model.decoder.embed_tokens.weight",
    "gpt_neox.embed_in.weight",
    "weight",
)
BIAS_KEYS = ("lm_head.bias", "cls.predictions.bias", "cls.predictions.decoder.bias",
             "final_logits_bias", "bias")


def _pick_weight_key(keys: list[str], key: str | None, source: Path) -> str:
    if key is not None:
        if key not in keys:
            raise KeyError(f"key {key!r} not found in {source}; available keys: {sorted(keys)}")
        return key
    for candidate in WEIGHT_KEYS:
        if candidate in keys:
            return candidate
    raise KeyError(f"no output-layer weight found in {source} (looked for {list(WEIGHT_KEYS)}); "
                   f"pass key=...; available keys: {sorted(keys)}")


def _pick_bias_key(keys: list[str], weight_key: str, searched: bool) -> str | None:
    """The bias beside the weight (``x.weight`` -> ``x.bias``); for a weight found by the name
    search (not given as ``key``), else a known LM-head bias such as ``cls.predictions.bias``."""
    if weight_key.endswith("weight"):
        own = weight_key[: -len("weight")] + "bias"
        if own in keys:
            return own
    if not searched:
        return None
    return next((name for name in BIAS_KEYS[:-1] if name in keys), None)


def _check(weight: Any, bias: Any, weight_key: str, source: Path) -> tuple[np.ndarray, Any]:
    weight = np.asanyarray(weight)
    if weight.ndim != 2 or weight.shape[0] < 2:
        raise ValueError(f"{weight_key!r} in {source} has shape {weight.shape}; "
                         "expected a 2-D (vocab, hidden) matrix")
    if not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"{weight_key!r} in {source} has dtype {weight.dtype}; expected floats")
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"{weight_key!r} in {source} contains NaN or infinite values")
    if bias is not None:
        bias = np.asanyarray(bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias in {source} has shape {bias.shape}; expected "
                             f"({weight.shape[0]},) to match {weight_key!r}")
        if not np.all(np.isfinite(bias)):
            raise ValueError(f"bias in {source} contains NaN or infinite values")
    return weight, bias


def _from_mapping(tensors: dict[str, Any], key: str | None, source: Path):
    keys = list(tensors)
    weight_key = _pick_weight_key(keys, key, source)
    bias_key = _pick_bias_key(keys, weight_key, searched=key is None)
    bias = None if bias_key is None else tensors[bias_key]
    return _check(tensors[weight_key], bias, weight_key, source)


class _LazySafetensors(dict):
    """``key -> array`` for a safetensors file, reading a tensor only when it is asked for."""

    def __init__(self, handle: Any) -> None:
        names = handle.keys()  # safe_open handles are not iterable
        super().__init__(dict.fromkeys(names))
        self._handle = handle

    def __getitem__(self, name: str) -> np.ndarray:
        return self._handle.get_tensor(name)


def _read_safetensors(path: Path, key: str | None):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            return _from_mapping(_LazySafetensors(handle), key, path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {path} as safetensors: {error}") from error


def _read_torch(path: Path, key: str | None):
    import pickle

    import torch

    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"cannot read {path} as a torch checkpoint: {error}") from error
    if isinstance(state, torch.Tensor):
        state = {"weight": state}
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}; expected a state dict")
    state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
    arrays = {name: t.detach().float().numpy() if t.dtype in (torch.bfloat16, torch.float16)
              else t.detach().numpy() for name, t in state.items() if isinstance(t, torch.Tensor)}
    return _from_mapping(arrays, key, path)


def _read_numpy(path: Path, key: str | None):
    try:
        loaded = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"cannot read {path} as a numpy file: {error}") from error
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise KeyError(f"{path} is a single array; key={key!r} does not apply")
        return _check(loaded, None, "array", path)
    with loaded:
        return _from_mapping({name: loaded[name] for name in loaded.files}, key, path)


def _read_folder(path: Path, key: str | None):
    config = path / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{path} is a folder without config.json; expected a Hugging Face "
                                "model folder (config.json + *.safetensors or pytorch_model.bin)")
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config} is not valid JSON: {error}") from error
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        errors = []
        for shard in shards:  # sharded checkpoints: the head lives in one shard
            try:
                return _read_safetensors(shard, key)
            except KeyError as error:
                errors.append(str(error))
        raise KeyError("; ".join(errors))
    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        if (path / name).exists():
            return _read_torch(path / name, key)
    raise FileNotFoundError(f"{path} has config.json but no *.safetensors or pytorch_model.bin")


def _tokenizer(path: Path) -> Any:
    folder = path if path.is_dir() else path.parent
    if not (folder / "tokenizer.json").exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def load_head(path: str | Path, *, key: str | None = None) -> tuple[np.ndarray, Any, Any]:
    """``(weight (V, d), bias (V,) or None, tokenizer or None)`` of the checkpoint at ``path``.

    Arrays are memory-mapped where the format allows; see the module docstring for the formats
    and the key search. Raises FileNotFoundError, KeyError (listing the available keys) or
    ValueError (corrupt file, wrong shape, NaN/inf values).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        weight, bias = _read_folder(path, key)
    else:
        suffix = path.suffix.lower()
        readers = {".safetensors": _read_safetensors, ".pt": _read_torch, ".pth": _read_torch,
                   ".bin": _read_torch, ".npy": _read_numpy, ".npz": _read_numpy}
        if suffix not in readers:
            raise ValueError(f"unsupported checkpoint type {suffix!r} for {path}; expected one of "
                             f"{sorted(readers)} or a Hugging Face model folder")
        weight, bias = readers[suffix](path, key)
    return weight, bias, _tokenizer(path)
