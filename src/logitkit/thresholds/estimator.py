"""``ClassWeightTuner``: a scikit-learn meta-estimator that tunes per-class decision weights.

predict(X) = classes_[argmax(estimator_.predict_proba(X) * weights_)], with ``weights_`` fitted by
:func:`logitkit.thresholds.fit_class_weights` on held-out probabilities: the fit data itself for
``cv="prefit"`` (pass data the estimator was NOT trained on), or out-of-fold probabilities from
``cross_val_predict`` for an integer ``cv`` (the estimator is then refitted on all the data).

scikit-learn is an optional extra (``pip install logitkit[sklearn]``). Without it this module still
imports, and creating a ``ClassWeightTuner`` raises an ImportError that says what to install.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logitkit.thresholds.search import apply_class_weights, fit_class_weights

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, clone
    from sklearn.model_selection import cross_val_predict
    from sklearn.utils.validation import check_is_fitted

    _MISSING: ImportError | None = None
except ImportError as error:  # the class below must still be definable
    _MISSING = error

    class BaseEstimator:  # type: ignore[no-redef]
        """Stand-in so the module imports without scikit-learn; never instantiated."""

    class ClassifierMixin:  # type: ignore[no-redef]
        """Stand-in so the module imports without scikit-learn; never instantiated."""


def _require_sklearn() -> None:
    if _MISSING is not None:
        raise ImportError(
            "ClassWeightTuner needs scikit-learn: pip install 'logitkit[sklearn]' "
            f"(import failed: {_MISSING})"
        )


class ClassWeightTuner(ClassifierMixin, BaseEstimator):
    """Wrap a probabilistic classifier; predict ``argmax(predict_proba(X) * weights_)``.

    Parameters: ``estimator`` (has ``predict_proba``), ``metric`` ("accuracy" or "macro_f1"),
    ``method`` ("coordinate" exact, or "powell" baseline), ``cv`` ("prefit" or a number of folds
    or any scikit-learn splitter). Fitted attributes: ``estimator_``, ``classes_``, ``weights_``.
    """

    def __init__(self, estimator: Any, *, metric: str = "accuracy", method: str = "coordinate",
                 cv: Any = "prefit") -> None:
        _require_sklearn()
        self.estimator = estimator
        self.metric = metric
        self.method = method
        self.cv = cv

    def fit(self, X: Any, y: Any) -> ClassWeightTuner:
        _require_sklearn()
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels, got shape {y.shape}")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if self.cv == "prefit":
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
            probs = self.estimator_.predict_proba(X)
        else:
            probs = cross_val_predict(clone(self.estimator), X, y, cv=self.cv,
                                      method="predict_proba")
            self.estimator_ = clone(self.estimator).fit(X, y)
        known = np.asarray(self.estimator_.classes_)
        if known.shape != self.classes_.shape or np.any(known != self.classes_):
            raise ValueError(
                f"the estimator knows classes {known.tolist()} but y has classes "
                f"{self.classes_.tolist()}; they must be the same"
            )
        self.weights_ = fit_class_weights(probs, y_index, metric=self.metric, method=self.method)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """The wrapped estimator's probabilities (the weights change decisions, not these)."""
        check_is_fitted(self, "weights_")
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[apply_class_weights(self.predict_proba(X), self.weights_)]
