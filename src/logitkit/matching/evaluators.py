"""A sentence-transformers evaluator for what it lacks: a dev-tuned exact threshold, role swaps.

sentence-transformers' evaluators report Spearman correlation, and its binary evaluators pick the
best threshold on the very pairs they score. :class:`TunedThresholdEvaluator` tunes the threshold
of "similar iff score >= t" exactly on dev (0/1 labels as given, graded 0-5 labels at the STS
cutoff 3), then applies that same t to test and to a PAWS-like swap set
(:mod:`logitkit.matching.adversarial`), the way a deployed matcher would be used. Beside accuracy
it reports what ``BinaryClassificationEvaluator`` reports (F1, precision, recall at the F1-tuned
threshold, average precision, MCC), on dev and test. It works for a ``SentenceTransformer``
(cosine of the embeddings) and a ``CrossEncoder`` (its score), and can be passed as
``evaluator=`` to either trainer.

Example::

    from logitkit.matching import TunedThresholdEvaluator, load_bi_encoder, load_stsb, swap_set
    splits = load_stsb("stsbenchmark.tsv.gz")
    evaluator = TunedThresholdEvaluator(splits["dev"], splits["test"], swap_set(splits["test"]))
    print(evaluator(load_bi_encoder()))  # {'dev_accuracy': ..., 'test_accuracy': ..., ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logitkit._utils import require
from logitkit.matching.adversarial import SwapSet
from logitkit.matching.encoders import pair_scores
from logitkit.matching.evaluate import (
    PairSet,
    _check_both_classes,
    resolve_cutoff,
    threshold_metrics,
)

_evaluation = require("sentence_transformers.sentence_transformer.evaluation", extra="matching",
                      purpose="the sentence-transformers evaluator")


class TunedThresholdEvaluator(_evaluation.SentenceEvaluator):
    """Threshold tuned exactly on dev, applied to test and to a swap set; usable in training.

        t = argmax_t dev accuracy of "similar iff score >= t"; test and swap set use that t

    A sentence-transformers ``SentenceEvaluator``: pass it as ``evaluator=`` to either trainer, or
    call it on a model. Calling it scores the pairs (:func:`~logitkit.matching.pair_scores`) and
    returns :func:`~logitkit.matching.threshold_metrics` of those scores: dev-tuned ``threshold``
    and ``f1_threshold``; ``dev_*`` and ``test_*`` accuracy, F1, precision, recall (F1, precision,
    recall and MCC at the F1 threshold), average precision and Spearman; ``swap_set_*``
    (:func:`~logitkit.matching.evaluate.swap_metrics`). The primary metric is ``dev_accuracy``: a
    trainer that keeps the best checkpoint (``load_best_model_at_end``) then never selects on test
    or on the swap set.

    Args:
        dev: pairs whose gold scores tune the thresholds (and give the ``dev_*`` metrics).
        test: pairs scored at the dev thresholds (default None: no ``test_*`` metrics).
        swaps: a :class:`~logitkit.matching.adversarial.SwapSet` (default None: no swap metrics).
        cutoff: similar iff gold >= cutoff (default None: resolved from dev and test gold together).
        name: prefix of the metric names, as in sentence-transformers' evaluators (default "").
        batch_size: encoding / prediction batch size (default 64).

    Raises:
        ValueError: if dev has fewer than 2 pairs, the swap set is empty, dev or test gold holds
            one class only after the cutoff, or as
            :func:`~logitkit.matching.evaluate.resolve_cutoff` (checked here, before any encoding).

    Reference:
        sentence-transformers' ``BinaryClassificationEvaluator`` (the metrics, which it tunes on
        the pairs it scores); Zhang et al., "PAWS", NAACL 2019 (the swap set).

    Example:
        >>> import numpy as np
        >>> from logitkit.matching import PairSet, TunedThresholdEvaluator
        >>> dev = PairSet(["A man eats.", "A dog runs.", "A man cooks."],
        ...               ["A man is eating.", "A cat sleeps.", "A woman sings."],
        ...               np.array([4.8, 0.4, 1.0]))
        >>> evaluator = TunedThresholdEvaluator(dev)  # graded 0-5 gold: similar iff gold >= 3
        >>> evaluator.cutoff, evaluator.primary_metric
        (3.0, 'dev_accuracy')
        >>> from logitkit.matching import load_bi_encoder
        >>> metrics = evaluator(load_bi_encoder())  # all-MiniLM-L6-v2, 90 MB  # doctest: +SKIP
        >>> metrics["dev_accuracy"], round(metrics["threshold"], 4)  # doctest: +SKIP
        (1.0, 0.5645)
    """

    def __init__(self, dev: PairSet, test: PairSet | None = None, swaps: SwapSet | None = None,
                 *, cutoff: float | None = None, name: str = "", batch_size: int = 64) -> None:
        super().__init__()
        if len(dev) < 2:
            raise ValueError(f"dev needs at least 2 pairs, got {len(dev)}")
        if swaps is not None and len(swaps) == 0:
            raise ValueError("the swap set is empty")
        self.dev, self.test, self.swaps = dev, test, swaps
        self.cutoff = resolve_cutoff(dev.scores, None if test is None else test.scores,
                                     cutoff=cutoff)
        _check_both_classes(dev.scores, cutoff=self.cutoff, name="dev labels")
        if test is not None:
            _check_both_classes(test.scores, cutoff=self.cutoff, name="test labels")
        self.name, self.batch_size = name, batch_size
        self.primary_metric = "dev_accuracy"

    def _scores(self, model: Any, first: list[str], second: list[str]) -> np.ndarray:
        return pair_scores(model, first, second, batch_size=self.batch_size)

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
        """Score the pairs with ``model`` and return the metrics (prefixed with ``name``).

        Args:
            model: a ``SentenceTransformer`` or a ``CrossEncoder``.
            output_path: unused, part of sentence-transformers' evaluator interface (default None).
            epoch: training epoch, recorded in the model card data (default -1: not in training).
            steps: training step, recorded in the model card data (default -1: not in training).

        Returns:
            :func:`~logitkit.matching.threshold_metrics` of the scores, each name prefixed with
            ``name + "_"`` when ``name`` is set.

        Raises:
            TypeError: if ``model`` is neither a ``SentenceTransformer`` nor a ``CrossEncoder``.
        """
        dev_scores = self._scores(model, self.dev.sentences_a, self.dev.sentences_b)
        test_scores = test_gold = paraphrase_scores = swap_scores = None
        if self.test is not None:
            test_scores = self._scores(model, self.test.sentences_a, self.test.sentences_b)
            test_gold = self.test.scores
        if self.swaps is not None:
            n = len(self.swaps)
            both = self._scores(model, self.swaps.kept * 2,
                                [*self.swaps.paraphrase, *self.swaps.swapped])
            paraphrase_scores, swap_scores = both[:n], both[n:]
        metrics = threshold_metrics(dev_scores, self.dev.scores, test_scores, test_gold,
                                    paraphrase_scores, swap_scores, cutoff=self.cutoff)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the model card: ``{"cutoff": self.cutoff}``.

        Returns:
            A dict with the resolved cutoff.
        """
        return {"cutoff": self.cutoff}
