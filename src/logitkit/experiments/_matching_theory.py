"""The theory section of the matching claims, measured: k-dimensional features and PSD judgements.

Seed 002 argues that any PSD similarity matrix S is a Gram matrix B B^T (so a bi-encoder with
embeddings B can represent it exactly), and that by Johnson-Lindenstrauss n vectors can be brought
down to about 8 log n dimensions with their inner products approximately kept. Measured here:

* :func:`random_projection`: a Gaussian random projection to k dimensions (``x -> x R / sqrt(k)``,
  R with N(0, 1) entries), the JL construction; :func:`best_rank_k`: the best k-dimensional
  features for the inner products of the given n vectors (truncated SVD, Eckart-Young), i.e. the
  seed's B cut to k columns. Either gives k-dimensional features whose cosines rank pairs.
* :func:`spearman_drop`: how much test Spearman the reduced features lose against the full ones,
  with a paired bootstrap interval over the test pairs (is the loss within sampling noise?).
* :func:`judgement_triangles`: the premise. A symmetric similarity judgement need not be PSD:
  [[1, 1, 0], [1, 1, 1], [0, 1, 1]] ("a is b", "b is c", "a is not c") has eigenvalue 1 - sqrt 2,
  so no embedding reproduces it. On data, every triple of sentences whose three pairs all carry
  a gold score gives a 3 x 3 judgement matrix (gold / max score, 1 on the diagonal) to test.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from logitkit.matching import PairSet, spearman

NON_TRANSITIVE = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])


def jl_dimension(n: int) -> int:
    """``ceil(8 ln n)``: the seed's "about 8 log n dimensions" for n items."""
    return math.ceil(8 * math.log(n))


def cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.einsum("ij,ij->i", first, second) / np.maximum(norms, 1e-12)


def random_projection(embeddings: np.ndarray, dimension: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``embeddings @ R / sqrt(dimension)`` with R a (width, dimension) N(0, 1) matrix from rng."""
    projection = rng.standard_normal((embeddings.shape[1], dimension)) / math.sqrt(dimension)
    return embeddings @ projection


def best_rank_k(embeddings: np.ndarray, dimension: int) -> np.ndarray:
    """(n, dimension) features F whose Gram matrix F F^T is the best rank-``dimension``
    approximation of ``embeddings @ embeddings.T`` (truncated SVD: F = U_k diag(s_k))."""
    u, s, _ = np.linalg.svd(embeddings, full_matrices=False)
    return u[:, :dimension] * s[:dimension]


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


def spearman_drop(full: np.ndarray, reduced: np.ndarray, gold: np.ndarray,
                  rng: np.random.Generator, *, resamples: int = 1000) -> dict[str, Any]:
    """``spearman(full, gold) - spearman(reduced, gold)`` with a 95% percentile interval from a
    paired bootstrap over the pairs (the same resampled pairs for both scores)."""
    drop = spearman(full, gold) - spearman(reduced, gold)
    rows = rng.integers(0, len(gold), size=(resamples, len(gold)))
    gold_ranks = rankdata(gold[rows], axis=1)
    drops = (_row_pearson(rankdata(full[rows], axis=1), gold_ranks)
             - _row_pearson(rankdata(reduced[rows], axis=1), gold_ranks))
    low, high = np.quantile(drops, [0.025, 0.975])
    return {"drop": float(drop), "ci95": [float(low), float(high)]}


def judgement_triangles(pairs: PairSet, *, max_score: float = 5.0) -> list[np.ndarray]:
    """3 x 3 judgement matrices of every sentence triple whose three pairs are all scored.

    Entry (i, j) is gold / max_score of the pair (a repeated pair keeps its first score),
    the diagonal is 1. Pairs of a sentence with itself are skipped.
    """
    score: dict[tuple[str, str], float] = {}
    neighbours: dict[str, set[str]] = {}
    for a, b, gold in zip(pairs.sentences_a, pairs.sentences_b, pairs.scores, strict=True):
        if a == b or (a, b) in score:
            continue
        score[a, b] = score[b, a] = float(gold) / max_score
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = set()
    for a, linked in neighbours.items():
        for b, c in itertools.combinations(sorted(linked), 2):
            if c in neighbours[b]:
                triangles.add(tuple(sorted((a, b, c))))
    matrices = []
    for triple in sorted(triangles):
        matrix = np.eye(3)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            matrix[i, j] = matrix[j, i] = score[triple[i], triple[j]]
        matrices.append(matrix)
    return matrices


def smallest_eigenvalue(matrix: np.ndarray) -> float:
    """The smallest eigenvalue of a symmetric matrix (< 0: not PSD, no B with B B^T = matrix)."""
    return float(np.linalg.eigvalsh(matrix)[0])
