"""ClassWeightTuner (scikit-learn meta-estimator): scikit-learn's own checks, prefit and CV use."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    StratifiedKFold,
    cross_val_predict,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

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


def naive_softmax(row):
    top = max(row)
    exp = [np.exp(x - top) for x in row]
    return [e / sum(exp) for e in exp]


# ---------------------------------------------------------------- scikit-learn's checks


def expected_failures(estimator):
    """Checks that fail by design, declared as scikit-learn declares them for its own
    TunedThresholdClassifierCV and LinearSVC."""
    if isinstance(estimator.estimator, LinearSVC):
        reason = ("LinearSVC (dual=True) itself: sample_weight is not equivalent to "
                  "removing/repeating samples; scikit-learn declares the same for LinearSVC")
        return {"check_sample_weight_equivalence_on_dense_data": reason,
                "check_sample_weight_equivalence_on_sparse_data": reason}
    return {}


@parametrize_with_checks([ClassWeightTuner(LogisticRegression())],
                         expected_failed_checks=expected_failures)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([ClassWeightTuner(LinearSVC()),
                          ClassWeightTuner(LinearSVC(), metric="macro_f1"),
                          ClassWeightTuner(LogisticRegression(), metric="balanced_accuracy"),
                          ClassWeightTuner(LogisticRegression(), metric="recall_macro"),
                          ClassWeightTuner(LogisticRegression(), metric="macro_f1",
                                           method="coordinate", shrink="cv")],
                         expected_failed_checks=expected_failures)
def test_scikit_learn_checks_other_settings(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return X, NAMES[y]  # string labels: the tuner must map them through classes_


def model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))


def out_of_fold_predictions(tuner, X, y):
    """The tuner's decisions on the held-out scores it was tuned on (same folds as its fit)."""
    scores = cross_val_predict(model(), X, y, cv=StratifiedKFold(3), method="predict_proba")
    return tuner.classes_[np.argmax(scores * tuner.weights_, axis=1)]


def test_any_scorer_or_function_is_tuned_and_reported(wine):
    from sklearn.metrics import fbeta_score, make_scorer, recall_score

    X, y = wine
    y = np.where(np.arange(y.size) % 7 == 0, "barbera", y)  # some label noise: room to tune
    cv = StratifiedKFold(3)
    by_name = ClassWeightTuner(model(), metric="f1_macro", cv=cv).fit(X, y)
    ours = ClassWeightTuner(model(), metric="macro_f1", cv=cv).fit(X, y)
    np.testing.assert_array_equal(by_name.weights_, ours.weights_)
    for metric, reference in [
            ("recall_macro", lambda a, b: recall_score(a, b, average="macro")),
            (make_scorer(fbeta_score, beta=2, average="macro"),
             lambda a, b: fbeta_score(a, b, beta=2, average="macro")),
            (lambda a, b: float(np.mean((a == b) | (a != "barbera"))),  # string labels
             lambda a, b: float(np.mean((a == b) | (a != "barbera"))))]:
        tuner = ClassWeightTuner(model(), metric=metric, cv=cv).fit(X, y)
        preds = out_of_fold_predictions(tuner, X, y)
        assert tuner.tuned_score_ == pytest.approx(reference(y, preds), abs=1e-12)
        assert tuner.score_bound_ == np.inf
        argmax = tuner.classes_[np.argmax(cross_val_predict(
            model(), X, y, cv=cv, method="predict_proba"), axis=1)]
        assert tuner.tuned_score_ >= reference(y, argmax)


def test_a_cost_matrix_and_the_f1_of_one_class(wine):
    from sklearn.metrics import f1_score

    X, y = wine
    cost = np.array([[0.0, 1.0, 1.0], [5.0, 0.0, 5.0], [1.0, 1.0, 0.0]])  # classes_ order
    cv = StratifiedKFold(3)
    tuner = ClassWeightTuner(model(), metric=cost, cv=cv).fit(X, y)
    preds = np.searchsorted(tuner.classes_, out_of_fold_predictions(tuner, X, y))
    truth = np.searchsorted(tuner.classes_, y)
    assert tuner.tuned_score_ == pytest.approx(-cost[truth, preds].mean(), abs=1e-12)
    tuner = ClassWeightTuner(model(), metric="f1", pos_label="grignolino", cv=cv).fit(X, y)
    preds = out_of_fold_predictions(tuner, X, y)
    assert tuner.tuned_score_ == pytest.approx(
        f1_score(y, preds, labels=["grignolino"], average="macro"))
    with pytest.raises(ValueError, match="pos_label"):
        ClassWeightTuner(model(), metric="f1", cv=cv).fit(X, y)  # no class 1 among the names
    with pytest.raises(ValueError, match="probabilities"):
        ClassWeightTuner(model(), metric="neg_log_loss", cv=cv).fit(X, y)


def test_prefit_tunes_on_the_given_data_and_predicts_weighted_argmax(wine):
    X, y = wine
    rng = np.random.default_rng(0)
    train = rng.permutation(len(y))[: len(y) // 2]
    held_out = np.setdiff1d(np.arange(len(y)), train)
    base = model().fit(X[train], y[train])
    tuner = ClassWeightTuner(base, cv="prefit").fit(X[held_out], y[held_out])
    assert tuner.estimator_ is base
    assert tuner.classes_.tolist() == sorted(NAMES.tolist())
    assert tuner.weights_.shape == (3,) and tuner.weights_.max() == 1.0
    probs = base.predict_proba(X[held_out])
    expected = [tuner.classes_[int(np.argmax(row * tuner.weights_))] for row in probs]
    assert tuner.predict(X[held_out]).tolist() == expected
    reweighted = probs * tuner.weights_
    np.testing.assert_allclose(tuner.predict_proba(X[held_out]),
                               reweighted / reweighted.sum(axis=1, keepdims=True))
    assert naive_accuracy(y[held_out], expected) >= base.score(X[held_out], y[held_out])
    assert tuner.score(X[held_out], y[held_out]) == naive_accuracy(y[held_out], expected)


def test_default_is_cross_validated_and_survives_clone(wine):
    X, y = wine
    tuner = ClassWeightTuner(model(), metric="macro_f1")
    scores = cross_val_score(tuner, X, y, cv=3)  # clones the unfitted tuner for each fold
    assert scores.shape == (3,) and np.all(scores > 0.8)
    fitted = clone(tuner).fit(X, y)
    refit = model().fit(X, y)
    np.testing.assert_allclose(fitted.estimator_.predict_proba(X), refit.predict_proba(X))
    folds = StratifiedKFold(5)
    oof = cross_val_predict(model(), X, y, cv=folds, method="predict_proba")
    codes = np.searchsorted(fitted.classes_, y)
    # the weights were tuned on out-of-fold probabilities, not on the refitted model's
    np.testing.assert_array_equal(fitted.weights_,
                                  fit_class_weights(oof, codes, metric="macro_f1"))
    assert naive_macro_f1(codes, np.argmax(oof * fitted.weights_, axis=1)) >= naive_macro_f1(
        codes, np.argmax(oof, axis=1))


def test_a_frozen_prefit_model_survives_clone(wine):
    X, y = wine
    base = model().fit(X[::2], y[::2])
    tuner = ClassWeightTuner(FrozenEstimator(base), cv="prefit")
    scores = cross_val_score(tuner, X[1::2], y[1::2], cv=3)  # tunes weights only, per fold
    assert scores.shape == (3,)
    fitted = clone(tuner).fit(X[1::2], y[1::2])
    np.testing.assert_allclose(fitted.estimator_.predict_proba(X), base.predict_proba(X))


def test_decision_function_models_get_softmax_scores_and_additive_offsets(wine):
    X, y = wine
    for labels in (y, np.where(y == "barolo", "barolo", "other")):  # 3 classes, then binary
        svc = make_pipeline(StandardScaler(), LinearSVC(C=0.01))
        tuner = ClassWeightTuner(svc, cv=3).fit(X, labels)
        assert not hasattr(tuner, "predict_proba")
        decision = tuner.estimator_.decision_function(X)
        rows = np.column_stack([np.zeros(len(X)), decision]) if decision.ndim == 1 else decision
        expected = [tuner.classes_[int(np.argmax(np.array(naive_softmax(r)) * tuner.weights_))]
                    for r in rows.tolist()]
        assert tuner.predict(X).tolist() == expected
        shifted = tuner.decision_function(X)
        if shifted.ndim == 1:
            assert (tuner.classes_[(shifted > 0).astype(int)] == tuner.predict(X)).all()
        else:
            assert (tuner.classes_[shifted.argmax(axis=1)] == tuner.predict(X)).all()


def test_sample_weight_reaches_the_model_and_the_tuned_metric(wine):
    X, y = wine
    X = StandardScaler().fit_transform(X)  # a pipeline's fit takes no plain sample_weight
    weight = np.random.default_rng(1).integers(1, 4, size=len(y)).astype(float)
    tuner = ClassWeightTuner(LogisticRegression(C=0.05), cv=3).fit(X, y, sample_weight=weight)
    refit = LogisticRegression(C=0.05).fit(X, y, sample_weight=weight)
    np.testing.assert_allclose(tuner.estimator_.coef_, refit.coef_)
    oof = cross_val_predict(LogisticRegression(C=0.05), X, y,
                            cv=StratifiedKFold(3), method="predict_proba",
                            params={"sample_weight": weight})
    codes = np.searchsorted(tuner.classes_, y)
    np.testing.assert_array_equal(tuner.weights_,
                                  fit_class_weights(oof, codes, sample_weight=weight))
    with pytest.raises(ValueError, match="does not accept sample_weight"):
        ClassWeightTuner(model(), cv=3).fit(X, y, sample_weight=weight)


def test_a_class_absent_from_the_validation_data(wine):
    X, y = wine
    base = model().fit(X, y)
    no_barbera = y != "barbera"
    tuner = ClassWeightTuner(base, cv="prefit").fit(X[no_barbera], y[no_barbera])
    assert tuner.classes_.tolist() == sorted(NAMES.tolist())  # still predicts all three
    assert np.all(tuner.weights_ > 0)
    assert "barbera" in set(tuner.predict(X[~no_barbera]))
    with pytest.raises(ValueError, match="does not know"):
        ClassWeightTuner(model().fit(X[no_barbera], y[no_barbera]), cv="prefit").fit(X, y)
    # a class rarer than the folds: some training folds lack it, the tuner still fits
    rare = np.concatenate([np.flatnonzero(y != "barbera"), np.flatnonzero(y == "barbera")[:2]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about the fold without it
        fitted = ClassWeightTuner(model(), cv=3).fit(X[rare], y[rare])
    assert fitted.weights_.shape == (3,)


def test_prefit_needs_a_fitted_estimator(wine):
    X, y = wine
    with pytest.raises(sklearn.exceptions.NotFittedError):
        ClassWeightTuner(model(), cv="prefit").fit(X, y)


def test_import_works_without_scikit_learn_and_use_says_what_to_install():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from logitkit.thresholds import ClassWeightTuner\n"
        "try:\n    ClassWeightTuner(None)\n"
        "except ImportError as e:\n    print('ERR', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ERR ClassWeightTuner needs the Python package 'sklearn'" in done.stdout
    assert 'pip install "logitkit[sklearn]"' in done.stdout
