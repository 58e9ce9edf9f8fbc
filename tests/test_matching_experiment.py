"""The matching experiment's pieces: offline pairs, theory measurements, training glue."""

import itertools
import math

import numpy as np
import pytest
import torch

from logitkit.experiments import _matching_theory as theory
from logitkit.experiments._matching_train import similarity_classes
from logitkit.experiments.matching import PAIR_KINDS, embedded_pairs
from logitkit.matching import PairSet, swap_set
from logitkit.matching.evaluate import similar_labels


def test_embedded_pairs_are_split_deterministic_and_in_range():
    splits = embedded_pairs(seed=3, n_pairs=100)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [60, 20, 20]
    again = embedded_pairs(seed=3, n_pairs=100)
    for name in splits:
        assert splits[name].pairs == again[name].pairs
        np.testing.assert_array_equal(splits[name].scores, again[name].scores)
    low = min(lo for lo, _ in PAIR_KINDS.values())
    high = max(hi for _, hi in PAIR_KINDS.values())
    every = np.concatenate([pairs.scores for pairs in splits.values()])
    assert low <= every.min() and every.max() <= high
    assert 0.2 < similar_labels(every).mean() < 0.6
    assert len(swap_set(splits["test"])) > 0  # the templates have a subject and an object


def test_similarity_classes_match_naive_bins():
    scores = np.array([0.0, 1.0, 1.66, 1.67, 2.5, 3.33, 3.34, 4.9, 5.0])
    assert similarity_classes(scores).tolist() == [min(int(3 * s / 5.0), 2) for s in scores]


def test_jl_dimension_and_the_non_psd_example():
    assert theory.jl_dimension(1000) == math.ceil(8 * math.log(1000)) == 56
    eigenvalues = np.linalg.eigvalsh(theory.NON_TRANSITIVE)
    np.testing.assert_allclose(eigenvalues, [1 - math.sqrt(2), 1, 1 + math.sqrt(2)], atol=1e-12)
    assert theory.smallest_eigenvalue(theory.NON_TRANSITIVE) == pytest.approx(1 - math.sqrt(2))
    gram = np.random.default_rng(0).normal(size=(5, 3))
    assert theory.smallest_eigenvalue(gram @ gram.T) > -1e-12  # any B B^T is PSD


def test_projection_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(30, 16)), rng.normal(size=(30, 16))
    gold = rng.uniform(0, 5, 30)
    got = theory.projected_spearman(first, second, gold, 4, np.random.default_rng(7))
    projection = np.random.default_rng(7).standard_normal((16, 4)) / 2.0
    p, q = first @ projection, second @ projection
    cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(p, q, strict=True)]
    full = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            for a, b in zip(first, second, strict=True)]
    from scipy.stats import spearmanr

    assert got["spearman"] == pytest.approx(spearmanr(cos, gold).statistic, abs=1e-12)
    assert got["cosine_error"] == pytest.approx(np.mean(np.abs(np.subtract(cos, full))))


def test_judgement_triangles_match_brute_force():
    sentences = [f"s{i}" for i in range(7)]
    rng = np.random.default_rng(2)
    scored = {}
    first, second, gold = [], [], []
    for a, b in itertools.combinations(sentences, 2):
        if rng.uniform() < 0.6:
            score = float(rng.integers(0, 26) / 5)
            first.append(a if rng.uniform() < 0.5 else b)
            second.append(b if first[-1] == a else a)
            gold.append(score)
            scored[frozenset((a, b))] = score / 5
    first.append("s0")  # a pair of a sentence with itself is skipped
    second.append("s0")
    gold.append(5.0)
    expected = []
    for triple in itertools.combinations(sentences, 3):
        edges = [frozenset(e) for e in itertools.combinations(triple, 2)]
        if all(e in scored for e in edges):
            matrix = np.eye(3)
            for (i, j), e in zip(itertools.combinations(range(3), 2), edges, strict=True):
                matrix[i, j] = matrix[j, i] = scored[e]
            expected.append(matrix)
    got = theory.judgement_triangles(PairSet(first, second, np.array(gold)))
    assert len(got) == len(expected) > 0
    for matrix, reference in zip(got, expected, strict=True):
        np.testing.assert_allclose(matrix, reference)


def test_judgement_triangles_find_the_non_psd_stsb_triple(shared_data):
    from logitkit.matching import load_stsb

    splits = load_stsb(shared_data / "stsb" / "stsbenchmark.tsv.gz")
    pairs = PairSet([s for p in splits.values() for s in p.sentences_a],
                    [s for p in splits.values() for s in p.sentences_b],
                    np.concatenate([p.scores for p in splits.values()]))
    smallest = [theory.smallest_eigenvalue(m) for m in theory.judgement_triangles(pairs)]
    assert len(smallest) >= 20
    assert min(smallest) < 0  # e.g. scores 4.0, 4.6, 5.0 around "Doris Lessing dies"


@pytest.mark.parametrize("objective", ["cosent", "cosine_mse", "softmax", "bce"])
def test_training_glue_moves_the_weights_deterministically(objective, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("datasets")
    from logitkit.experiments._matching_train import quiet_transformers, train, write_tiny_bert
    from logitkit.matching import load_bi_encoder, load_cross_encoder

    pairs = embedded_pairs(seed=0, n_pairs=40)["train"]
    folder = write_tiny_bert(tmp_path / "tiny", [*pairs.sentences_a, *pairs.sentences_b], seed=0)
    load = load_cross_encoder if objective == "bce" else load_bi_encoder
    trained = []
    with quiet_transformers():
        for _ in range(2):
            torch.manual_seed(0)
            model = load(folder)
            before = [p.detach().clone() for p in model.parameters()]
            train(model, objective, pairs, lr=1e-3, epochs=1, batch_size=8, seed=5)
            after = [p.detach().clone() for p in model.parameters()]
            assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
            trained.append(after)
    for a, b in zip(*trained, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="unknown objective"):
        train(model, "triplet", pairs, lr=1e-3, epochs=1, batch_size=8, seed=0)
