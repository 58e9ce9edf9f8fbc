"""Offline text corpora and a byte-level tokenizer, shared by the language-model experiments.

Real corpora come from the data folder (``lm/*.txt`` in ``../shared/data``). Without one, the
embedded corpora are built from the docstrings of Python's standard library, which every
installation carries: two disjoint groups of modules give a "pretrain" and a "finetune" text.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch

EMBEDDED_MODULES = {
    "pretrain": ("collections", "functools", "itertools", "json", "pathlib", "argparse",
                 "logging", "subprocess", "threading", "socket", "email", "http.client"),
    "finetune": ("statistics", "fractions", "decimal", "random", "datetime", "calendar",
                 "textwrap", "string", "difflib", "unittest"),
}


def embedded_text(part: str) -> str:
    """Docstrings of the standard-library modules in ``EMBEDDED_MODULES[part]``, joined."""
    if part not in EMBEDDED_MODULES:
        raise ValueError(f"part must be one of {sorted(EMBEDDED_MODULES)}, got {part!r}")
    chunks = []
    for module_name in EMBEDDED_MODULES[part]:
        module = importlib.import_module(module_name)
        objects = [module] + [obj for _, obj in sorted(vars(module).items())
                              if inspect.isclass(obj) or inspect.isfunction(obj)]
        for obj in objects:
            doc = inspect.getdoc(obj)
            if doc and getattr(obj, "__module__", module_name) == module_name:
                chunks.append(doc)
    return "\n\n".join(chunks)


def load_text(data_file: Path | None, fallback_part: str) -> tuple[str, str]:
    """The text of ``data_file`` if given, else the embedded corpus; with a label for reports."""
    if data_file is not None:
        return data_file.read_text(encoding="utf-8"), data_file.name
    return embedded_text(fallback_part), f"embedded stdlib docstrings ({fallback_part})"


def encode_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as a LongTensor of ids in [0, 256)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def sample_windows(
    ids: torch.Tensor, *, batch: int, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random windows of ``length`` tokens and their next-token targets."""
    if ids.numel() <= length + 1:
        raise ValueError(f"corpus of {ids.numel()} tokens is too short for windows of {length}")
    starts = torch.randint(0, ids.numel() - length - 1, (batch,), generator=generator)
    offsets = torch.arange(length)
    inputs = ids[starts[:, None] + offsets]
    return inputs, ids[starts[:, None] + offsets + 1]
