"""Scored sentence pairs, the STS-B reader, and metrics: Spearman, accuracy at a tuned threshold.

The binary task follows the usual STS convention: a pair is "similar" when its gold score is
at least 3 (of 5). The decision threshold on predicted scores is tuned on dev with
:func:`logitkit.thresholds.fit_threshold` (exact, rule "similar iff score >= t"), then applied
on test.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from logitkit.thresholds import fit_threshold

STSB_SPLITS = ("train", "dev", "test")
SIMILAR_CUTOFF = 3.0


@dataclass(frozen=True)
class PairSet:
    """Scored sentence pairs: ``sentences_a[i]``, ``sentences_b[i]`` and gold ``scores[i]``."""

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
        return list(zip(self.sentences_a, self.sentences_b, strict=True))

    def subset(self, indices: Sequence[int] | np.ndarray) -> PairSet:
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
    the file carry (source notes), are ignored. A line with fewer than 8 columns, a score that is
    not a number in [0, 5] or an unknown split name raises ValueError with its line number.
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
    """Spearman rank correlation of predicted vs gold scores (``scipy.stats.spearmanr``)."""
    predicted, gold = _check_paired(predicted, gold)
    if np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        raise ValueError("Spearman correlation is undefined when all scores are equal")
    return float(spearmanr(predicted, gold).statistic)


def similar_labels(gold: object, *, cutoff: float = SIMILAR_CUTOFF) -> np.ndarray:
    """Binary gold labels: 1 where ``gold >= cutoff`` ("similar"), else 0."""
    return (np.asarray(gold, dtype=np.float64) >= cutoff).astype(np.int64)


def accuracy_at(predicted: object, gold: object, threshold: float, *,
                cutoff: float = SIMILAR_CUTOFF) -> float:
    """Accuracy of "similar iff predicted >= threshold" against "similar iff gold >= cutoff"."""
    predicted, gold = _check_paired(predicted, gold)
    return float(np.mean((predicted >= threshold) == (gold >= cutoff)))


def tune_threshold(predicted: object, gold: object, *, cutoff: float = SIMILAR_CUTOFF) -> float:
    """The threshold t that maximises the accuracy of "similar iff predicted >= t" (exact).

    Labels are "similar iff gold >= cutoff"; the search is
    :func:`logitkit.thresholds.fit_threshold` (sort once, every distinct score is a candidate).
    When every label is the same, the constant rule is exact: t = the smallest score (all
    similar) or just above the largest (none similar). Tune it on dev, then apply it on test
    with :func:`accuracy_at`.
    """
    predicted, gold = _check_paired(predicted, gold)
    labels = similar_labels(gold, cutoff=cutoff)
    if labels.min() == labels.max():
        return float(predicted.min() if labels[0] else np.nextafter(predicted.max(), np.inf))
    return float(fit_threshold(predicted, labels, metric="accuracy"))


def swap_metrics(paraphrase_scores: object, swap_scores: object, threshold: float) -> dict:
    """How a matcher handles a swap set, given its scores and a decision threshold.

    * ``accuracy``: over all 2n pairs, "similar iff score >= threshold" against the labels
      (paraphrases similar, swaps not); the set is balanced, so 0.5 is what a constant gets.
    * ``paraphrase_accuracy`` / ``swap_accuracy``: the same on each half.
    * ``swap_above_paraphrase``: fraction of triples whose swap scores strictly above its own
      paraphrase (0 for a matcher that always prefers the paraphrase).
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
    cutoff: float = SIMILAR_CUTOFF,
) -> dict[str, float]:
    """The metrics of :class:`TunedThresholdEvaluator`, from scores already computed.

    ``threshold`` is tuned on dev (:func:`tune_threshold`); ``dev_accuracy``, ``test_accuracy``
    and the swap-set metrics (prefixed ``swap_set_``, see :func:`swap_metrics`) use it;
    ``dev_spearman`` / ``test_spearman`` are rank correlations with the gold scores.
    """
    threshold = tune_threshold(dev_scores, dev_gold, cutoff=cutoff)
    metrics = {
        "threshold": threshold,
        "dev_accuracy": accuracy_at(dev_scores, dev_gold, threshold, cutoff=cutoff),
        "dev_spearman": spearman(dev_scores, dev_gold),
    }
    if test_scores is not None:
        metrics["test_accuracy"] = accuracy_at(test_scores, test_gold, threshold, cutoff=cutoff)
        metrics["test_spearman"] = spearman(test_scores, test_gold)
    if paraphrase_scores is not None:
        swaps = swap_metrics(paraphrase_scores, swap_scores, threshold)
        metrics.update({f"swap_set_{key}": value for key, value in swaps.items()})
    return metrics
