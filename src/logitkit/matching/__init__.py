"""Pair matching: the CoSENT loss, STS-B pairs and metrics, PAWS-like role swaps, and the pieces
sentence-transformers lacks (a dev-tuned threshold evaluator, the swap-set evaluation).

Models, losses and trainers come from sentence-transformers (extra ``matching``), imported only
when an encoder or the evaluator is used, so the loss and the metrics work without it. torch is
imported with ``cosent_loss`` (on first use of the name), so ``logitkit pairs --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from logitkit.matching.adversarial import SwapSet, role_swap, swap_set
from logitkit.matching.encoders import (
    load_bi_encoder,
    load_cross_encoder,
    max_seq_length,
    minilm_path,
    pair_scores,
)
from logitkit.matching.evaluate import (
    PairSet,
    accuracy_at,
    average_precision,
    best_f1,
    binary_metrics,
    check_both_classes,
    is_binary,
    load_stsb,
    matthews_corrcoef,
    resolve_cutoff,
    similar_labels,
    spearman,
    swap_metrics,
    threshold_metrics,
    tune_threshold,
)

# imported on first use: the evaluator subclasses sentence-transformers, the loss needs torch
_LAZY = {"TunedThresholdEvaluator": "evaluators", "cosent_loss": "cosent"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"logitkit.matching.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'logitkit.matching' has no attribute {name!r}")


__all__ = [
    "PairSet",
    "SwapSet",
    "TunedThresholdEvaluator",
    "accuracy_at",
    "average_precision",
    "best_f1",
    "binary_metrics",
    "check_both_classes",
    "cosent_loss",
    "is_binary",
    "load_bi_encoder",
    "load_cross_encoder",
    "load_stsb",
    "matthews_corrcoef",
    "max_seq_length",
    "minilm_path",
    "pair_scores",
    "resolve_cutoff",
    "role_swap",
    "similar_labels",
    "spearman",
    "swap_metrics",
    "swap_set",
    "threshold_metrics",
    "tune_threshold",
]
