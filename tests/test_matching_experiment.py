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


def test_projection_and_best_rank_k_match_direct_computations():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(30, 16))
    got = theory.random_projection(embeddings, 4, np.random.default_rng(7))
    projection = np.random.default_rng(7).standard_normal((16, 4)) / 2.0
    np.testing.assert_allclose(got, embeddings @ projection)
    features = theory.best_rank_k(embeddings, 5)
    assert features.shape == (30, 5)
    values, vectors = np.linalg.eigh(embeddings @ embeddings.T)  # naive: top-5 eigenpairs of Gram
    top = np.argsort(values)[::-1][:5]
    best_gram = (vectors[:, top] * values[top]) @ vectors[:, top].T
    np.testing.assert_allclose(features @ features.T, best_gram, atol=1e-9)
    first, second = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    expected = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
                for a, b in zip(first, second, strict=True)]
    np.testing.assert_allclose(theory.cosines(first, second), expected)


def test_spearman_drop_matches_a_naive_bootstrap():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 6, 50).astype(float)  # ties, as in STS-B
    full = gold + rng.normal(size=50)
    reduced = gold + 2 * rng.normal(size=50)
    got = theory.spearman_drop(full, reduced, gold, np.random.default_rng(9), resamples=40)
    rows = np.random.default_rng(9).integers(0, 50, size=(40, 50))
    drops = [spearmanr(full[r], gold[r]).statistic - spearmanr(reduced[r], gold[r]).statistic
             for r in rows]
    assert got["drop"] == pytest.approx(spearmanr(full, gold).statistic
                                        - spearmanr(reduced, gold).statistic)
    np.testing.assert_allclose(got["ci95"], np.quantile(drops, [0.025, 0.975]), atol=1e-12)


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


@pytest.fixture
def tiny_encoder(tmp_path):
    pytest.importorskip("sentence_transformers")
    from logitkit.experiments._matching_train import quiet_transformers, write_tiny_bert
    from logitkit.matching import load_bi_encoder

    pairs = embedded_pairs(seed=0, n_pairs=40)["train"]
    sentences = list(dict.fromkeys([*pairs.sentences_a, *pairs.sentences_b]))
    with quiet_transformers():
        folder = write_tiny_bert(tmp_path / "tiny", sentences, seed=0)
        return pairs, sentences, load_bi_encoder(folder), load_bi_encoder(folder)


def test_state_cache_batches_match_naive_padding():
    from logitkit.experiments._matching_train import StateCache

    states = [torch.full((length, 2), float(i)) for i, length in enumerate([3, 1, 2])]
    cache = StateCache(states)
    hidden, mask = cache.batch([2, 0])
    assert hidden.shape == (2, 3, 2) and mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert hidden[0, :2].eq(2).all() and hidden[0, 2].eq(0).all() and hidden[1].eq(0).all()
    hidden, segments = cache.joint_batch([1, 0], [2, 1])
    assert segments.tolist() == [[1, 2, 2, 0], [1, 1, 1, 2]]
    expected = torch.stack([torch.cat([states[1], states[2], torch.zeros(1, 2)]),
                            torch.cat([states[0], states[1]])])
    torch.testing.assert_close(hidden, expected)


def test_cached_top_layers_reproduce_the_whole_encoder(tiny_encoder):
    from logitkit.experiments._matching_train import TopModel, encode_lower, split_encoder

    pairs, sentences, whole, model = tiny_encoder
    lower, top = split_encoder(model, 1)
    assert len(lower.encoder.layer) == 1 and len(top) == 1
    cache = encode_lower(lower, model.tokenizer, sentences, batch_size=7)
    embedded = TopModel(top, lower.config, joint=False).embed(cache, np.arange(len(sentences)))
    reference = whole.encode(sentences, convert_to_numpy=True)  # sentence-transformers

    def unit(vectors):
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    np.testing.assert_allclose(unit(embedded), unit(reference), atol=1e-5)
    # the joint (cross) model starts near the bi-encoder: attention across the pair is damped
    row = {s: i for i, s in enumerate(sentences)}
    first = np.array([row[s] for s in pairs.sentences_a])
    second = np.array([row[s] for s in pairs.sentences_b])
    expected = theory.cosines(embedded[first], embedded[second])
    closed = TopModel(top, lower.config, joint=True).predict(cache, first, second) - expected
    opened = TopModel(top, lower.config, joint=True)
    with torch.no_grad():
        opened.cross_bias.zero_()  # attention across the pair as within it
    opened_change = np.abs(opened.predict(cache, first, second) - expected).max()
    assert 0 < np.abs(closed).max() < 0.1 * opened_change


@pytest.mark.parametrize("joint", [False, True])
def test_top_training_moves_the_weights_deterministically(tiny_encoder, joint):
    from logitkit.experiments._matching_train import (
        TopModel,
        encode_lower,
        split_encoder,
        train_top,
    )

    pairs, sentences, _, model = tiny_encoder
    lower, top = split_encoder(model, 1)
    cache = encode_lower(lower, model.tokenizer, sentences)
    row = {s: i for i, s in enumerate(sentences)}
    first = np.array([row[s] for s in pairs.sentences_a])
    second = np.array([row[s] for s in pairs.sentences_b])
    loaded = [p.detach().clone() for p in top.parameters()]
    trained = []
    for _ in range(2):
        top_model = TopModel(top, lower.config, joint=joint)
        before = [p.detach().clone() for p in top_model.parameters()]
        train_top(top_model, cache, first, second, pairs.scores, lr=1e-3, bias_lr=0.1, epochs=2,
                  batch_size=8, seed=5)
        after = [p.detach().clone() for p in top_model.parameters()]
        assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        trained.append(after)
    for a, b in zip(*trained, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(top.parameters(), loaded, strict=True):
        assert torch.equal(a, b)  # the loaded top layers stay as they are: training copies them


@pytest.mark.parametrize("objective", ["cosent", "cosine_mse", "softmax"])
def test_head_training_starts_at_the_identity_and_is_deterministic(objective):
    from logitkit.experiments._matching_train import train_head

    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(20, 6)))
    first, second = rng.integers(0, 20, 30), rng.integers(0, 20, 30)
    gold = rng.uniform(0, 5, 30)
    untrained = train_head(objective, features, first, second, gold, lr=1e-2, epochs=0,
                           batch_size=8, seed=1)
    torch.testing.assert_close(untrained, torch.eye(6, dtype=torch.float64))
    runs = [train_head(objective, features, first, second, gold, lr=1e-2, epochs=3, batch_size=8,
                       seed=1) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.allclose(runs[0], untrained)
    with pytest.raises(ValueError, match="unknown objective"):
        train_head("triplet", features, first, second, gold, lr=1e-2, epochs=1, batch_size=8,
                   seed=0)
