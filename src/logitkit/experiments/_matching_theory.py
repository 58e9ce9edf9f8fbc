"""The theory section of the matching claims, measured: random projections and PSD judgements.

Seed 002 argues that any PSD similarity matrix S is a Gram matrix B B^T (so a bi-encoder with
embeddings B can represent it exactly), and that by Johnson-Lindenstrauss about 8 log n
dimensions suffice to keep the similarities of n items. Two measurements:

* :func:`projected_spearman`: the Spearman correlation with gold of the cosine of embeddings
  after a Gaussian random projection to k dimensions (``x -> x R / sqrt(k)``, R with N(0, 1)
  entries), for a range of k: how many dimensions the ranking really needs.
* :func:`judgement_triangles`: the premise. A symmetric similarity judgement need not be PSD:
  [[1, 1, 0], [1, 1, 1], [0, 1, 1]] ("a is b", "b is c", "a is not c") has eigenvalue 1 - sqrt 2,
  so no embedding reproduces it. On data, every triple of sentences whose three pairs all carry
  a gold score gives a 3 x 3 judgement matrix (gold / max score, 1 on the diagonal) to test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from logitkit.matching import PairSet, spearman

NON_TRANSITIVE = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])


def jl_dimension(n: int) -> int:
    """``ceil(8 ln n)``: the seed's "about 8 log n dimensions" for n items."""
    return math.ceil(8 * math.log(n))


def cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.einsum("ij,ij->i", first, second) / np.maximum(norms, 1e-12)


def projected_spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray, dimension: int,
                       rng: np.random.Generator) -> dict[str, float]:
    """Spearman of the pairs' cosines after one random projection to ``dimension`` dimensions.

    ``first[i]``, ``second[i]``: the embeddings of pair i. Also returns the mean absolute change
    of the cosines (``cosine_error``) caused by the projection.
    """
    projection = rng.standard_normal((first.shape[1], dimension)) / math.sqrt(dimension)
    projected = cosines(first @ projection, second @ projection)
    return {"spearman": spearman(projected, gold),
            "cosine_error": float(np.mean(np.abs(projected - cosines(first, second))))}


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
