"""Pair matching: the CoSENT loss, STS-B pairs and metrics, PAWS-like role swaps, and the pieces
sentence-transformers lacks (a dev-tuned threshold evaluator, the swap-set evaluation).

Models, losses and trainers come from sentence-transformers (extra ``matching``), imported only
when an encoder or the evaluator is used, so the loss and the metrics work without it. torch is
imported with ``cosent_loss`` (on first use of the name), so ``logitkit pairs --help`` stays fast.

The package root exports what a user calls; the building blocks stay public in their modules:
``logitkit.matching.evaluate`` (``accuracy_at``, ``best_f1``, ``binary_metrics``,
``average_precision``, ``matthews_corrcoef``, ``swap_metrics``, ``resolve_cutoff``,
``similar_labels``), ``logitkit.matching.adversarial`` (``SwapSet``),
``logitkit.matching.encoders`` (``minilm_path``) and ``logitkit.matching.pair_files`` (the pair
files of ``logitkit pairs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from logitkit.matching.adversarial import role_swap, swap_set
from logitkit.matching.encoders import load_bi_encoder, load_cross_encoder, pair_scores
from logitkit.matching.evaluate import (
    PairSet,
    load_stsb,
    spearman,
    threshold_metrics,
    tune_threshold,
)

if TYPE_CHECKING:  # imported lazily at run time, by __getattr__ below
    from logitkit.matching.cosent import cosent_loss
    from logitkit.matching.evaluators import TunedThresholdEvaluator

__all__ = [
    "PairSet",
    "TunedThresholdEvaluator",
    "cosent_loss",
    "load_bi_encoder",
    "load_cross_encoder",
    "load_stsb",
    "pair_scores",
    "role_swap",
    "spearman",
    "swap_set",
    "threshold_metrics",
    "tune_threshold",
]


def __getattr__(name: str) -> Any:
    # lazy: the loss needs torch, the evaluator subclasses sentence-transformers' (slow imports)
    if name == "cosent_loss":
        from logitkit.matching.cosent import cosent_loss

        return cosent_loss
    if name == "TunedThresholdEvaluator":
        from logitkit.matching.evaluators import TunedThresholdEvaluator

        return TunedThresholdEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
