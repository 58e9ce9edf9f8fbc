"""Training for the matching experiment on cached encoder states, so it fits minutes on a CPU.

The encoder (all-MiniLM-L6-v2, a ``SentenceTransformer``: BERT, mean pooling, normalisation) is
cut in two (:func:`split_encoder`): its lower layers are frozen and run once over every sentence
(:func:`encode_lower`, a :class:`StateCache`); only the top layers are trained, on those cached
states. Frozen layers compute the same thing every time, so training the top layers on the cache
is exactly fine-tuning those layers of the whole model.

* Bi-encoder (representation): each sentence goes through the top layers alone; a pair's score
  is the cosine of the two mean-pooled outputs.
* Cross-encoder (interaction, :class:`TopModel` with ``joint=True``): the two sentences' cached
  states are concatenated and go through the top layers as one sequence, so attention crosses
  the pair there (interaction in the upper layers only, as in DeFormer, Cao et al., ACL 2020);
  the score is the cosine of the means over each sentence's positions. A learned bias on the
  attention across the pair starts nearly closed, so both models start from nearly the same
  function.

Both copies start from the same MiniLM weights and are trained by :func:`train_top`: CoSENT
(:func:`logitkit.matching.cosent_loss` of the scores, scale 20), AdamW with linear warm-up (10% of
the steps) and decay, batches and dropout drawn from the seed.

The Sentence-BERT comparison (:func:`train_head`) trains a linear map on frozen final embeddings
(initialised at the identity, so every objective starts from MiniLM itself) with ``cosent``,
``cosine_mse`` (MSE of the cosine against gold/5) or ``softmax`` (cross-entropy of a linear
classifier on ``[u, v, |u - v|]`` against gold binned into 3 classes, :func:`similarity_classes`;
the classifier is thrown away): Sentence-BERT's two objectives and CoSENT, on the same features.
"""

from __future__ import annotations

import contextlib
import copy
import logging as std_logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from logitkit._utils import require
from logitkit.matching import cosent_loss

HEAD_OBJECTIVES = ("cosent", "cosine_mse", "softmax")
COSENT_SCALE = 20.0
MAX_SCORE = 5.0
N_CLASSES = 3
WARMUP_RATIO = 0.1
CROSS_BIAS_START = -4.0
MAX_LENGTH = 128  # tokens; STS-B sentences are at most 70 MiniLM tokens long


def similarity_classes(scores: np.ndarray) -> np.ndarray:
    """Bin scores in [0, 5] into 3 equal-width classes: ``min(floor(3 y / 5), 2)``.

    [0, 5/3) -> 0, [5/3, 10/3) -> 1, [10/3, 5] -> 2: how the Sentence-BERT softmax objective, made
    for NLI's 3 labels, is applied to STS scores here.
    """
    return np.minimum(np.floor(N_CLASSES * np.asarray(scores) / MAX_SCORE), N_CLASSES - 1
                      ).astype(np.int64)


@dataclass
class StateCache:
    """Frozen lower-layer outputs: ``states[i]`` is the (length_i, hidden) output for text i."""

    states: list[torch.Tensor]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The states of ``indices``, zero-padded to (B, L, hidden), and their (B, L) 0/1 mask."""
        items = [self.states[i] for i in indices]
        length = max(item.shape[0] for item in items)
        hidden = items[0].new_zeros((len(items), length, items[0].shape[1]))
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            hidden[row, :item.shape[0]] = item
            mask[row, :item.shape[0]] = 1
        return hidden, mask

    def joint_batch(self, first: Sequence[int], second: Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs of texts as one sequence each: ``states[first[i]]`` then ``states[second[i]]``,
        zero-padded to (B, L, hidden), with (B, L) segment ids: 1 for the first text, 2 for the
        second, 0 for padding."""
        lengths = [(self.states[a].shape[0], self.states[b].shape[0])
                   for a, b in zip(first, second, strict=True)]
        width = self.states[first[0]].shape[1]
        hidden = self.states[first[0]].new_zeros((len(lengths), max(map(sum, lengths)), width))
        segments = torch.zeros(hidden.shape[:2], dtype=torch.long)
        for row, (a, b) in enumerate(zip(first, second, strict=True)):
            length_a, length_b = lengths[row]
            hidden[row, :length_a] = self.states[a]
            hidden[row, length_a:length_a + length_b] = self.states[b]
            segments[row, :length_a] = 1
            segments[row, length_a:length_a + length_b] = 2
        return hidden, segments


def split_encoder(model: Any, top_layers: int) -> tuple[Any, Any]:
    """``(lower, top)``: the bi-encoder's BERT with its last ``top_layers`` layers taken off, and
    those layers (a ModuleList). ``model`` is changed in place (its BERT keeps the lower layers)."""
    bert = model[0].auto_model
    layers = bert.encoder.layer
    if not 1 <= top_layers <= len(layers):
        raise ValueError(f"top_layers must be 1 to {len(layers)}, got {top_layers}")
    top = torch.nn.ModuleList(layers[len(layers) - top_layers:])
    bert.encoder.layer = torch.nn.ModuleList(layers[:len(layers) - top_layers])
    return bert, top


def encode_lower(lower: Any, tokenizer: Any, texts: Sequence[str], *,
                 batch_size: int = 64) -> StateCache:
    """Run the frozen lower layers over each sentence alone, in batches of similar length."""
    encoded = [tokenizer(text, truncation=True, max_length=MAX_LENGTH) for text in texts]
    order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")
    states: list[torch.Tensor | None] = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad([encoded[i] for i in rows], return_tensors="pt")
            output = lower(**batch).last_hidden_state
            for row, index in enumerate(rows):
                states[index] = output[row, :len(encoded[index]["input_ids"])].clone()
    return StateCache(states)  # type: ignore[arg-type]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the (B, L, H) states over the positions where the (B, L) mask is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TopModel(torch.nn.Module):
    """A trainable copy of the top layers; a pair's score is the cosine of two mean-pooled outputs.

    Bi-encoder (``joint=False``): each text of the pair goes through the layers alone. Joint
    (``joint=True``, the cross-encoder): the two texts' cached states are concatenated and go
    through the layers as one sequence; the score is the cosine of the means over each text's
    positions. Attention from one text to the other gets a learned bias per layer and head
    (``cross_bias``), starting at ``CROSS_BIAS_START``: the joint model starts close to the
    bi-encoder (a token's attention logit to the other sentence is lowered by 4, its weight by
    e^-4 = 1/55) and training opens the interaction where it helps. Same weights, start, readout
    and loss: the two differ only in whether attention may cross the pair.
    """

    def __init__(self, top: Any, config: Any, *, joint: bool) -> None:
        super().__init__()
        self.layers = copy.deepcopy(top)
        self.joint = joint
        self.cross_bias = (torch.nn.Parameter(torch.full(
            (len(top), config.num_attention_heads), CROSS_BIAS_START)) if joint else None)

    def _forward(self, hidden: torch.Tensor, mask: torch.Tensor,
                 segments: torch.Tensor | None = None) -> torch.Tensor:
        """The layers on (B, L, H) states; ``mask`` (B, L) marks real tokens; ``segments`` (B, L),
        when given, the text of each token, for the cross-pair bias."""
        base = (1 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        across = None
        if segments is not None and self.cross_bias is not None:
            across = (segments[:, :, None] != segments[:, None, :]).to(hidden.dtype)[:, None]
        for index, layer in enumerate(self.layers):
            attention = base if across is None else (
                base + self.cross_bias[index][None, :, None, None] * across)
            hidden = layer(hidden, attention)
        return hidden

    def pooled(self, cache: StateCache, indices: Sequence[int]) -> torch.Tensor:
        """Bi-encoder embeddings (mean-pooled top-layer outputs) of texts ``indices``."""
        hidden, mask = cache.batch(indices)
        return mean_pool(self._forward(hidden, mask), mask)

    def scores(self, cache: StateCache, first: Sequence[int],
               second: Sequence[int]) -> torch.Tensor:
        """The cosine score of each pair of texts ``(first[i], second[i])``."""
        if self.joint:
            hidden, segments = cache.joint_batch(first, second)
            output = self._forward(hidden, (segments > 0).long(), segments)
            u, v = mean_pool(output, segments == 1), mean_pool(output, segments == 2)
        else:
            both = self.pooled(cache, [*first, *second])
            u, v = both[:len(first)], both[len(first):]
        return F.cosine_similarity(u, v, dim=-1)

    def predict(self, cache: StateCache, first: Sequence[int], second: Sequence[int], *,
                batch_size: int = 128) -> np.ndarray:
        """:meth:`scores` in batches, without gradients, as float64."""
        with torch.inference_mode():
            return torch.cat([self.scores(cache, first[start:start + batch_size],
                                          second[start:start + batch_size])
                              for start in range(0, len(first), batch_size)]).double().numpy()

    def embed(self, cache: StateCache, indices: Sequence[int], *,
              batch_size: int = 128) -> np.ndarray:
        """:meth:`pooled` in batches, without gradients, as float64."""
        with torch.inference_mode():
            return torch.cat([self.pooled(cache, indices[start:start + batch_size])
                              for start in range(0, len(indices), batch_size)]).double().numpy()


def _schedule(optimizer: torch.optim.Optimizer, steps: int) -> Any:
    warmup = max(1, math.ceil(WARMUP_RATIO * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(n: int, *, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [order[start:start + batch_size] for _ in range(epochs)
            for order in [torch.randperm(n, generator=generator)]
            for start in range(0, n, batch_size)]


def _fit(parameters: list[dict], loss_of: Callable[[torch.Tensor], torch.Tensor], n: int, *,
         batch_size: int, epochs: int, seed: int) -> None:
    batches = _batches(n, batch_size=batch_size, epochs=epochs, seed=seed)
    torch.manual_seed(seed)  # dropout
    optimizer = torch.optim.AdamW(parameters)
    scheduler = _schedule(optimizer, len(batches))
    for batch in batches:
        optimizer.zero_grad()
        loss_of(batch).backward()
        optimizer.step()
        scheduler.step()


def train_top(model: TopModel, cache: StateCache, first: np.ndarray, second: np.ndarray,
              gold: np.ndarray, *, lr: float, bias_lr: float, epochs: int, batch_size: int,
              seed: int) -> None:
    """Train ``model`` in place with CoSENT on the scores of texts ``(first[i], second[i])``
    against ``gold[i]``; ``bias_lr`` is the learning rate of a joint model's ``cross_bias``."""
    labels = torch.as_tensor(gold, dtype=torch.float32)

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        rows = batch.tolist()
        return cosent_loss(model.scores(cache, first[rows], second[rows]), labels[batch],
                           scale=COSENT_SCALE)

    groups = [{"params": list(model.layers.parameters()), "lr": lr}]
    if model.cross_bias is not None:
        groups.append({"params": [model.cross_bias], "lr": bias_lr})
    model.train()
    _fit(groups, loss_of, len(first), batch_size=batch_size, epochs=epochs, seed=seed)
    model.eval()


def train_head(objective: str, features: torch.Tensor, first: np.ndarray, second: np.ndarray,
               gold: np.ndarray, *, lr: float, epochs: int, batch_size: int,
               seed: int) -> torch.Tensor:
    """A (hidden, hidden) linear map W, from the identity, trained on frozen ``features`` so that
    the cosine of ``features[first[i]] @ W`` and ``features[second[i]] @ W`` fits pair i's gold
    score under ``objective`` (one of ``HEAD_OBJECTIVES``). Returns W."""
    if objective not in HEAD_OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}")
    generator = torch.Generator().manual_seed(seed)
    width = features.shape[1]
    weight = torch.nn.Parameter(torch.eye(width, dtype=features.dtype))
    parameters = [weight]
    classifier = None
    if objective == "softmax":  # Sentence-BERT's classifier on [u, v, |u - v|]
        bound = 1 / math.sqrt(3 * width)
        classifier = torch.nn.Parameter(
            (torch.rand(3 * width, N_CLASSES, generator=generator, dtype=features.dtype) * 2 - 1)
            * bound)
        parameters.append(classifier)
    labels = torch.as_tensor(gold, dtype=features.dtype)
    classes = torch.as_tensor(similarity_classes(gold))

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        u, v = features[first[batch]] @ weight, features[second[batch]] @ weight
        if classifier is not None:
            return F.cross_entropy(torch.cat([u, v, (u - v).abs()], dim=1) @ classifier,
                                   classes[batch])
        cosine = F.cosine_similarity(u, v, dim=-1)
        if objective == "cosent":
            return cosent_loss(cosine, labels[batch], scale=COSENT_SCALE)
        return F.mse_loss(cosine, labels[batch] / MAX_SCORE)

    _fit([{"params": parameters, "lr": lr}], loss_of, len(first), batch_size=batch_size,
         epochs=epochs, seed=seed + 1)
    return weight.detach()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' loading bars and notices and sentence-transformers' inside."""
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
    """A 2-layer BERT (hidden 32) with a word-level vocabulary of ``sentences``, saved to folder.

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
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
