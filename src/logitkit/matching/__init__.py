"""Pair matching: the CoSENT loss, STS-B pairs and metrics, PAWS-like role swaps, and the pieces
sentence-transformers lacks (a dev-tuned threshold evaluator, the swap-set evaluation).

Models, losses and trainers come from sentence-transformers (extra ``matching``), imported only
when an encoder or the evaluator is used, so the loss and the metrics work without it.
"""

from __future__ import annotations

from typing import Any

from logitkit.matching.adversarial import SwapSet, role_swap, swap_set
from logitkit.matching.cosent import cosent_loss
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
    load_stsb,
    similar_labels,
    spearman,
    swap_metrics,
    threshold_metrics,
    tune_threshold,
)

_LAZY = {"TunedThresholdEvaluator"}  # they subclass sentence-transformers


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from logitkit.matching import evaluators

        return getattr(evaluators, name)
    raise AttributeError(f"module 'logitkit.matching' has no attribute {name!r}")


__all__ = [
    "PairSet",
    "SwapSet",
    "TunedThresholdEvaluator",
    "accuracy_at",
    "cosent_loss",
    "load_bi_encoder",
    "load_cross_encoder",
    "load_stsb",
    "max_seq_length",
    "minilm_path",
    "pair_scores",
    "role_swap",
    "similar_labels",
    "spearman",
    "swap_metrics",
    "swap_set",
    "threshold_metrics",
    "tune_threshold",
]
