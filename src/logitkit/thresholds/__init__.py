"""Decision thresholds and per-class decision weights, fitted exactly on validation data.

``fit_threshold`` (binary, ``score >= t``), ``fit_class_weights`` (multi-class,
``argmax(probs * weights)``; exact coordinate ascent or the scipy Powell baseline),
``apply_class_weights`` and the scikit-learn meta-estimator ``ClassWeightTuner`` (needs the
``sklearn`` extra; imported only when first used).
"""

from __future__ import annotations

from typing import Any

from logitkit.thresholds.search import (
    ClassWeightFit,
    apply_class_weights,
    class_prior,
    fit_class_weights,
    fit_threshold,
    prior_ratio_weights,
    tune_class_weights,
)

__all__ = [
    "ClassWeightFit",
    "ClassWeightTuner",
    "apply_class_weights",
    "class_prior",
    "fit_class_weights",
    "fit_threshold",
    "prior_ratio_weights",
    "tune_class_weights",
]


def __getattr__(name: str) -> Any:
    if name == "ClassWeightTuner":  # lazy: scikit-learn is an optional extra and slow to import
        from logitkit.thresholds.estimator import ClassWeightTuner

        return ClassWeightTuner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
