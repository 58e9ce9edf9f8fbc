"""Pair matching: the CoSENT loss, bi-/cross-encoders over ``transformers``, and their evaluation.

``transformers`` (extra ``hf``) is imported only when a model is loaded, so the loss and the
evaluation helpers work without it.
"""

from logitkit.matching.cosent import cosent_loss
from logitkit.matching.encoders import (
    BiEncoder,
    CrossEncoder,
    SoftmaxHead,
    load_pretrained,
    mean_pool,
    minilm_path,
    predict_scores,
    similarity_classes,
    train_bi_encoder,
    train_cross_encoder,
)
from logitkit.matching.evaluate import (
    PairSet,
    ThresholdedAccuracy,
    accuracy_at,
    adversarial_mask,
    load_stsb,
    similar_labels,
    spearman,
    tuned_accuracy,
    word_overlap,
)

__all__ = [
    "BiEncoder",
    "CrossEncoder",
    "PairSet",
    "SoftmaxHead",
    "ThresholdedAccuracy",
    "accuracy_at",
    "adversarial_mask",
    "cosent_loss",
    "load_pretrained",
    "load_stsb",
    "mean_pool",
    "minilm_path",
    "predict_scores",
    "similar_labels",
    "similarity_classes",
    "spearman",
    "train_bi_encoder",
    "train_cross_encoder",
    "tuned_accuracy",
    "word_overlap",
]
