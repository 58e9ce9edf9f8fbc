"""``ClassWeightTuner``: a scikit-learn meta-estimator that tunes per-class decision weights.

predict(X) = classes_[argmax(q(X) * weights_)] where q(X) is the wrapped estimator's
``predict_proba(X)``, or for a model with only ``decision_function`` (e.g. ``LinearSVC``) the
softmax of its scores (binary: of ``[0, s]``), so the weights act as additive offsets ``log w``.
``weights_`` come from :func:`logitkit.thresholds.fit_class_weights` on held-out scores:

* ``cv`` a number of folds (default 5) or any scikit-learn splitter: out-of-fold scores from
  ``cross_val_predict``, then the estimator is refitted on all the data. This survives ``clone``
  (``cross_val_score``, ``GridSearchCV``, pipelines).
* ``cv="prefit"``: the estimator is already fitted and ``fit(X, y)`` only tunes the weights on
  (X, y), which must be data the estimator was NOT trained on. ``clone`` un-fits a plain estimator,
  so for cloning code wrap the model first: ``ClassWeightTuner(FrozenEstimator(model),
  cv="prefit")`` (``sklearn.frozen.FrozenEstimator``, scikit-learn >= 1.6).

With ``cv="prefit"`` the validation labels may lack some of the estimator's classes: those keep
their weight while the others are tuned (see ``fit_class_weights``); a label the estimator does
not know is an error. ``predict_proba`` returns ``p * w`` renormalised (the posterior under the
prior change ``w``; exact for prior-ratio weights, a reading of tuned ones), so that its argmax is
``predict``; the wrapped model's own probabilities are ``estimator_.predict_proba``.

scikit-learn is an optional extra (``pip install logitkit[sklearn]``). Without it this module still
imports, and creating a ``ClassWeightTuner`` raises an ImportError that says what to install.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logitkit._utils import require
from logitkit.thresholds.search import tune_class_weights

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
    from sklearn.model_selection import check_cv, cross_val_predict
    from sklearn.utils import get_tags, indexable
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, has_fit_parameter

    _MISSING: ImportError | None = None
except ImportError as error:  # the class below must still be definable
    _MISSING = error

    class BaseEstimator:  # type: ignore[no-redef]
        """Stand-in so the module imports without scikit-learn; never instantiated."""

    class ClassifierMixin:  # type: ignore[no-redef]
        """Stand-in so the module imports without scikit-learn; never instantiated."""

    class MetaEstimatorMixin:  # type: ignore[no-redef]
        """Stand-in so the module imports without scikit-learn; never instantiated."""

    def available_if(check: Any) -> Any:  # type: ignore[no-redef]
        return lambda method: method


def _require_sklearn() -> None:
    if _MISSING is not None:  # raises MissingExtra (an ImportError) naming the extra
        require("sklearn", extra="sklearn", purpose="ClassWeightTuner")


def _response(estimator: Any, response_method: str) -> str:
    """The estimator's method that gives the scores: predict_proba or decision_function."""
    if response_method not in ("auto", "predict_proba", "decision_function"):
        raise ValueError("response_method must be 'auto', 'predict_proba' or "
                         f"'decision_function', got {response_method!r}")
    wanted = (["predict_proba", "decision_function"] if response_method == "auto"
              else [response_method])
    for name in wanted:
        if hasattr(estimator, name):
            return name
    raise ValueError(f"{type(estimator).__name__} has no {' or '.join(wanted)}")


def _as_probs(scores: np.ndarray, response: str) -> np.ndarray:
    """Non-negative scores for ``argmax(p * w)``: probabilities as they are, decision scores
    through a softmax (binary: of ``[0, s]``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if response == "predict_proba":
        return scores
    if scores.ndim == 1:
        scores = np.stack([np.zeros_like(scores), scores], axis=1)
    shifted = scores - scores.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _uses_decision_function(tuner: ClassWeightTuner) -> bool:
    return _response(tuner.estimator, tuner.response_method) == "decision_function"


def _uses_predict_proba(tuner: ClassWeightTuner) -> bool:
    return _response(tuner.estimator, tuner.response_method) == "predict_proba"


# scikit-learn scorer names with an exact search of their own (name -> logitkit metric)
_BUILT_IN = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
             "macro_f1": "macro_f1", "f1_macro": "macro_f1", "f1": "f1"}


def _search_metric(metric: Any, pos_label: Any, classes: np.ndarray) -> tuple[Any, int | None]:
    """The metric for :func:`tune_class_weights` on class indices, and the index of
    ``pos_label`` for "f1". Built-in names (and scikit-learn's "f1_macro") and cost matrices
    are searched exactly; any other scorer name (``sklearn.metrics.get_scorer``), a scorer made
    by ``make_scorer``, or a function ``f(y_true, y_pred)`` is evaluated on the original labels
    (``sample_weight=`` passed when given)."""
    if isinstance(metric, str) and metric in _BUILT_IN:
        if _BUILT_IN[metric] != "f1":
            return _BUILT_IN[metric], None
        wanted = 1 if pos_label is None else pos_label
        where = np.flatnonzero(classes == wanted)
        if where.size == 0:
            raise ValueError(f"metric 'f1' tunes the F1 of pos_label={wanted!r}, which is not a "
                             f"class of y ({classes.tolist()}); set pos_label")
        return "f1", int(where[0])
    if isinstance(metric, str):
        from sklearn.metrics import get_scorer

        metric = get_scorer(metric)
    if hasattr(metric, "_score_func"):  # a scikit-learn scorer: its function, sign and kwargs
        if getattr(metric, "_response_method", "predict") != "predict":
            raise ValueError(f"{metric!r} scores probabilities or decision values, not the "
                             "decisions argmax(p * w) that the weights change; use a scorer of "
                             "predictions")
        function, sign, kwargs = metric._score_func, metric._sign, metric._kwargs
    elif callable(metric):
        function, sign, kwargs = metric, 1, {}
    else:
        return np.asarray(metric, dtype=np.float64), None

    def on_labels(y: np.ndarray, pred: np.ndarray, sample_weight: np.ndarray | None) -> float:
        extra = {} if sample_weight is None else {"sample_weight": sample_weight}
        return sign * float(function(classes[y], classes[pred], **kwargs, **extra))

    return on_labels, None


class ClassWeightTuner(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Wrap a classifier; predict ``argmax(scores(X) * weights_)`` (see the module docstring).

    Args:
        estimator: a scikit-learn classifier with ``predict_proba`` or ``decision_function``.
        metric: what the weights maximise (default "accuracy"): "accuracy",
            "balanced_accuracy", "macro_f1" (or scikit-learn's "f1_macro"), "f1" (the F1 of
            ``pos_label``), an (n, n) cost matrix ``C[true, pred]`` in ``classes_`` order (all
            searched exactly, as ``tune_class_weights``); any other scikit-learn scorer name of
            predictions ("recall_macro", ...), a ``make_scorer`` object, or a function
            ``f(y_true, y_pred)`` on the original labels (coordinate ascent only).
        pos_label: the class whose F1 "f1" tunes (default None: 1, as scikit-learn's "f1").
        method: "auto" (default), "exact", "coordinate" or "powell" (``tune_class_weights``).
        cv: folds (default 5), a scikit-learn splitter, or "prefit".
        shrink: None (default), a number in [0, 1] or "cv": the over-fitting guard of
            ``tune_class_weights``, toward plain argmax.
        response_method: "auto" (default: predict_proba if the estimator has it, else
            decision_function), "predict_proba" or "decision_function".
        random_state: seeds the restarts and the shrinkage folds (default 0).

    Fitted attributes: ``estimator_``, ``classes_``, ``weights_``, ``shrink_`` (the shrinkage
    applied), ``tuned_score_`` (the metric on the held-out scores the weights were tuned on),
    ``score_bound_`` (a proved upper bound on it for any weights; ``inf`` for a scorer or
    function), and ``n_features_in_`` (``feature_names_in_``) when the estimator has them.

    Raises (in ``fit``):
        ValueError: fewer than 2 classes, a ``pos_label`` that is not a class, a scorer of
            probabilities (weights change decisions only), bad options.

    Reference: the seed (post 002) tunes ``argmax(p * w)`` with scipy's Powell method;
    scikit-learn's ``TunedThresholdClassifierCV`` is the binary, one-threshold analogue.

    >>> from sklearn.datasets import load_wine
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_wine(return_X_y=True)
    >>> tuner = ClassWeightTuner(LogisticRegression(max_iter=5000), cv=3).fit(X, y)
    >>> tuner.weights_.shape
    (3,)
    """

    def __init__(self, estimator: Any, *, metric: Any = "accuracy", pos_label: Any = None,
                 method: str = "auto", cv: Any = 5, shrink: float | str | None = None,
                 response_method: str = "auto", random_state: int = 0) -> None:
        _require_sklearn()
        self.estimator = estimator
        self.metric = metric
        self.pos_label = pos_label
        self.method = method
        self.cv = cv
        self.shrink = shrink
        self.response_method = response_method
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> ClassWeightTuner:
        """Tune ``weights_`` on held-out scores of (X, y) and keep a fitted ``estimator_``.

        ``sample_weight`` (optional) weighs the samples in the estimator's fit (which must
        accept it) and in the tuned metric.
        """
        _require_sklearn()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        X, y = indexable(X, y)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        response = _response(self.estimator, self.response_method)
        fit_params = {}
        if sample_weight is not None:
            if not has_fit_parameter(self.estimator, "sample_weight"):
                raise ValueError(f"{type(self.estimator).__name__}.fit does not accept "
                                 "sample_weight")
            fit_params["sample_weight"] = np.asarray(sample_weight, dtype=np.float64)
        if self.cv == "prefit":
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
            self.classes_ = np.asarray(self.estimator_.classes_)
            y_index = np.searchsorted(self.classes_, y)
            unknown = (y_index >= self.classes_.size) | (
                self.classes_[np.minimum(y_index, self.classes_.size - 1)] != y)
            if np.any(unknown):
                raise ValueError(f"y has label(s) {np.unique(y[unknown]).tolist()} that the "
                                 f"fitted estimator does not know ({self.classes_.tolist()})")
            scores = getattr(self.estimator_, response)(X)
        else:
            self.classes_, y_index = np.unique(y, return_inverse=True)
            cv = check_cv(self.cv, y, classifier=True)
            scores = cross_val_predict(clone(self.estimator), X, y, cv=cv, method=response,
                                       params=fit_params)
            self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        if self.classes_.size < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got "
                             f"{self.classes_.tolist()}")
        metric, pos_index = _search_metric(self.metric, self.pos_label, self.classes_)
        fitted = tune_class_weights(_as_probs(scores, response), y_index, metric=metric,
                                    pos_label=pos_index, method=self.method,
                                    sample_weight=fit_params.get("sample_weight"),
                                    shrink=self.shrink, random_state=self.random_state)
        self.weights_, self.shrink_ = fitted.weights, fitted.shrink
        self.tuned_score_, self.score_bound_ = fitted.metric, fitted.bound
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, name):
                setattr(self, name, getattr(self.estimator_, name))
        return self

    def _weighted(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "weights_")
        response = _response(self.estimator_, self.response_method)
        return _as_probs(getattr(self.estimator_, response)(X), response) * self.weights_

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[argmax(scores * weights_)]`` (ties: the first class)."""
        best = np.argmax(self._weighted(X), axis=1)  # checks fitted first
        return self.classes_[best]

    @available_if(_uses_predict_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """``p * weights_`` renormalised per row (its argmax is ``predict``)."""
        weighted = self._weighted(X)
        total = weighted.sum(axis=1, keepdims=True)
        return weighted / np.where(total > 0, total, 1.0)

    @available_if(_uses_decision_function)
    def decision_function(self, X: Any) -> np.ndarray:
        """The estimator's decision scores plus ``log weights_`` (binary: plus
        ``log(w_1 / w_0)``), so their argmax (binary: their sign) is ``predict``."""
        check_is_fitted(self, "weights_")
        scores = np.asarray(self.estimator_.decision_function(X), dtype=np.float64)
        with np.errstate(divide="ignore"):  # a Powell weight can be 0
            offsets = np.log(self.weights_)
        if scores.ndim == 1:
            return scores + (offsets[1] - offsets[0])
        return scores + offsets

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = get_tags(self.estimator).input_tags.sparse
        return tags
