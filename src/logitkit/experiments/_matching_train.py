"""Glue for the matching experiment: sentence-transformers trainers on a PairSet, a tiny model.

Objectives (all sentence-transformers' own), for a pair with gold score y in [0, 5]:

* ``cosent``: ``CoSENTLoss`` (scale 20) on the cosine, labels y (only their order matters);
* ``cosine_mse``: ``CosineSimilarityLoss``, MSE between the cosine and y / 5 (Sentence-BERT);
* ``softmax``: ``SoftmaxLoss``, cross-entropy of a linear layer on [u, v, |u - v|] against y
  binned into 3 classes (:func:`similarity_classes`); the layer is thrown away (Sentence-BERT);
* ``bce``: the cross-encoder's ``BinaryCrossEntropyLoss`` of its logit against y / 5.

Every run uses AdamW with linear warm-up (10% of the steps) and decay (the Trainer's defaults
but for the warm-up).
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitkit._utils import require
from logitkit.matching import PairSet

BI_OBJECTIVES = ("cosent", "cosine_mse", "softmax")
CROSS_OBJECTIVE = "bce"
COSENT_SCALE = 20.0
MAX_SCORE = 5.0
N_CLASSES = 3
WARMUP_RATIO = 0.1


def similarity_classes(scores: np.ndarray) -> np.ndarray:
    """Bin scores in [0, 5] into 3 equal-width classes: ``min(floor(3 y / 5), 2)``.

    [0, 5/3) -> 0, [5/3, 10/3) -> 1, [10/3, 5] -> 2: how the Sentence-BERT softmax objective, made
    for NLI's 3 labels, is applied to STS scores here.
    """
    return np.minimum(np.floor(N_CLASSES * np.asarray(scores) / MAX_SCORE), N_CLASSES - 1
                      ).astype(np.int64)


def _labels(objective: str, scores: np.ndarray) -> list:
    if objective == "cosent":
        return scores.tolist()
    if objective == "softmax":
        return similarity_classes(scores).tolist()
    return (scores / MAX_SCORE).tolist()


def _loss(objective: str, model: Any) -> Any:
    st_losses = require("sentence_transformers.sentence_transformer.losses", extra="matching",
                        purpose="training a bi-encoder")
    if objective == "cosent":
        return st_losses.CoSENTLoss(model, scale=COSENT_SCALE)
    if objective == "cosine_mse":
        return st_losses.CosineSimilarityLoss(model)
    if objective == "softmax":
        return st_losses.SoftmaxLoss(model, model.get_embedding_dimension(), N_CLASSES)
    ce_losses = require("sentence_transformers.cross_encoder.losses", extra="matching",
                        purpose="training a cross-encoder")
    return ce_losses.BinaryCrossEntropyLoss(model)


def train(model: Any, objective: str, pairs: PairSet, *, lr: float, epochs: int,
          batch_size: int, seed: int) -> None:
    """Fine-tune ``model`` in place with sentence-transformers' trainer for its kind."""
    if objective not in (*BI_OBJECTIVES, CROSS_OBJECTIVE):
        raise ValueError(f"unknown objective {objective!r}")
    st = require("sentence_transformers", extra="matching", purpose="training encoders")
    datasets = require("datasets", extra="matching", purpose="training encoders")
    data = datasets.Dataset.from_dict({"sentence1": pairs.sentences_a,
                                       "sentence2": pairs.sentences_b,
                                       "label": _labels(objective, pairs.scores)})
    cross = objective == CROSS_OBJECTIVE
    arguments_class = (st.CrossEncoderTrainingArguments if cross
                       else st.SentenceTransformerTrainingArguments)
    # No model card is written, so skip the callback that gathers it (the documented way: a
    # subclass without it); it would also draw from Python's global random state.
    trainer_class = type("Trainer", (st.CrossEncoderTrainer if cross
                                     else st.SentenceTransformerTrainer,),
                         {"add_model_card_callback": lambda self, default_args_dict: None})
    torch.manual_seed(seed)  # the softmax objective's classifier is drawn here
    loss = _loss(objective, model)
    with tempfile.TemporaryDirectory(prefix="logitkit-matching-") as scratch:
        arguments = arguments_class(
            output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=lr, warmup_steps=WARMUP_RATIO, seed=seed, data_seed=seed,
            report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        trainer = trainer_class(model=model, args=arguments, train_dataset=data, loss=loss)
        trainer.remove_callback(require("transformers", extra="hf",
                                        purpose="training encoders").PrinterCallback)
        trainer.train()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' loading bars and notices (e.g. "classifier newly initialised") and
    sentence-transformers' ("Converting SentenceTransformer model ... to CrossEncoder") inside."""
    logging = require("transformers", extra="hf", purpose="loading encoders").utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    st_logger = std_logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    st_logger.setLevel(std_logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        st_logger.setLevel(st_level)
        if bars:
            logging.enable_progress_bar()


def write_tiny_bert(folder: Path, sentences: list[str], *, seed: int) -> Path:
    """A 1-layer BERT (hidden 32) with a word-level vocabulary of ``sentences``, saved to folder.

    Random weights: it stands in for MiniLM at smoke size, through the same loading code.
    """
    transformers = require("transformers", extra="hf", purpose="the smoke-size model")
    words = sorted({w for s in sentences for w in transformers.BasicTokenizer().tokenize(s)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"),
                                               model_max_length=64)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
