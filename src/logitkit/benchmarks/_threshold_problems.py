"""Class-probability problems for ``logitkit bench thresholds``: real model outputs and Zipf data.

Every problem is ``(probs, labels)`` over all its rows; the benchmark splits it into a validation
and a test half (:func:`split_halves`). Real outputs are out-of-fold ``predict_proba`` (stratified
5-fold ``cross_val_predict``) of scikit-learn models, computed here in a few seconds on 2 cores
with no download:

* ``digits``: the 1797 8x8 digit images bundled with scikit-learn (n = 10); GaussianNB (badly
  calibrated, many probabilities exactly 0 or 1) or a logistic regression on standardised pixels.
* ``text``: next-word prediction among the ``n`` most frequent words of a real English text
  (Grimms' fairy tales, ``lm/grimm_tales.txt`` of the shared data folder; without that folder, the
  docstrings of Python's standard library, as ``logitkit.experiments`` does), restricted to the
  positions whose next word is one of them; features: the previous two words, one-hot over the
  1000 most frequent words (+ one "other" slot each); models: MultinomialNB or a multinomial
  logistic regression (SAG, 30 epochs).

There is no "covtype-like" tabular problem: ``fetch_covtype`` downloads, and the tabular data
bundled with scikit-learn (iris, wine, breast cancer) has at most 3 classes.
"""

from __future__ import annotations

import collections
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TEXT_FILE = "lm/grimm_tales.txt"
FEATURE_VOCAB = 1000  # previous-word features: the most frequent words, + one "other" slot
MIN_PER_CLASS = 5  # rows of every class in a text problem: a class in every fold and both halves
FOLDS = 5


@dataclass
class Problem:
    """One problem: probabilities (N, n) and labels (N,), with a name and a description."""

    name: str
    n: int
    probs: np.ndarray
    labels: np.ndarray
    source: str
    kind: str = "real"  # "real" model outputs or "synthetic"
    info: dict = field(default_factory=dict)


def shared_data_dir() -> Path | None:
    """$LOGITKIT_SHARED_DATA, else ``../shared/data`` beside the working directory or the source
    checkout; None when absent."""
    override = os.environ.get("LOGITKIT_SHARED_DATA")
    if override:
        candidates = [Path(override)]
    else:
        here = Path(__file__).resolve()
        candidates = [Path.cwd().parent / "shared" / "data"]
        if len(here.parents) > 3:  # src/logitkit/benchmarks/ -> the checkout's parent
            candidates.append(here.parents[3].parent / "shared" / "data")
    return next((path for path in candidates if path.is_dir()), None)


def split_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation/test halves, stratified so that both contain every class."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        val.append(rows[: rows.size // 2])
        test.append(rows[rows.size // 2:])
    return np.concatenate(val), np.concatenate(test)


def zipf_problem(n_classes: int, n_samples: int, seed: int) -> Problem:
    """Zipf-imbalanced labels (p_c ~ 1/(c+1)); probabilities a softmax of noisy logits (signal on
    the true class) plus a per-class bias, so argmax is mis-calibrated."""
    rng = np.random.default_rng(seed)
    prior = 1.0 / np.arange(1, n_classes + 1)
    labels = rng.choice(n_classes, size=n_samples, p=prior / prior.sum())
    labels[:2 * n_classes] = np.tile(np.arange(n_classes), 2)  # every class in both halves
    logits = rng.normal(0.0, 1.5, size=(n_samples, n_classes))
    logits[np.arange(n_samples), labels] += 2.5
    logits += rng.normal(0.0, 1.0, size=n_classes)  # per-class bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return Problem("zipf", n_classes, probs / probs.sum(axis=1, keepdims=True), labels,
                   "synthetic: Zipf priors, softmax of noisy logits + per-class bias",
                   kind="synthetic")


def _out_of_fold(model, features, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # SAG's ConvergenceWarning: 30 epochs is the budget we chose
        warnings.simplefilter("ignore")
        probs = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


DIGITS_MODELS = ("gaussian_nb", "logreg")


def digits_problem(model: str = "gaussian_nb", seed: int = 0) -> Problem:
    """Out-of-fold probabilities of ``model`` on the 1797 bundled digits (n = 10)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimators = {
        "gaussian_nb": (GaussianNB(), "GaussianNB"),
        "logreg": (make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500)),
                   "LogisticRegression(C=0.1) on standardised pixels"),
    }
    if model not in estimators:
        raise ValueError(f"model must be one of {sorted(estimators)}, got {model!r}")
    features, labels = load_digits(return_X_y=True)
    estimator, label = estimators[model]
    probs = _out_of_fold(estimator, features, labels, seed)
    return Problem(f"digits {model}", 10, probs, labels,
                   f"sklearn load_digits (1797 rows); out-of-fold {FOLDS}-fold predict_proba of "
                   f"{label}", info={"argmax_accuracy": float((probs.argmax(1) == labels).mean())})


def load_corpus(data_dir: Path | None = None) -> tuple[str, str]:
    """The real text (``TEXT_FILE`` under ``data_dir``, by default :func:`shared_data_dir`), or the
    standard-library docstrings when it is absent; with a label saying which."""
    data_dir = data_dir if data_dir is not None else shared_data_dir()
    if data_dir is not None and (data_dir / TEXT_FILE).is_file():
        return (data_dir / TEXT_FILE).read_text(encoding="utf-8"), TEXT_FILE
    from logitkit.experiments._text import embedded_text

    text = embedded_text("pretrain") + "\n\n" + embedded_text("finetune")
    where = "no data folder" if data_dir is None else f"no {TEXT_FILE} in {data_dir}"
    return text, f"embedded stdlib docstrings ({where})"


def words_of(text: str) -> list[str]:
    """Lower-case words (letters, with an inner apostrophe)."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


TEXT_MODELS = ("multinomial_nb", "logreg")


def text_problem(n_classes: int, rows: int, model: str = "multinomial_nb", *,
                 corpus: tuple[str, str] | None = None, seed: int = 0) -> Problem:
    """Next word among the ``n_classes`` most frequent words, from the previous two words.

    ``rows`` positions are drawn at random among those whose next word is a class (all of them
    when fewer), with at least ``MIN_PER_CLASS`` of every class; out-of-fold probabilities of
    ``model`` ("multinomial_nb" or "logreg"). ``corpus``: ``(text, label)``, by default
    :func:`load_corpus`.
    """
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB

    estimators = {
        "multinomial_nb": (MultinomialNB(alpha=0.1), "MultinomialNB(alpha=0.1)"),
        "logreg": (LogisticRegression(solver="sag", max_iter=30, tol=1e-3, random_state=seed),
                   "LogisticRegression (multinomial, SAG, 30 epochs)"),
    }
    if model not in estimators:
        raise ValueError(f"model must be one of {sorted(estimators)}, got {model!r}")
    text, label = corpus if corpus is not None else load_corpus()
    words = words_of(text)
    ranked = [word for word, _ in collections.Counter(words).most_common(FEATURE_VOCAB)]
    vocab = {word: rank for rank, word in enumerate(ranked)}
    ids = np.array([vocab.get(word, FEATURE_VOCAB) for word in words])
    # position i: features ids[i], ids[i - 1]; target ids[i + 1], one of the n_classes first ranks
    eligible = np.flatnonzero(ids[2:] < n_classes) + 1
    targets = ids[eligible + 1]
    counts = np.bincount(targets, minlength=n_classes)
    if counts.min() < MIN_PER_CLASS:
        raise ValueError(f"the text has {counts.min()} positions for its rarest class of "
                         f"{n_classes}, {MIN_PER_CLASS} needed")
    rng = np.random.default_rng(seed)
    forced = np.concatenate([rng.choice(np.flatnonzero(targets == c), MIN_PER_CLASS,
                                        replace=False) for c in range(n_classes)])
    rest = rng.permutation(np.setdiff1d(np.arange(eligible.size), forced))
    chosen = np.sort(np.concatenate([forced, rest[:max(0, rows - forced.size)]]))
    positions, labels = eligible[chosen], targets[chosen]
    columns = np.stack([ids[positions], FEATURE_VOCAB + 1 + ids[positions - 1]], axis=1)
    features = sp.csr_matrix(
        (np.ones(columns.size), (np.repeat(np.arange(positions.size), 2), columns.ravel())),
        shape=(positions.size, 2 * (FEATURE_VOCAB + 1)))
    estimator, model_label = estimators[model]
    probs = _out_of_fold(estimator, features, labels, seed)
    return Problem(
        f"text {model}", n_classes, probs, labels,
        f"next word among the {n_classes} most frequent of {label} ({len(words)} words; "
        f"{positions.size} of {eligible.size} positions), previous 2 words one-hot; out-of-fold "
        f"{FOLDS}-fold predict_proba of {model_label}",
        info={"corpus": label, "positions_available": int(eligible.size),
              "argmax_accuracy": float((probs.argmax(1) == labels).mean())})
