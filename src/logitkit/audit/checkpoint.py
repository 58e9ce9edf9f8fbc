"""Read the output layer (weight, bias, tokenizer) of a checkpoint without loading the model.

``read_head(path, key=None) -> Head`` (and ``load_head``, the same as a ``(weight, bias,
tokenizer)`` tuple) accepts

* a ``.safetensors`` file (only the head is read; bf16/fp16 tensors are converted to float32),
* a Hugging Face model folder (``config.json`` plus ``*.safetensors``, sharded or not, or
  ``pytorch_model.bin``). A sharded checkpoint is read through its index
  (``model.safetensors.index.json``: ``weight_map`` names the shard of every tensor). The OUTPUT
  head (``lm_head.weight``, ``cls.predictions.decoder.weight``, ...) is preferred over the input
  embeddings wherever it lives; the input embeddings stand in only for a tied head
  (``tie_word_embeddings`` in ``config.json``, true unless the config says false). A bias such as
  ``lm_head.bias`` or ``cls.predictions.bias`` is read too, and ``tokenizer.json`` is loaded with
  ``tokenizers`` when present,
* a ``.gguf`` file (llama.cpp; read with the ``gguf`` package, ``pip install "logitkit[gguf]"``):
  ``output.weight`` or, for a tied head, ``token_embd.weight``, dequantised to float32 (e.g.
  ``Q8_0``); its token strings serve as the tokenizer,
* a ``.pt``/``.pth``/``.bin`` state dict or tensor (``torch.load(mmap=True, weights_only=True)``),
* a ``.npy`` array or ``.npz`` archive (``np.load(mmap_mode="r")``), including Marian/Bergamot
  ``.npz`` models as they are written: the untied ``decoder_ff_logit_out_W`` (stored (d, V),
  read transposed), else the tied ``decoder_Wemb`` or ``Wemb`` (V, d), with the bias
  ``decoder_ff_logit_out_b`` (stored (1, V), read as (V,)).

A weight with fewer rows (classes) than columns (dimensions) is read as it is, with a
``UserWarning``: it is most likely a head stored transposed, (d, V).

``key`` names the weight tensor explicitly. ``Head.source`` says which tensor was read, from which
file, in which dtype, and whether it stands in for a tied head. The head is the ``W, b`` of the
logits ``W z + b`` that :func:`~logitkit.audit.check_argmaxable` audits.

Reference:
    Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but
    Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
    Probability: A Structural Weakness of Neural Language Models", ACL 2020.

Example (a real model folder; not run)::

    from logitkit.audit import read_head
    head = read_head("path/to/model")  # a Hugging Face folder, sharded or not
    print(head.source)  # e.g. "lm_head.weight (bfloat16 -> float32) in model-00002-of-00002..."
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT_KEYS = (
    "lm_head.weight",
    "cls.predictions.decoder.weight",
    "output.weight",
    "embed_out.weight",
    "model.lm_head.weight",
)
INPUT_EMBEDDING_KEYS = (
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "embeddings.word_embeddings.weight",
    "bert.embeddings.word_embeddings.weight",
    "model.decoder.embed_tokens.weight",
    "gpt_neox.embed_in.weight",
    "transformer.word_embeddings.weight",
    "embed_tokens.weight",
    "wte.weight",
)
BIAS_KEYS = ("lm_head.bias", "cls.predictions.bias", "cls.predictions.decoder.bias",
             "final_logits_bias", "output.bias", "embed_out.bias")
GGUF_OUTPUT, GGUF_EMBEDDING = "output.weight", "token_embd.weight"
# Marian/Bergamot .npz: logits = h @ W + b with an untied W of shape (d, V), else the tied
# embeddings (V, d) (decoder_Wemb, or Wemb shared by encoder and decoder); b has shape (1, V).
MARIAN_OUTPUT, MARIAN_BIAS = "decoder_ff_logit_out_W", "decoder_ff_logit_out_b"
MARIAN_EMBEDDINGS = ("decoder_Wemb", "Wemb")


class HeadNotFoundError(KeyError):
    """No output-layer tensor under the expected names (a KeyError whose message prints plainly).

    Raised by :func:`read_head` (and :func:`load_head`) when ``key`` is not in the checkpoint, when
    no known output-head name is present, or when only the input embeddings of an untied model
    (``tie_word_embeddings: false``) are. ``str(error)`` is the message itself, without the quotes
    that ``KeyError`` adds, and lists the available keys.

    Args:
        message: the error text (positional, as for any exception); no default.

    Returns:
        The exception (raise it; ``except KeyError`` catches it too).

    Raises:
        Nothing itself.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> str(HeadNotFoundError("key 'x' not found"))
        "key 'x' not found"
        >>> isinstance(HeadNotFoundError("missing"), KeyError)
        True
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class Head:
    """An output layer read from a checkpoint: the ``W`` (``weight``) and ``b`` (``bias``) of the
    logits ``W z + b``, and the tokenizer that names its classes.

    ``weight`` is float32 or float64 (bf16/fp16 and GGUF blocks converted to float32; a ``.npy``
    stays as stored), finite, with at least two rows; pass ``head.weight, head.bias`` to
    :func:`~logitkit.audit.check_argmaxable`.

    Args:
        weight: (V, d) array, V >= 2, finite floats.
        bias: (V,) array, or None when the checkpoint has no bias for this head.
        tokenizer: a ``tokenizers.Tokenizer`` (from ``tokenizer.json`` beside the checkpoint), a
            :class:`GgufVocab`, or None.
        weight_key: the name of the weight tensor read ("array" for a plain ``.npy``).
        bias_key: the name of the bias tensor read, or None.
        file: the file name the weight was read from (the shard, for a sharded checkpoint).
        dtype: the stored dtype of the weight ("bfloat16", "float32", "Q8_0", ...).
        tied: True when the input embeddings stand in for the output layer (a tied head).

    Returns:
        The record (built by :func:`read_head`).

    Raises:
        Nothing on construction (the checks are :func:`read_head`'s).

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import numpy as np
        >>> head = Head(weight=np.eye(3), bias=None, tokenizer=None, weight_key="lm_head.weight",
        ...             bias_key=None, file="model.safetensors", dtype="bfloat16", tied=False)
        >>> head.source
        'lm_head.weight (bfloat16 -> float64) in model.safetensors'
    """

    weight: np.ndarray
    bias: np.ndarray | None
    tokenizer: Any
    weight_key: str
    bias_key: str | None
    file: str
    dtype: str
    tied: bool

    @property
    def source(self) -> str:
        """One line for a report: the tensor read, its stored dtype (``-> float32`` where
        converted), the file, a note for a tied head, and the bias tensor if any.

        Returns:
            e.g. ``"lm_head.weight (bfloat16 -> float32) in model.safetensors, bias lm_head.bias"``.

        Example:
            >>> import numpy as np
            >>> Head(weight=np.eye(2, dtype=np.float32), bias=np.zeros(2, np.float32),
            ...      tokenizer=None, weight_key="lm_head.weight", bias_key="lm_head.bias",
            ...      file="model.safetensors", dtype="bfloat16", tied=False).source
            'lm_head.weight (bfloat16 -> float32) in model.safetensors, bias lm_head.bias'
            >>> Head(weight=np.eye(2, dtype=np.float32), bias=None, tokenizer=None,
            ...      weight_key="wte.weight", bias_key=None, file="model.npz", dtype="float32",
            ...      tied=True).source  # doctest: +NORMALIZE_WHITESPACE
            'wte.weight (float32) in model.npz [tied head: the input embeddings serve as the
             output layer]'
        """
        converted = "" if self.dtype == str(self.weight.dtype) else f" -> {self.weight.dtype}"
        text = f"{self.weight_key} ({self.dtype}{converted}) in {self.file}"
        if self.tied:
            text += " [tied head: the input embeddings serve as the output layer]"
        if self.bias_key is not None:
            text += f", bias {self.bias_key}"
        return text


class _Reader:
    """``names`` of the tensors of a checkpoint and ``get(name) -> (array, dtype name, file)``."""

    names: list[str]

    def get(self, name: str) -> tuple[np.ndarray, str, str]:
        raise NotImplementedError


def _to_numpy(tensor: Any) -> tuple[np.ndarray, str]:
    """A torch tensor as a float32/float64 array (bf16/fp16 upcast), and its original dtype."""
    import torch

    dtype = str(tensor.dtype).replace("torch.", "")
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.detach().cpu().numpy(), dtype


class _SafetensorsReader(_Reader):
    """One or several safetensors files; ``weight_map`` (tensor -> file) from an index if any."""

    def __init__(self, files: list[Path], weight_map: dict[str, str] | None = None) -> None:
        from safetensors import SafetensorError, safe_open

        self._open, self._error = safe_open, SafetensorError
        self._where: dict[str, Path] = {}
        if weight_map is not None:
            folder = files[0].parent if files else Path(".")
            self._where = {name: folder / shard for name, shard in weight_map.items()}
        else:
            for file in files:
                with self._handle(file) as handle:
                    for name in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                        self._where.setdefault(name, file)
        self.names = list(self._where)

    def _handle(self, file: Path):
        try:
            return self._open(str(file), framework="pt")
        except (self._error, OSError) as error:
            raise ValueError(f"cannot read {file} as safetensors: {error}") from error

    def get(self, name: str) -> tuple[np.ndarray, str, str]:
        file = self._where[name]
        if not file.exists():
            raise FileNotFoundError(f"the index names {file.name} for {name}, but it is missing")
        with self._handle(file) as handle:
            array, dtype = _to_numpy(handle.get_tensor(name))
        return array, dtype, file.name


class _MappingReader(_Reader):
    def __init__(self, tensors: dict[str, Any], file: str) -> None:
        self._tensors, self._file = tensors, file
        self.names = list(tensors)

    def get(self, name: str) -> tuple[np.ndarray, str, str]:
        value = self._tensors[name]
        if isinstance(value, np.ndarray):
            return value, str(value.dtype), self._file
        array, dtype = _to_numpy(value)
        return array, dtype, self._file


def _pick(reader: _Reader, key: str | None, tie: bool, source: Path) -> tuple[str, bool]:
    """The weight to audit: ``key``; else an output head; else (tied heads) the embeddings."""
    names = set(reader.names)
    if key is not None:
        if key not in names:
            raise HeadNotFoundError(f"key {key!r} not found in {source}; available keys: "
                                    f"{sorted(names)}")
        return key, key in INPUT_EMBEDDING_KEYS
    for name in OUTPUT_KEYS:
        if name in names:
            return name, False
    embeddings = [name for name in INPUT_EMBEDDING_KEYS if name in names]
    if embeddings and tie:
        return embeddings[0], True
    if embeddings:
        raise HeadNotFoundError(
            f"{source}: config.json sets tie_word_embeddings to false but no output head "
            f"({', '.join(OUTPUT_KEYS)}) is in the checkpoint; the input embeddings "
            f"{embeddings[0]} are not the output layer. Pass key=... to audit a tensor anyway")
    if "weight" in names:
        return "weight", False
    raise HeadNotFoundError(f"no output-layer weight found in {source} (looked for "
                            f"{list(OUTPUT_KEYS + INPUT_EMBEDDING_KEYS)}); pass key=...; "
                            f"available keys: {sorted(names)}")


def _pick_bias(names: list[str], weight_key: str, searched: bool) -> str | None:
    """The bias beside the weight (``x.weight`` -> ``x.bias``); for a weight found by the search
    (not given as ``key``), else a known LM-head bias such as ``cls.predictions.bias``."""
    if weight_key.endswith("weight"):
        own = weight_key[: -len("weight")] + "bias"
        if own in names:
            return own
    if not searched:
        return None
    return next((name for name in BIAS_KEYS if name in names), None)


def _checked(weight: Any, bias: Any, weight_key: str, source: Path) -> tuple[np.ndarray, Any]:
    weight = np.asanyarray(weight)
    if weight.ndim != 2 or weight.shape[0] < 2:
        raise ValueError(f"{weight_key} in {source} has shape {weight.shape}; "
                         "expected a 2-D (vocab, hidden) matrix")
    if not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"{weight_key} in {source} has dtype {weight.dtype}; expected floats")
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"{weight_key} in {source} contains NaN or infinite values")
    if weight.shape[0] < weight.shape[1]:
        warnings.warn(
            f"{weight_key} in {source} has shape {weight.shape}: fewer classes ({weight.shape[0]}) "
            f"than dimensions ({weight.shape[1]}), so it is audited as {weight.shape[0]} classes. "
            f"If it is a head stored transposed, (d, V), audit its transpose instead: "
            f"check_argmaxable(weight.T, ...), or save it as (V, d) (np.save(path, array.T))",
            UserWarning, stacklevel=3)
    if bias is not None:
        bias = np.asanyarray(bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias in {source} has shape {bias.shape}; expected "
                             f"({weight.shape[0]},) to match {weight_key}")
        if not np.all(np.isfinite(bias)):
            raise ValueError(f"bias in {source} contains NaN or infinite values")
    return weight, bias


def _head(reader: _Reader, key: str | None, tie: bool, source: Path, tokenizer: Any) -> Head:
    weight_key, tied = _pick(reader, key, tie, source)
    bias_key = _pick_bias(reader.names, weight_key, searched=key is None)
    weight, dtype, file = reader.get(weight_key)
    bias = None if bias_key is None else reader.get(bias_key)[0]
    weight, bias = _checked(weight, bias, weight_key, source)
    return Head(weight=weight, bias=bias, tokenizer=tokenizer, weight_key=weight_key,
                bias_key=bias_key, file=file, dtype=dtype, tied=tied)


def _torch_reader(path: Path) -> _Reader:
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
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = {name: t for name, t in state.items() if isinstance(t, torch.Tensor)}
    return _MappingReader(tensors, path.name)


def _numpy_head(path: Path, key: str | None, tokenizer: Any) -> Head:
    try:
        loaded = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"cannot read {path} as a numpy file: {error}") from error
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise HeadNotFoundError(f"{path} is a single array; key={key!r} does not apply")
        weight, _ = _checked(loaded, None, "array", path)
        return Head(weight=weight, bias=None, tokenizer=tokenizer, weight_key="array",
                    bias_key=None, file=path.name, dtype=str(weight.dtype), tied=False)
    with loaded:
        if key is None and any(name in loaded.files for name in (MARIAN_OUTPUT,
                                                                   *MARIAN_EMBEDDINGS)):
            return _marian_head(loaded, path, tokenizer)
        reader = _MappingReader({name: loaded[name] for name in loaded.files}, path.name)
        return _head(reader, key, True, path, tokenizer)


def _marian_head(loaded: Any, path: Path, tokenizer: Any) -> Head:
    """The output layer of a Marian/Bergamot ``.npz`` as it is written: logits ``h @ W + b``.

    ``decoder_ff_logit_out_W`` (d, V), an untied output layer, is read transposed to (V, d);
    without it the tied embeddings serve: ``decoder_Wemb`` (V, d), else ``Wemb`` (V, d, shared by
    encoder and decoder). The bias ``decoder_ff_logit_out_b``, stored as (1, V), becomes (V,).
    """
    if MARIAN_OUTPUT in loaded.files:
        stored = loaded[MARIAN_OUTPUT]
        weight_key, tied, weight = MARIAN_OUTPUT + " (transposed)", False, np.asarray(stored).T
    else:
        weight_key = next(name for name in MARIAN_EMBEDDINGS if name in loaded.files)
        stored = loaded[weight_key]
        tied, weight = True, np.asarray(stored)
    bias_key = MARIAN_BIAS if MARIAN_BIAS in loaded.files else None
    bias = None
    if bias_key is not None:
        raw = np.asarray(loaded[bias_key])
        if raw.ndim == 2 and raw.shape[0] == 1:
            raw = raw.reshape(-1)
        bias = raw
    weight, bias = _checked(weight, bias, weight_key, path)
    return Head(weight=weight, bias=bias, tokenizer=tokenizer, weight_key=weight_key,
                bias_key=bias_key, file=path.name, dtype=str(stored.dtype), tied=tied)


class GgufVocab:
    """Token strings of a GGUF file, with the ``id_to_token`` method of a ``tokenizers`` object.

    :func:`read_head` returns one as ``Head.tokenizer`` for a ``.gguf`` file that lists its tokens
    (``tokenizer.ggml.tokens``), so that reports can name the classes.

    Args:
        tokens: the token string of each class id, in id order.

    Returns:
        The vocabulary object.

    Raises:
        Nothing.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> vocab = GgufVocab(["<s>", "hello"])
        >>> vocab.id_to_token(1), vocab.id_to_token(2)
        ('hello', None)
    """

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    def id_to_token(self, k: int) -> str | None:
        """The token string of id ``k``.

        Args:
            k: a class id; no default.

        Returns:
            The token, or None when ``k`` is outside ``[0, len(tokens))``.

        Example:
            >>> GgufVocab(["a", "b"]).id_to_token(0)
            'a'
        """
        return self.tokens[k] if 0 <= k < len(self.tokens) else None


def _gguf_head(path: Path, key: str | None) -> Head:
    from logitkit._utils import require

    gguf = require("gguf", extra="gguf", purpose="reading GGUF checkpoints")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"cannot read {path} as GGUF: {error}") from error
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    if key is not None and key not in tensors:
        raise HeadNotFoundError(f"key {key!r} not found in {path}; available keys: "
                                f"{sorted(tensors)}")
    name = key or next((n for n in (GGUF_OUTPUT, GGUF_EMBEDDING) if n in tensors), None)
    if name is None:
        raise HeadNotFoundError(f"no {GGUF_OUTPUT} or {GGUF_EMBEDDING} in {path}; available "
                                f"keys: {sorted(tensors)}")
    tensor = tensors[name]
    weight = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
    bias_name = name[: -len("weight")] + "bias" if name.endswith("weight") else None
    bias = None
    if bias_name in tensors:
        raw = tensors[bias_name]
        bias = np.asarray(gguf.quants.dequantize(raw.data, raw.tensor_type), np.float32)
    else:
        bias_name = None
    weight, bias = _checked(weight, bias, name, path)
    field = reader.fields.get("tokenizer.ggml.tokens")
    vocab = None
    if field is not None:
        vocab = GgufVocab([bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data])
    return Head(weight=weight, bias=bias, tokenizer=vocab, weight_key=name, bias_key=bias_name,
                file=path.name, dtype=tensor.tensor_type.name, tied=name == GGUF_EMBEDDING)


def _config_ties(folder: Path) -> bool:
    config = folder / "config.json"
    try:
        settings = json.loads(config.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config} is not valid JSON: {error}") from error
    text = settings.get("text_config") if isinstance(settings.get("text_config"), dict) else {}
    return bool(settings.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))


def _folder_head(path: Path, key: str | None, tokenizer: Any) -> Head:
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is a folder without config.json; expected a Hugging Face "
                                "model folder (config.json + *.safetensors or pytorch_model.bin)")
    tie = _config_ties(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{index} has no readable weight_map: {error}") from error
        files = sorted({path / shard for shard in weight_map.values()})
        return _head(_SafetensorsReader(files, weight_map), key, tie, path, tokenizer)
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return _head(_SafetensorsReader(shards), key, tie, path, tokenizer)
    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        if (path / name).exists():
            return _head(_torch_reader(path / name), key, tie, path, tokenizer)
    raise FileNotFoundError(f"{path} has config.json but no *.safetensors or pytorch_model.bin")


def _tokenizer(path: Path) -> Any:
    folder = path if path.is_dir() else path.parent
    if not (folder / "tokenizer.json").exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def read_head(path: str | Path, *, key: str | None = None) -> Head:
    """The output layer of the checkpoint at ``path`` as a :class:`Head`, without loading the
    model: the ``W`` and ``b`` of its logits ``W z + b``.

    Formats (module doc): ``.safetensors``, a Hugging Face model folder (sharded or not, or
    ``pytorch_model.bin``), ``.gguf``, ``.pt``/``.pth``/``.bin``, ``.npy``/``.npz``. Without
    ``key`` the output head (``lm_head.weight``, ``cls.predictions.decoder.weight``,
    ``output.weight``, ...) is read; the input embeddings stand in only for a tied head (a
    folder's ``config.json`` says ``tie_word_embeddings``, true by default; single files count as
    tied); a tensor named ``weight`` comes last. The bias is ``x.bias`` beside ``x.weight``, else
    (without ``key``) a known LM-head bias. ``tokenizer.json`` beside the checkpoint is loaded
    with ``tokenizers``.

    Args:
        path: a checkpoint file or a Hugging Face model folder; no default.
        key: the name of the weight tensor to read instead of the search; default None.

    Returns:
        A :class:`Head` (weight, bias or None, tokenizer or None, and where they came from).

    Raises:
        FileNotFoundError: no file at ``path``; a folder without ``config.json`` or weights; a
            shard named by the index is missing.
        HeadNotFoundError: ``key`` is absent, or no output-layer tensor is found (a ``KeyError``
            whose message lists the available keys).
        ValueError: an unsupported suffix; a corrupt or unreadable file; a weight that is not a
            2-D float matrix with at least two rows; a bias of the wrong shape; NaN/inf values.
        ImportError: the package a format needs (safetensors, torch, tokenizers or gguf) is
            not installed (for gguf, the ``MissingExtra`` subclass that names the extra).

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from logitkit.audit import read_head
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "model.npz"
        >>> np.savez(path, **{"lm_head.weight": np.eye(3), "lm_head.bias": np.zeros(3)})
        >>> head = read_head(path)
        >>> head.weight.shape, head.bias.tolist(), head.tokenizer
        ((3, 3), [0.0, 0.0, 0.0], None)
        >>> head.source
        'lm_head.weight (float64) in model.npz, bias lm_head.bias'
        >>> read_head(path, key="decoder.weight")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        logitkit.audit.checkpoint.HeadNotFoundError: key 'decoder.weight' not found in ...
        >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        return _folder_head(path, key, _tokenizer(path))
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return _gguf_head(path, key)
    if suffix in (".npy", ".npz"):
        return _numpy_head(path, key, _tokenizer(path))
    if suffix == ".safetensors":
        return _head(_SafetensorsReader([path]), key, True, path, _tokenizer(path))
    if suffix in (".pt", ".pth", ".bin"):
        return _head(_torch_reader(path), key, True, path, _tokenizer(path))
    raise ValueError(f"unsupported checkpoint type {suffix!r} for {path}; expected .safetensors, "
                     ".gguf, .pt, .pth, .bin, .npy, .npz or a Hugging Face model folder")


def load_head(path: str | Path, *, key: str | None = None) -> tuple[np.ndarray, Any, Any]:
    """The output layer of a checkpoint as a tuple: :func:`read_head` without the provenance.

    Args:
        path: a checkpoint file or a Hugging Face model folder (formats: :func:`read_head`); no
            default.
        key: the name of the weight tensor to read instead of the search; default None.

    Returns:
        ``(weight, bias, tokenizer)``: the (V, d) weight ``W``, the (V,) bias ``b`` or None, and
        the tokenizer or None; ``W z + b`` are the logits to audit.

    Raises:
        FileNotFoundError, HeadNotFoundError, ValueError, ImportError: as :func:`read_head`.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable, load_head
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "model.npz"
        >>> np.savez(path, **{"lm_head.weight": np.eye(3), "lm_head.bias": np.zeros(3)})
        >>> weight, bias, tokenizer = load_head(path)
        >>> check_argmaxable(weight, bias, show_progress=False).counts
        {'argmaxable': 3, 'tie': 0, 'unargmaxable': 0, 'unknown': 0}
        >>> tmp.cleanup()
    """
    head = read_head(path, key=key)
    return head.weight, head.bias, head.tokenizer
