"""ClassWeightTuner (scikit-learn meta-estimator), prefit and cross-validated."""

import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import cross_val_predict  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from logitkit.thresholds import ClassWeightTuner, fit_class_weights  # noqa: E402

NAMES = np.array(["barolo", "grignolino", "barbera"])


def naive_accuracy(labels, preds):
    return sum(int(a == b) for a, b in zip(labels, preds, strict=True)) / len(labels)


def naive_macro_f1(labels, preds):
    scores = []
    for c in sorted(set(labels)):
        tp = sum(1 for a, b in zip(labels, preds, strict=True) if a == b == c)
        scores.append(2 * tp / (list(preds).count(c) + list(labels).count(c)))
    return sum(scores) / len(scores)


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return X, NAMES[y]  # string labels: the tuner must map them through classes_


def model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))


def test_prefit_tunes_on_the_given_data_and_predicts_weighted_argmax(wine):
    X, y = wine
    rng = np.random.default_rng(0)
    train = rng.permutation(len(y))[: len(y) // 2]
    held_out = np.setdiff1d(np.arange(len(y)), train)
    base = model().fit(X[train], y[train])
    tuner = ClassWeightTuner(base, cv="prefit").fit(X[held_out], y[held_out])
    assert tuner.estimator_ is base
    assert tuner.classes_.tolist() == sorted(NAMES.tolist())
    assert tuner.weights_.shape == (3,) and 1.0 <= tuner.weights_.max() < 2.0
    probs = base.predict_proba(X[held_out])
    np.testing.assert_array_equal(tuner.predict_proba(X[held_out]), probs)
    expected = [tuner.classes_[int(np.argmax(row * tuner.weights_))] for row in probs]
    assert tuner.predict(X[held_out]).tolist() == expected
    # coordinate ascent starts at plain argmax, so it never does worse on the data it tuned on
    assert naive_accuracy(y[held_out], expected) >= base.score(X[held_out], y[held_out])
    assert tuner.score(X[held_out], y[held_out]) == naive_accuracy(y[held_out], expected)


def test_cross_validated_weights_are_tuned_out_of_fold_and_estimator_refit(wine):
    X, y = wine
    tuner = ClassWeightTuner(model(), metric="macro_f1", cv=3).fit(X, y)
    assert tuner.estimator_ is not tuner.estimator
    refit = model().fit(X, y)
    np.testing.assert_allclose(tuner.predict_proba(X), refit.predict_proba(X))
    oof = cross_val_predict(model(), X, y, cv=3, method="predict_proba")
    codes = np.searchsorted(tuner.classes_, y)
    # the weights were tuned on the out-of-fold probabilities, not on the refitted model's
    np.testing.assert_array_equal(tuner.weights_,
                                  fit_class_weights(oof, codes, metric="macro_f1"))
    assert naive_macro_f1(codes, np.argmax(oof * tuner.weights_, axis=1)) >= naive_macro_f1(
        codes, np.argmax(oof, axis=1))
    assert clone(tuner).get_params()["cv"] == 3


def test_prefit_needs_a_fitted_estimator_with_the_same_classes(wine):
    X, y = wine
    with pytest.raises(sklearn.exceptions.NotFittedError):
        ClassWeightTuner(model()).fit(X, y)
    two = model().fit(X[y != "barbera"], y[y != "barbera"])
    with pytest.raises(ValueError, match="classes"):
        ClassWeightTuner(two).fit(X, y)


def test_import_works_without_scikit_learn_and_use_says_what_to_install():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from logitkit.thresholds import ClassWeightTuner\n"
        "try:\n    ClassWeightTuner(None)\n"
        "except ImportError as e:\n    print('ERR', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ERR ClassWeightTuner needs scikit-learn" in done.stdout
