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
    check_both_classes,
    resolve_cutoff,
    threshold_metrics,
)

_evaluation = require("sentence_transformers.sentence_transformer.evaluation", extra="matching",
                      purpose="the sentence-transformers evaluator")


class TunedThresholdEvaluator(_evaluation.SentenceEvaluator):
    """Threshold tuned exactly on dev, applied to test and to a swap set; usable in training.

    Args:
        dev: pairs whose gold scores tune the threshold (and give dev accuracy and Spearman).
        test: optional pairs scored with the dev thresholds (accuracy; F1, precision, recall
            and MCC at the F1 threshold), by average precision and by Spearman.
        swaps: optional :class:`SwapSet`; its paraphrases and swaps are scored with the dev
            threshold (accuracy) and compared (how often a swap beats its own paraphrase).
        cutoff: a pair is "similar" when its gold score is >= cutoff. Default (None): resolved
            from dev and test gold together (:func:`~logitkit.matching.resolve_cutoff`): 0/1
            labels are binary (similar = 1), graded labels on STS's 0-5 scale use 3.
        name: prefix of the metric names, as in sentence-transformers' own evaluators.
        batch_size: encoding / prediction batch size.

    The primary metric is ``dev_accuracy``: a trainer that keeps the best checkpoint
    (``load_best_model_at_end``) then never selects on test or on the swap set. Dev or test
    gold with one class only after the cutoff is a ValueError here, before any encoding.
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
        check_both_classes(dev.scores, cutoff=self.cutoff, name="dev labels")
        if test is not None:
            check_both_classes(test.scores, cutoff=self.cutoff, name="test labels")
        self.name, self.batch_size = name, batch_size
        self.primary_metric = "dev_accuracy"

    def _scores(self, model: Any, first: list[str], second: list[str]) -> np.ndarray:
        return pair_scores(model, first, second, batch_size=self.batch_size)

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
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
        return {"cutoff": self.cutoff}
