"""STS-B loader, Spearman, thresholded accuracy and adversarial pairs vs naive computations."""

import gzip
import math

import numpy as np
import pytest

from logitkit.matching import (
    PairSet,
    accuracy_at,
    adversarial_mask,
    load_stsb,
    similar_labels,
    spearman,
    tuned_accuracy,
    word_overlap,
)

HEADER = "split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"


def naive_ranks(values):
    """1-based ranks, ties get the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def naive_spearman(x, y):
    rx, ry = naive_ranks(list(x)), naive_ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var_x = sum((a - mx) ** 2 for a in rx)
    var_y = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(var_x * var_y)


def test_spearman_matches_naive_ranks_with_ties():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, size=40).astype(float)  # many ties
    predicted = gold + rng.normal(scale=2.0, size=40)
    predicted[:5] = predicted[0]  # ties in predictions too
    assert spearman(predicted, gold) == pytest.approx(naive_spearman(predicted, gold), abs=1e-12)


def test_accuracy_at_matches_naive_loop():
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, size=50)
    predicted = rng.uniform(-1, 1, size=50)
    threshold = 0.1
    expected = sum((p >= threshold) == (g >= 3.0) for p, g in zip(predicted, gold, strict=True))
    assert accuracy_at(predicted, gold, threshold) == pytest.approx(expected / 50)
    assert similar_labels([2.99, 3.0, 4.5]).tolist() == [0, 1, 1]


def test_tuned_threshold_reaches_the_brute_force_dev_optimum():
    rng = np.random.default_rng(2)
    dev_gold, test_gold = rng.uniform(0, 5, size=60), rng.uniform(0, 5, size=40)
    dev_pred = dev_gold / 5 + rng.normal(scale=0.3, size=60)
    test_pred = test_gold / 5 + rng.normal(scale=0.3, size=40)
    result = tuned_accuracy(dev_pred, dev_gold, test_pred, test_gold)
    candidates = [*dev_pred, np.inf]  # "predict 1 iff score >= t" only changes at a dev score
    best = max(np.mean((dev_pred >= t) == (dev_gold >= 3)) for t in candidates)
    assert result.dev_accuracy == pytest.approx(best)
    assert np.mean((dev_pred >= result.threshold) == (dev_gold >= 3)) == pytest.approx(best)
    expected_test = np.mean((test_pred >= result.threshold) == (test_gold >= 3))
    assert result.test_accuracy == pytest.approx(expected_test)


@pytest.mark.parametrize(
    ("predicted", "gold", "match"),
    [
        ([0.1, 0.2, 0.3], [1.0, 2.0], "equal length"),
        ([0.1, float("nan")], [1.0, 2.0], "NaN"),
        ([0.1], [1.0], "at least 2"),
        ([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], "all scores are equal"),
    ],
)
def test_spearman_rejects_bad_inputs(predicted, gold, match):
    with pytest.raises(ValueError, match=match):
        spearman(predicted, gold)


def test_word_overlap_and_adversarial_mask_match_naive():
    a = ["A man is playing a guitar.", "A dog runs.", "Two cats sleep.", "The sun is up."]
    b = ["A man is playing a flute.", "A puppy is sprinting.", "Two cats sleep!", "Rain falls."]
    gold = np.array([1.0, 4.5, 5.0, 0.2])
    for x, y in zip(a, b, strict=True):
        wx = {w.strip(".!").lower() for w in x.split()}
        wy = {w.strip(".!").lower() for w in y.split()}
        assert word_overlap(x, y) == pytest.approx(len(wx & wy) / len(wx | wy))
    mask = adversarial_mask(PairSet(a, b, gold), overlap_cutoff=0.5)
    # high overlap but dissimilar (0), low overlap but similar (1); the others are consistent
    assert mask.tolist() == [True, True, False, False]


def _write_stsb(path, lines):
    text = HEADER + "".join("\t".join(fields) + "\n" for fields in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", ["sts.tsv", "sts.tsv.gz"])
def test_loader_keeps_quotes_and_ignores_extra_columns(tmp_path, name):
    path = tmp_path / name
    _write_stsb(path, [
        ["train", "g", "d", "2012", "1", "4.250", 'He said "hi', 'She said "hello"'],
        ["dev", "g", "d", "2012", "2", "0.000", "A cat.", "A dog.", "extra", "columns"],
        ["test", "g", "d", "2012", "3", "5", "'Tis so.", "It is so."],
        ["train", "g", "d", "2012", "4", "1.5", "x", "y"],
    ])
    splits = load_stsb(path)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2, 1, 1]
    assert splits["train"].sentences_a[0] == 'He said "hi'
    assert splits["train"].sentences_b[0] == 'She said "hello"'
    assert splits["train"].scores.tolist() == [4.25, 1.5]
    assert splits["dev"].pairs == [("A cat.", "A dog.")]
    assert splits["test"].sentences_a == ["'Tis so."]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (["train", "g", "d", "2012", "1", "4.0", "only one sentence"], ">= 8"),
        (["train", "g", "d", "2012", "1", "high", "a", "b"], "not a number"),
        (["train", "g", "d", "2012", "1", "6.5", "a", "b"], "outside"),
        (["valid", "g", "d", "2012", "1", "1.0", "a", "b"], "unknown split"),
    ],
)
def test_loader_rejects_malformed_rows_with_line_numbers(tmp_path, row, match):
    path = tmp_path / "bad.tsv"
    _write_stsb(path, [["train", "g", "d", "2012", "0", "1.0", "a", "b"], row])
    with pytest.raises(ValueError, match=rf"bad.tsv:3: .*{match}"):
        load_stsb(path)


def test_loader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_stsb(tmp_path / "absent.tsv.gz")


def test_pairset_checks_lengths_and_subsets():
    pairs = PairSet(["a", "b", "c"], ["x", "y", "z"], np.array([1.0, 2.0, 3.0]))
    sub = pairs.subset([2, 0])
    assert sub.pairs == [("c", "z"), ("a", "x")] and sub.scores.tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="equal lengths"):
        PairSet(["a"], ["x", "y"], np.array([1.0]))


def test_real_stsb_file(shared_data):
    splits = load_stsb(shared_data / "stsb" / "stsbenchmark.tsv.gz")
    assert {name: len(pairs) for name, pairs in splits.items()} == {
        "train": 5749, "dev": 1500, "test": 1379}
    for pairs in splits.values():
        assert pairs.scores.min() >= 0 and pairs.scores.max() <= 5
        assert all(a and b for a, b in pairs.pairs)
    assert splits["train"].pairs[0] == ("A plane is taking off.", "An air plane is taking off.")
    assert splits["train"].scores[0] == 5.0
    # the binary "similar" task is not degenerate on any split
    for pairs in splits.values():
        assert 0.2 < similar_labels(pairs.scores).mean() < 0.8
