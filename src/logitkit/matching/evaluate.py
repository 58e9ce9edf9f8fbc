"""Scored sentence pairs, the STS-B reader, and metrics: Spearman, accuracy at a tuned threshold.

Binary task ("similar" or not) from the gold labels, by :func:`resolve_cutoff`:

* labels that are all 0 or 1 are **binary**: similar iff label == 1 (no STS cutoff);
* other (graded) labels follow the STS convention: similar iff gold >= 3, for labels on STS's
  0-5 scale only (another scale needs an explicit ``cutoff``);
* an explicit ``cutoff`` always means "similar iff gold >= cutoff", binary labels included (any
  cutoff in (0, 1] keeps 0/1 labels as they are).

Tuning or scoring a threshold needs both classes: when the pairs that tune it (or the test pairs)
hold only one class after the cutoff, a ValueError names the counts and the cutoff, instead of a
constant rule reporting a perfect score.

The decision threshold on predicted scores is tuned on dev with
:func:`logitkit.thresholds.fit_threshold` (exact, rule "similar iff score >= t"), then applied on
test. Beside accuracy, :func:`binary_metrics` reports what sentence-transformers'
``BinaryClassificationEvaluator`` reports: F1, precision and recall at the F1-tuned threshold
(:func:`best_f1`), average precision and Matthews' correlation.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logitkit.thresholds import fit_threshold

STSB_SPLITS = ("train", "dev", "test")
SIMILAR_CUTOFF = 3.0  # graded labels: similar iff gold >= 3 (STS convention, 0-5 scale)
BINARY_CUTOFF = 1.0  # 0/1 labels: similar iff gold >= 1, i.e. label == 1
STS_SCALE = (0.0, 5.0)


@dataclass(frozen=True)
class PairSet:
    """Scored sentence pairs: ``sentences_a[i]``, ``sentences_b[i]`` and gold ``scores[i]``.

    A frozen dataclass; ``len(pairs)`` is the number of pairs. The gold scores are 0/1 labels or
    graded similarities (STS: 0-5); :func:`~logitkit.matching.evaluate.resolve_cutoff` says which
    pairs count as similar.

    Args:
        sentences_a: first sentence of each pair.
        sentences_b: second sentence of each pair, as many.
        scores: gold score of each pair, a 1-D float array (float64 by :func:`load_stsb`), as many.

    Raises:
        ValueError: if the three lengths differ.

    Reference: the STS Benchmark (Cer et al., SemEval 2017), scores 0-5.

    Example:
        >>> import numpy as np
        >>> from logitkit.matching import PairSet
        >>> pairs = PairSet(["A man is eating.", "A dog runs."], ["A man eats.", "A cat sleeps."],
        ...                 np.array([4.8, 0.4]))
        >>> len(pairs), pairs.pairs[1]
        (2, ('A dog runs.', 'A cat sleeps.'))
        >>> pairs.subset([1]).scores
        array([0.4])
    """

    sentences_a: list[str]
    sentences_b: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.sentences_a) == len(self.sentences_b) == len(self.scores):
            raise ValueError(
                f"a PairSet needs equal lengths, got {len(self.sentences_a)}, "
                f"{len(self.sentences_b)} and {len(self.scores)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The pairs as ``(sentences_a[i], sentences_b[i])`` tuples, in order."""
        return list(zip(self.sentences_a, self.sentences_b, strict=True))

    def subset(self, indices: Sequence[int] | np.ndarray) -> PairSet:
        """The pairs at ``indices`` (in that order, repeats allowed) as a new :class:`PairSet`.

        Args:
            indices: positions of the pairs to keep (ints, or a 1-D integer array).

        Returns:
            A PairSet of ``len(indices)`` pairs.

        Raises:
            IndexError: if an index is out of range.
        """
        indices = [int(i) for i in indices]
        return PairSet(
            [self.sentences_a[i] for i in indices],
            [self.sentences_b[i] for i in indices],
            self.scores[indices],
        )


def load_stsb(path: str | Path) -> dict[str, PairSet]:
    """Read the STS Benchmark file (plain or .gz TSV) into its ``train``/``dev``/``test`` splits.

    Columns: split, genre, dataset, year, sid, score, sentence1, sentence2 (an optional header
    line starting with ``split`` is skipped). Fields are split on tabs only (``csv.QUOTE_NONE``:
    quote characters are part of the sentences). Columns after the eighth, which some copies of
    the file carry (source notes), are ignored. Scores are STS's 0-5 similarity grades.

    Args:
        path: the TSV file, gzip-compressed when its name ends in ``.gz`` (str or Path).

    Returns:
        ``{"train": PairSet, "dev": PairSet, "test": PairSet}``, float64 scores, in file order.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for a line with fewer than 8 columns, a score that is not a number in [0, 5]
            or an unknown split name (the message gives the line number).

    Reference:
        Cer et al., "SemEval-2017 Task 1: Semantic Textual Similarity Multilingual and
        Cross-lingual Focused Evaluation", SemEval 2017 (the STS Benchmark).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from logitkit.matching import load_stsb
        >>> train = ["train", "captions", "MSRvid", "2012", "1", "5.0", "A man eats.", "He eats."]
        >>> dev = ["dev", "captions", "MSRvid", "2012", "2", "0.4", "A dog runs.", "A cat sleeps."]
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "sts-mini.tsv"
        ...     text = "".join("\\t".join(row) + "\\n" for row in (train, dev))
        ...     _ = path.write_text(text, encoding="utf-8")
        ...     splits = load_stsb(path)
        >>> {name: len(split) for name, split in splits.items()}
        {'train': 1, 'dev': 1, 'test': 0}
        >>> splits["dev"].pairs, splits["dev"].scores
        ([('A dog runs.', 'A cat sleeps.')], array([0.4]))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS Benchmark file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: dict[str, tuple[list[str], list[str], list[float]]] = {
        split: ([], [], []) for split in STSB_SPLITS
    }
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_number, fields in enumerate(reader, start=1):
            if not fields or (line_number == 1 and fields[0] == "split"):
                continue
            if len(fields) < 8:
                raise ValueError(f"{path}:{line_number}: expected >= 8 tab-separated columns, "
                                 f"got {len(fields)}")
            split, score_text, first, second = fields[0], fields[5], fields[6], fields[7]
            if split not in rows:
                raise ValueError(f"{path}:{line_number}: unknown split {split!r}, "
                                 f"expected one of {STSB_SPLITS}")
            try:
                score = float(score_text)
            except ValueError:
                raise ValueError(f"{path}:{line_number}: score {score_text!r} is not a number") \
                    from None
            if not 0.0 <= score <= 5.0:
                raise ValueError(f"{path}:{line_number}: score {score} is outside [0, 5]")
            rows[split][0].append(first)
            rows[split][1].append(second)
            rows[split][2].append(score)
    return {
        split: PairSet(a, b, np.asarray(scores, dtype=np.float64))
        for split, (a, b, scores) in rows.items()
    }


def _check_paired(predicted: object, gold: object) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if predicted.ndim != 1 or predicted.shape != gold.shape:
        raise ValueError(
            f"predicted and gold scores must be 1-D of equal length, got shapes "
            f"{predicted.shape} and {gold.shape}"
        )
    if predicted.size < 2:
        raise ValueError(f"need at least 2 pairs, got {predicted.size}")
    if not (np.isfinite(predicted).all() and np.isfinite(gold).all()):
        raise ValueError("predicted or gold scores contain NaN or infinite values")
    return predicted, gold


def spearman(predicted: object, gold: object) -> float:
    """Spearman rank correlation of predicted vs gold scores (``scipy.stats.spearmanr``).

        rho = Pearson correlation of rank(predicted) and rank(gold)  (ties share their mean rank)

    Args:
        predicted: 1-D array-like of predicted scores (at least 2, all finite).
        gold: 1-D array-like of gold scores, as many (all finite).

    Returns:
        rho, a float in [-1, 1].

    Raises:
        ValueError: for other shapes, unequal lengths, fewer than 2 pairs, NaN or infinite values,
            or constant predicted or gold scores (rho is undefined).

    Reference:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084), which evaluates the
        STS Benchmark (Cer et al., SemEval 2017) by Spearman's rank correlation.

    Example:
        >>> from logitkit.matching import spearman
        >>> round(spearman([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0]), 4)
        0.8
    """
    from scipy.stats import spearmanr  # imported here: the command line's --help stays fast

    predicted, gold = _check_paired(predicted, gold)
    if np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        raise ValueError("Spearman correlation is undefined when all scores are equal")
    return float(spearmanr(predicted, gold).statistic)


def _is_binary(gold: object) -> bool:
    """True when every gold label is 0 or 1 (booleans included) and there is at least one."""
    values = np.asarray(gold, dtype=np.float64).ravel()
    return values.size > 0 and bool(np.all((values == 0) | (values == 1)))


def resolve_cutoff(*golds: object, cutoff: float | None = None) -> float:
    """The cutoff of "similar iff gold >= cutoff" for these gold labels (``None`` arrays skipped).

    All the labels are resolved together (dev and test, say), by this convention:

    * ``cutoff`` given: used as it is, whatever the labels (0/1 labels keep their meaning for any
      cutoff in (0, 1]; any other cutoff leaves one class, which the metrics refuse).
    * every label 0 or 1 (booleans too): binary, :data:`BINARY_CUTOFF` (1: similar iff label == 1).
    * graded labels within STS's [0, 5]: :data:`SIMILAR_CUTOFF` (3, the STS convention).
    * graded labels outside [0, 5]: ValueError, the scale is unknown (pass ``cutoff``).
    * no label at all: :data:`SIMILAR_CUTOFF`.

    Args:
        *golds: array-likes of gold labels, resolved together; None entries are skipped.
        cutoff: explicit cutoff, a finite number (default None: from the labels, as above).

    Returns:
        The cutoff, a float.

    Raises:
        ValueError: for a non-finite ``cutoff``, NaN or infinite labels, or graded labels outside
            [0, 5] without an explicit ``cutoff``.

    Reference:
        Cer et al., "SemEval-2017 Task 1", SemEval 2017: the 0-5 scale of STS, where 3 reads
        "roughly equivalent, but some important information differs".

    Example:
        >>> from logitkit.matching.evaluate import resolve_cutoff
        >>> resolve_cutoff([0, 1, 1, 0])  # binary labels: similar iff label == 1
        1.0
        >>> resolve_cutoff([0.0, 1.0], [0.5, 4.2])  # dev and test together: graded, 0-5 scale
        3.0
        >>> resolve_cutoff([0, 1], cutoff=0.5)
        0.5
    """
    if cutoff is not None:
        value = float(cutoff)
        if not math.isfinite(value):
            raise ValueError(f"cutoff must be a finite number, got {cutoff!r}")
        return value
    arrays = [np.asarray(gold, dtype=np.float64).ravel() for gold in golds if gold is not None]
    values = np.concatenate(arrays) if arrays else np.empty(0)
    if values.size == 0:
        return SIMILAR_CUTOFF
    if not np.isfinite(values).all():
        raise ValueError("gold labels contain NaN or infinite values")
    if _is_binary(values):
        return BINARY_CUTOFF
    low, high = float(values.min()), float(values.max())
    if low < STS_SCALE[0] or high > STS_SCALE[1]:
        raise ValueError(
            f"gold labels range over [{low:g}, {high:g}]: neither 0/1 labels nor STS's 0-5 "
            f"scale, so the STS cutoff {SIMILAR_CUTOFF:g} does not apply; pass an explicit "
            "cutoff (similar iff gold >= cutoff)"
        )
    return SIMILAR_CUTOFF


def similar_labels(gold: object, *, cutoff: float | None = None) -> np.ndarray:
    """Binary gold labels: 1 where ``gold >= cutoff`` ("similar"), else 0.

    Args:
        gold: array-like of gold scores.
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of ``gold``, so 0/1
            labels stay as they are and graded 0-5 labels use 3).

    Returns:
        An int64 array of 0 and 1, of ``gold``'s shape.

    Raises:
        ValueError: as :func:`resolve_cutoff` (non-finite values, an unknown scale).

    Example:
        >>> from logitkit.matching.evaluate import similar_labels
        >>> similar_labels([2.99, 3.0, 4.5])  # graded 0-5 labels: the STS cutoff 3
        array([0, 1, 1])
        >>> similar_labels([0.2, 0.8], cutoff=0.5)
        array([0, 1])
    """
    gold = np.asarray(gold, dtype=np.float64)
    return (gold >= resolve_cutoff(gold, cutoff=cutoff)).astype(np.int64)


def _check_both_classes(gold: object, *, cutoff: float | None = None,
                        name: str = "gold labels") -> np.ndarray:
    """:func:`similar_labels`, after checking that both classes are present (else ValueError).

    With one class, a tuned threshold is the constant rule and scores 1.0 whatever the model;
    F1, average precision and MCC are undefined. The error names the counts, the cutoff and the
    range of the labels (and says when the cutoff lies outside it: labels on another scale).
    """
    gold = np.asarray(gold, dtype=np.float64)
    cutoff = resolve_cutoff(gold, cutoff=cutoff)
    labels = (gold >= cutoff).astype(np.int64)
    n_similar = int(labels.sum())
    if 0 < n_similar < labels.size:
        return labels
    low, high = float(gold.min()), float(gold.max())
    hint = ""
    if cutoff > high:
        hint = "; the cutoff lies above every label (labels on another scale need a cutoff on it)"
    elif cutoff <= low:
        hint = "; the cutoff lies at or below every label"
    raise ValueError(
        f"{name}: {n_similar} similar and {labels.size - n_similar} dissimilar pairs with "
        f"similar iff gold >= {cutoff:g} (gold labels in [{low:g}, {high:g}]); a threshold needs "
        f"both classes{hint}"
    )


def accuracy_at(predicted: object, gold: object, threshold: float, *,
                cutoff: float | None = None) -> float:
    """Accuracy of "similar iff predicted >= threshold" against :func:`similar_labels` of gold.

        accuracy = mean_i [(predicted_i >= threshold) == (gold_i >= cutoff)]

    Args:
        predicted: 1-D array-like of predicted scores (at least 2, all finite).
        gold: 1-D array-like of gold scores, as many (all finite).
        threshold: the decision threshold on the predicted scores.
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of ``gold``).

    Returns:
        The accuracy, a float in [0, 1].

    Raises:
        ValueError: for other shapes, unequal lengths, fewer than 2 pairs, NaN or infinite values,
            or as :func:`resolve_cutoff`.

    Example:
        >>> from logitkit.matching.evaluate import accuracy_at
        >>> accuracy_at([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0], 0.6)  # similar: 5.0 and 3.2
        0.5
    """
    predicted, gold = _check_paired(predicted, gold)
    return float(np.mean((predicted >= threshold) == similar_labels(gold, cutoff=cutoff)))


def tune_threshold(predicted: object, gold: object, *, cutoff: float | None = None) -> float:
    """The threshold t that maximises the accuracy of "similar iff predicted >= t" (exact).

        t = argmax_t mean_i [(predicted_i >= t) == similar_i],  similar_i = gold_i >= cutoff

    Labels are gold at the cutoff of :func:`resolve_cutoff` (0/1 as given, graded 0-5 at 3, or
    ``gold >= cutoff``). The search is :func:`logitkit.thresholds.fit_threshold` (sort once, every
    distinct score is a candidate; the midpoint between the two scores around the best cut, the
    lowest such t among equal accuracies). Tune it on dev, then apply it on test with
    :func:`~logitkit.matching.evaluate.accuracy_at`.

    Args:
        predicted: 1-D array-like of predicted scores (at least 2, all finite).
        gold: 1-D array-like of gold scores, as many (all finite).
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of ``gold``).

    Returns:
        t, a float.

    Raises:
        ValueError: if the labels hold one class only after the cutoff; for other shapes, unequal
            lengths, fewer than 2 pairs, NaN or infinite values; or as :func:`resolve_cutoff`.

    Reference: seed 002 (https://kexue.fm/archives/8860): a threshold on the similarity tuned on
    validation pairs; sentence-transformers' ``BinaryClassificationEvaluator`` tunes the same.

    Example:
        >>> from logitkit.matching import tune_threshold
        >>> tune_threshold([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0])  # 3 of 4 right at best
        0.375
    """
    predicted, gold = _check_paired(predicted, gold)
    labels = _check_both_classes(gold, cutoff=cutoff, name="tuning labels")
    return float(fit_threshold(predicted, labels, metric="accuracy"))


def best_f1(predicted: object, gold: object, *, cutoff: float | None = None) -> dict[str, float]:
    """The F1-optimal rule "similar iff predicted >= t", as sentence-transformers chooses it.

        F1 = 2 TP / (TP + FP + P),  precision = TP / (TP + FP),  recall = TP / P

    Conventions of ``BinaryClassificationEvaluator.find_best_f1_and_threshold``: over every cut
    between distinct scores (tied scores share a prediction), F1 is maximised (exactly, on the
    counts); among equal F1 the highest threshold wins (fewest "similar" predictions); t = the
    midpoint of the lowest score predicted similar and the next lower score (the lowest score itself
    when everything is similar, or when the midpoint rounds onto the lower score). F1 is reported
    as 2 p r / (p + r). Labels are gold at the cutoff of :func:`resolve_cutoff`.

    Args:
        predicted: 1-D array-like of predicted scores (at least 2, all finite).
        gold: 1-D array-like of gold scores, as many (all finite).
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of ``gold``).

    Returns:
        ``{"f1": ..., "precision": ..., "recall": ..., "threshold": t}``, floats.

    Raises:
        ValueError: if the labels hold one class only after the cutoff; for other shapes, unequal
            lengths, fewer than 2 pairs, NaN or infinite values; or as :func:`resolve_cutoff`.

    Reference:
        sentence-transformers' ``BinaryClassificationEvaluator`` (``find_best_f1_and_threshold``).

    Example:
        >>> from logitkit.matching.evaluate import best_f1
        >>> best_f1([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0])
        {'f1': 0.8, 'precision': 0.6666666666666666, 'recall': 1.0, 'threshold': 0.375}
    """
    predicted, gold = _check_paired(predicted, gold)
    labels = _check_both_classes(gold, cutoff=cutoff, name="tuning labels")
    order = np.argsort(-predicted, kind="stable")
    scores, sorted_labels = predicted[order], labels[order]
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last of each tie group
    tp = np.cumsum(sorted_labels)[ends]
    n_positive = int(labels.sum())
    best = int(np.argmax(2 * tp / (ends + 1 + n_positive)))  # first maximum: highest threshold
    end, hits = int(ends[best]), int(tp[best])
    threshold = float(scores[end])
    if end + 1 < scores.size:
        middle = (scores[end] + scores[end + 1]) / 2
        threshold = float(middle if middle != scores[end + 1] else scores[end])
    precision, recall = hits / (end + 1), hits / n_positive
    return {"f1": _f1(precision, recall), "precision": precision, "recall": recall,
            "threshold": threshold}


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def average_precision(predicted: object, labels: object) -> float:
    """Average precision of the ranking by ``predicted`` against 0/1 ``labels``.

        AP = sum_k (R_k - R_(k-1)) P_k over the distinct scores in decreasing order, R_0 = 0

    P_k and R_k are the precision and recall of "similar iff predicted >= k-th distinct score"
    (tied scores enter together); no interpolation, as scikit-learn's ``average_precision_score``.

    Args:
        predicted: 1-D array-like of predicted scores.
        labels: 1-D array-like of 0/1 labels, as many, with at least one 1 (not checked).

    Returns:
        AP, a float in [0, 1].

    Example:
        >>> from logitkit.matching.evaluate import average_precision
        >>> average_precision([0.9, 0.25, 0.5, 0.75], [1, 0, 1, 0])  # (1/2) 1 + (1/2) 2/3
        0.8333333333333333
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(-predicted, kind="stable")
    scores = predicted[order]
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp = np.cumsum(labels[order])[ends]
    precision, recall = tp / (ends + 1), tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews' correlation coefficient of 0/1 predictions against 0/1 labels.

        MCC = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)); 0 if a factor is 0

    Args:
        labels: numpy array of gold 0/1 labels (an array: lists are compared as a whole).
        predictions: numpy array of predicted 0/1 labels, of the same shape.

    Returns:
        MCC, a float in [-1, 1].

    Reference:
        Matthews, "Comparison of the predicted and observed secondary structure of T4 phage
        lysozyme", Biochimica et Biophysica Acta, 1975.

    Example:
        >>> import numpy as np
        >>> from logitkit.matching.evaluate import matthews_corrcoef
        >>> matthews_corrcoef(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0]))  # 2 / sqrt(12)
        0.5773502691896258
    """
    tp = float(np.sum((predictions == 1) & (labels == 1)))
    tn = float(np.sum((predictions == 0) & (labels == 0)))
    fp = float(np.sum((predictions == 1) & (labels == 0)))
    fn = float(np.sum((predictions == 0) & (labels == 1)))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator > 0 else 0.0


def binary_metrics(predicted: object, gold: object, *, threshold: float,
                   f1_threshold: float | None = None, cutoff: float | None = None,
                   name: str = "gold labels") -> dict[str, float]:
    """The metrics of sentence-transformers' ``BinaryClassificationEvaluator``, at given thresholds.

    * ``accuracy``: of "similar iff predicted >= threshold";
    * ``f1``, ``precision``, ``recall`` and ``mcc`` (Matthews' correlation): of "similar iff
      predicted >= f1_threshold", precision 0 when nothing is predicted similar;
    * ``ap``: :func:`average_precision` (no threshold).

    Labels are gold at the cutoff of :func:`resolve_cutoff`. On the pairs that tuned them
    (``threshold`` from :func:`tune_threshold`, ``f1_threshold`` from :func:`best_f1`) these are the
    evaluator's numbers; on held-out pairs, what the tuned thresholds give there.

    Args:
        predicted: 1-D array-like of predicted scores (at least 2, all finite).
        gold: 1-D array-like of gold scores, as many (all finite).
        threshold: threshold of the accuracy (keyword only).
        f1_threshold: threshold of F1, precision, recall and MCC (default None: ``threshold``).
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of ``gold``).
        name: what the labels are called in the one-class error (default "gold labels").

    Returns:
        ``{"accuracy", "f1", "precision", "recall", "ap", "mcc"}`` mapped to floats.

    Raises:
        ValueError: if the labels hold one class only after the cutoff (the message names ``name``);
            for other shapes, unequal lengths, fewer than 2 pairs, NaN or infinite values.

    Reference:
        sentence-transformers' ``BinaryClassificationEvaluator``.

    Example:
        >>> from logitkit.matching.evaluate import binary_metrics
        >>> metrics = binary_metrics([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0], threshold=0.375,
        ...                          f1_threshold=0.6)
        >>> {key: round(value, 4) for key, value in metrics.items()}
        {'accuracy': 0.75, 'f1': 0.5, 'precision': 0.5, 'recall': 0.5, 'ap': 0.8333, 'mcc': 0.0}
    """
    predicted, gold = _check_paired(predicted, gold)
    labels = _check_both_classes(gold, cutoff=cutoff, name=name)
    f1_threshold = threshold if f1_threshold is None else f1_threshold
    predictions = (predicted >= f1_threshold).astype(np.int64)
    hits = int(np.sum(predictions & labels))
    n_predicted = int(predictions.sum())
    precision = hits / n_predicted if n_predicted else 0.0
    recall = hits / int(labels.sum())
    return {
        "accuracy": float(np.mean((predicted >= threshold) == labels)),
        "f1": _f1(precision, recall),
        "precision": precision,
        "recall": recall,
        "ap": average_precision(predicted, labels),
        "mcc": matthews_corrcoef(labels, predictions),
    }


def swap_metrics(paraphrase_scores: object, swap_scores: object, threshold: float) -> dict:
    """How a matcher handles a swap set, given its scores and a decision threshold.

    Triple i has a paraphrase (label similar) and a role swap (label not similar) of one sentence:

    * ``accuracy``: over all 2n pairs, "similar iff score >= threshold" against those labels; the
      set is balanced, so 0.5 is what a constant gets.
    * ``paraphrase_accuracy`` = mean_i [paraphrase_i >= threshold], ``swap_accuracy`` = mean_i
      [swap_i < threshold]: the same on each half.
    * ``swap_above_paraphrase`` = mean_i [swap_i > paraphrase_i]: how often a swap scores strictly
      above its own paraphrase (0 for a matcher that always prefers the paraphrase).

    Args:
        paraphrase_scores: 1-D array-like, the score of each (kept, paraphrase) pair.
        swap_scores: 1-D array-like, the score of each (kept, swapped) pair, as many.
        threshold: the decision threshold, e.g. from :func:`tune_threshold` on dev.

    Returns:
        The four metrics above, floats in [0, 1].

    Raises:
        ValueError: if the arrays are not 1-D, differ in length or are empty.

    Reference:
        Zhang, Baldridge and He, "PAWS: Paraphrase Adversaries from Word Scrambling", NAACL 2019.

    Example:
        >>> from logitkit.matching.evaluate import swap_metrics
        >>> metrics = swap_metrics([0.9, 0.8, 0.6, 0.75], [0.5, 0.85, 0.4, 0.3], threshold=0.7)
        >>> metrics  # doctest: +NORMALIZE_WHITESPACE
        {'accuracy': 0.75, 'paraphrase_accuracy': 0.75, 'swap_accuracy': 0.75,
         'swap_above_paraphrase': 0.25}
    """
    paraphrase = np.asarray(paraphrase_scores, dtype=np.float64)
    swap = np.asarray(swap_scores, dtype=np.float64)
    if paraphrase.ndim != 1 or paraphrase.shape != swap.shape or paraphrase.size == 0:
        raise ValueError(
            f"need two non-empty 1-D score arrays of equal length, got shapes {paraphrase.shape} "
            f"and {swap.shape}"
        )
    paraphrase_correct = paraphrase >= threshold
    swap_correct = swap < threshold
    return {
        "accuracy": float(np.concatenate([paraphrase_correct, swap_correct]).mean()),
        "paraphrase_accuracy": float(paraphrase_correct.mean()),
        "swap_accuracy": float(swap_correct.mean()),
        "swap_above_paraphrase": float(np.mean(swap > paraphrase)),
    }


def threshold_metrics(
    dev_scores: object,
    dev_gold: object,
    test_scores: object | None = None,
    test_gold: object | None = None,
    paraphrase_scores: object | None = None,
    swap_scores: object | None = None,
    *,
    cutoff: float | None = None,
) -> dict[str, float]:
    """The metrics of :class:`~logitkit.matching.TunedThresholdEvaluator`, from given scores.

    The cutoff is resolved once from dev and test gold together (:func:`resolve_cutoff`: 0/1
    labels are binary, graded 0-5 labels use 3); dev and test must each hold both classes.
    ``threshold`` is tuned on dev for accuracy (:func:`tune_threshold`), ``f1_threshold`` for F1
    (:func:`best_f1`); ``dev_*`` and ``test_*`` are :func:`binary_metrics` at those two thresholds
    (accuracy, f1, precision, recall, ap, mcc) plus ``*_spearman``, the rank correlation with the
    gold scores. The swap-set metrics (prefixed ``swap_set_``, see :func:`swap_metrics`) use
    ``threshold``.

    Args:
        dev_scores: 1-D array-like of predicted scores of the dev pairs (they tune both thresholds).
        dev_gold: 1-D array-like of the dev gold scores, as many.
        test_scores: predicted scores of the test pairs (default None: no ``test_*`` metrics).
        test_gold: gold scores of the test pairs, given with ``test_scores`` (default None).
        paraphrase_scores: swap-set paraphrase scores (default None: no ``swap_set_*`` metrics).
        swap_scores: swap-set swap scores, given with ``paraphrase_scores`` (default None).
        cutoff: similar iff gold >= cutoff (default None: :func:`resolve_cutoff` of dev and test).

    Returns:
        A dict of floats: ``threshold``, ``f1_threshold``, ``dev_*``, and ``test_*`` and
        ``swap_set_*`` when given.

    Raises:
        ValueError: if only one of test scores and test gold is given, dev or test gold holds one
            class only after the cutoff, or as :func:`spearman`, :func:`binary_metrics` and
            :func:`swap_metrics` for bad arrays.

    Reference:
        sentence-transformers' ``BinaryClassificationEvaluator`` (the dev metrics);
        Zhang et al., "PAWS", NAACL 2019 (the swap set).

    Example:
        >>> from logitkit.matching import threshold_metrics
        >>> metrics = threshold_metrics([0.9, 0.25, 0.5, 0.75], [5.0, 0.0, 3.2, 1.0],
        ...                             [0.8, 0.1, 0.3, 0.6], [4.0, 1.0, 3.0, 0.5])
        >>> metrics["threshold"], metrics["dev_accuracy"], metrics["test_accuracy"]
        (0.375, 0.75, 0.5)
        >>> round(metrics["test_spearman"], 4)
        0.4
    """
    if (test_scores is None) != (test_gold is None):
        raise ValueError("test scores and test gold labels must be given together")
    cutoff = resolve_cutoff(dev_gold, test_gold, cutoff=cutoff)
    if test_gold is not None:  # refuse a one-class test set before any work
        _check_both_classes(test_gold, cutoff=cutoff, name="test labels")
    threshold = tune_threshold(dev_scores, dev_gold, cutoff=cutoff)
    f1_threshold = best_f1(dev_scores, dev_gold, cutoff=cutoff)["threshold"]
    metrics = {"threshold": threshold, "f1_threshold": f1_threshold}
    splits = [("dev", dev_scores, dev_gold)]
    if test_scores is not None:
        splits.append(("test", test_scores, test_gold))
    for split, scores, gold in splits:
        values = binary_metrics(scores, gold, threshold=threshold, f1_threshold=f1_threshold,
                                cutoff=cutoff, name=f"{split} labels")
        values["spearman"] = spearman(scores, gold)
        metrics.update({f"{split}_{key}": value for key, value in values.items()})
    if paraphrase_scores is not None:
        swaps = swap_metrics(paraphrase_scores, swap_scores, threshold)
        metrics.update({f"swap_set_{key}": value for key, value in swaps.items()})
    return metrics
