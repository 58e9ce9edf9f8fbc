"""Decision metrics and input checks shared by the threshold and class-weight searches.

Conventions: ``labels`` are integer class ids in ``[0, n)``; ``preds`` likewise; ``weights`` are
per-sample weights (``None``: every sample counts 1).

* accuracy  = sum_i s_i [pred_i == y_i] / sum_i s_i
* balanced accuracy = the mean recall of the classes present = accuracy with each sample's
  weight divided by its class's total (scikit-learn's ``balanced_accuracy_score``)
* cost matrix C (n x n, ``C[true, pred]``): minus the mean cost, - sum_i s_i C[y_i, pred_i] /
  sum_i s_i (higher is better, like every metric here)
* macro-F1  = mean over the classes PRESENT in ``labels`` (positive weighted count) of F1_c,
  F1_c = 2 TP_c / (#pred_c + #true_c)   (weighted counts; a class absent from the labels would
  add a constant 0, so it is left out, as in scikit-learn's ``f1_score(average="macro")`` when
  the class is not predicted either)
* F1 of one class c (``f1`` with ``pos_label=c``; binary F1 = F1 of label 1)
* a function ``f(labels, preds, sample_weight) -> float`` (higher is better)

Accuracy, balanced accuracy and cost matrices are LINEAR metrics, ``sum_i s_i U[y_i, pred_i]`` with
a utility matrix U (I, I, -C); the searches handle every linear metric and every mean of F1s
exactly (:class:`Metric`), a function only by evaluating it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

CLASS_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "f1")
BINARY_METRICS = ("accuracy", "f1")


def f1_from_counts(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Elementwise F1 = 2 tp / (predicted + actual), 0 where the denominator is 0."""
    denominator = predicted + actual
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, 2.0 * tp / safe, 0.0)


@dataclass(frozen=True)
class Metric:
    """A metric of decisions, as the searches see it (module docstring): ``utility`` (n x n) for
    a linear one; else the mean F1 of the classes present (``f1_class`` None) or of one class;
    or ``function``. ``name`` is what the user asked for."""

    name: str
    utility: np.ndarray | None = None
    f1_class: int | None = None
    function: Callable[..., float] | None = None

    @property
    def linear(self) -> bool:
        return self.utility is not None

    @cached_property
    def is_accuracy(self) -> bool:
        """A linear metric whose utility is the identity: only a row's own class gains."""
        u = self.utility
        return u is not None and bool(np.array_equal(u, np.eye(u.shape[0])))

    def f1_counted(self, labels: np.ndarray, n_classes: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
        """Mask of the classes whose F1 is averaged: those present, or the one class."""
        if self.f1_class is not None:
            return np.arange(n_classes) == self.f1_class
        return present_classes(labels, n_classes, weights)


def resolve_metric(metric: object, n_classes: int, pos_label: int | None = None) -> Metric:
    """The :class:`Metric` for ``metric``: a name of CLASS_METRICS ("f1" needs ``pos_label``,
    the class whose F1 counts), an (n, n) cost matrix ``C[true, pred]``, a :class:`Metric`, or a
    function ``f(labels, preds, sample_weight) -> float``. ValueError for anything else."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        check_metric(metric, CLASS_METRICS)
        if metric == "f1":
            if pos_label is None or not 0 <= pos_label < n_classes:
                raise ValueError(f"metric 'f1' is the F1 of one class: pos_label must be a class "
                                 f"id in [0, {n_classes}), got {pos_label}")
            return Metric("f1", f1_class=int(pos_label))
        if metric == "macro_f1":
            return Metric("macro_f1")
        return Metric(metric, utility=np.eye(n_classes))
    if callable(metric):
        return Metric(getattr(metric, "__name__", "callable"), function=metric)
    cost = np.asarray(metric, dtype=np.float64)
    if cost.shape != (n_classes, n_classes) or not np.all(np.isfinite(cost)):
        raise ValueError(f"metric must be one of {CLASS_METRICS}, a function, or a finite "
                         f"({n_classes}, {n_classes}) cost matrix C[true, pred]; got "
                         f"{metric!r:.80}")
    return Metric("cost", utility=-cost)


def metric_weights(metric: Metric, labels: np.ndarray, n_classes: int,
                   weights: np.ndarray | None) -> np.ndarray | None:
    """The sample weights a search uses for ``metric``: balanced accuracy divides each sample's
    weight by its class's total; every other metric keeps them."""
    if metric.name != "balanced_accuracy":
        return weights
    sw = np.ones(labels.size) if weights is None else weights
    totals = np.bincount(labels, weights=sw, minlength=n_classes)
    return sw / totals[labels]


def class_metric(labels: np.ndarray, preds: np.ndarray, n_classes: int, metric: str | Metric,
                 weights: np.ndarray | None = None) -> float:
    """``metric`` (a name, see :func:`resolve_metric`, or a :class:`Metric`) of integer
    predictions against integer labels. Balanced accuracy expects the weights of
    :func:`metric_weights` when given a :class:`Metric`, and computes them from a name."""
    if isinstance(metric, str):
        spec = resolve_metric(metric, n_classes, pos_label=1 if metric == "f1" else None)
        weights = metric_weights(spec, labels, n_classes, weights)
        metric = spec
    if metric.function is not None:
        return float(metric.function(labels, preds, weights))
    hit = np.flatnonzero(preds == labels)
    if metric.is_accuracy:  # the counts alone, as fast as before utilities (Powell calls it)
        if weights is None:
            return float(hit.size) / labels.size
        return float(weights[hit].sum() / weights.sum())
    if metric.linear:
        gains = metric.utility[labels, preds]
        if weights is None:
            return float(gains.mean())
        return float(gains @ weights / weights.sum())
    tp = np.bincount(labels[hit], weights=None if weights is None else weights[hit],
                     minlength=n_classes)
    predicted = np.bincount(preds, weights=weights, minlength=n_classes)
    actual = np.bincount(labels, weights=weights, minlength=n_classes)
    counted = metric.f1_counted(labels, n_classes, weights)
    return float(f1_from_counts(tp, predicted, actual)[counted].mean())


def present_classes(labels: np.ndarray, n_classes: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Mask of the classes with a positive (weighted) count in ``labels``."""
    return np.bincount(labels, weights=weights, minlength=n_classes) > 0


def binary_metric(labels: np.ndarray, preds: np.ndarray, metric: str) -> float:
    """``metric`` ("accuracy" or "f1" of class 1) of 0/1 predictions against 0/1 labels."""
    if metric == "accuracy":
        return class_metric(labels, preds, 2, metric)
    tp = np.count_nonzero((preds == 1) & (labels == 1))
    return float(f1_from_counts(tp, np.count_nonzero(preds == 1), np.count_nonzero(labels == 1)))


def check_metric(metric: str, allowed: tuple[str, ...]) -> None:
    if metric not in allowed:
        raise ValueError(f"metric must be one of {allowed}, got {metric!r}")


def as_int_labels(labels: object, name: str = "labels") -> np.ndarray:
    """1-D int64 array from integer (or integral float) values; ValueError/TypeError otherwise."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; at least one sample is needed")
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold whole numbers (class ids); found non-integers")
        return array.astype(np.int64)
    raise TypeError(f"{name} must be integer class ids, got dtype {array.dtype}")


def check_probs(probs: object, name: str = "probs") -> np.ndarray:
    """Validate a (N, n) matrix of finite non-negative scores (N >= 1, n >= 2)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, classes), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} has no rows; at least one sample is needed")
    if p.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 class columns, got {p.shape[1]}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(p < 0):
        raise ValueError(f"{name} must be non-negative (probabilities or other non-negative "
                         "scores)")
    return p


def check_probs_labels(probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (N, n) score matrix and N labels in [0, n), at least two classes present.

    Scores need not be normalised (rows need not sum to 1): the decision rule argmax(p * w) only
    compares products, so any finite non-negative scores work. Negative scores are rejected
    because a positive weight would then reverse their order.
    """
    p = check_probs(probs)
    y = as_int_labels(labels)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but probs has {p.shape[0]} rows")
    n = p.shape[1]
    if y.min() < 0 or y.max() >= n:
        bad = y[(y < 0) | (y >= n)][0]
        raise ValueError(f"labels must lie in [0, {n}) for {n} classes, found {bad}")
    if y.min() == y.max():
        raise ValueError(f"every label is {y[0]}; at least two classes must be present to tune "
                         "their weights")
    return p, y


def check_sample_weight(sample_weight: object, size: int) -> np.ndarray | None:
    """None, or a 1-D array of ``size`` finite non-negative weights with a positive sum."""
    if sample_weight is None:
        return None
    s = np.asarray(sample_weight, dtype=np.float64)
    if s.shape != (size,):
        raise ValueError(f"sample_weight must have shape ({size},), got {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    if s.sum() <= 0:
        raise ValueError("sample_weight sums to 0; at least one sample must count")
    return s


def check_scores_binary(scores: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate N finite scores and N labels in {0, 1} with both classes present."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if s.size == 0:
        raise ValueError("scores is empty; at least one sample is needed")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or infinite values")
    y = as_int_labels(labels)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but scores has {s.shape[0]}")
    if np.any((y != 0) & (y != 1)):
        raise ValueError(f"binary labels must be 0 or 1, found {y[(y != 0) & (y != 1)][0]}")
    if y.min() == y.max():
        raise ValueError(f"labels are all {y[0]}; both classes 0 and 1 must be present")
    return s, y
