"""STS-B loader, Spearman, dev-tuned accuracy and swap-set metrics vs naive computations."""

import gzip
import math

import numpy as np
import pytest

from logitkit.matching import (
    PairSet,
    accuracy_at,
    load_stsb,
    similar_labels,
    spearman,
    swap_metrics,
    threshold_metrics,
    tune_threshold,
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
    for trial in range(20):
        n = int(rng.integers(2, 40))
        dev_gold = rng.integers(0, 26, size=n) / 5  # STS-B steps, ties included
        dev_pred = np.round(dev_gold / 5 + rng.normal(scale=0.3, size=n), 1)  # ties in scores
        threshold = tune_threshold(dev_pred, dev_gold)
        candidates = [*dev_pred, np.inf]  # "similar iff score >= t" only changes at a dev score
        best = max(np.mean((dev_pred >= t) == (dev_gold >= 3)) for t in candidates)
        assert np.mean((dev_pred >= threshold) == (dev_gold >= 3)) == pytest.approx(best), trial
    # one class only: the constant rule, with a finite threshold
    scores = np.array([0.2, 0.9, 0.5])
    assert accuracy_at(scores, [4.0, 3.0, 5.0], tune_threshold(scores, [4.0, 3.0, 5.0])) == 1.0
    assert accuracy_at(scores, [1.0, 0.0, 2.9], tune_threshold(scores, [1.0, 0.0, 2.9])) == 1.0


def naive_swap_metrics(paraphrase, swap, threshold):
    correct = [p >= threshold for p in paraphrase] + [s < threshold for s in swap]
    above = [s > p for p, s in zip(paraphrase, swap, strict=True)]
    return {"accuracy": sum(correct) / len(correct),
            "paraphrase_accuracy": sum(correct[:len(paraphrase)]) / len(paraphrase),
            "swap_accuracy": sum(correct[len(paraphrase):]) / len(swap),
            "swap_above_paraphrase": sum(above) / len(above)}


def test_swap_metrics_match_naive_loops():
    rng = np.random.default_rng(4)
    paraphrase, swap = rng.uniform(size=30), rng.uniform(size=30)
    swap[:3] = paraphrase[:3]  # ties are not "above"
    for threshold in (0.2, 0.5, float(paraphrase[7])):
        got = swap_metrics(paraphrase, swap, threshold)
        assert got == pytest.approx(naive_swap_metrics(paraphrase, swap, threshold))
    with pytest.raises(ValueError, match="equal length"):
        swap_metrics([0.1, 0.2], [0.3], 0.5)


def test_threshold_metrics_tune_on_dev_and_apply_everywhere():
    rng = np.random.default_rng(5)
    dev_gold, test_gold = rng.uniform(0, 5, 60), rng.uniform(0, 5, 40)
    dev_pred = dev_gold / 5 + rng.normal(scale=0.2, size=60)
    test_pred = test_gold / 5 + rng.normal(scale=0.2, size=40)
    paraphrase, swap = rng.uniform(0.4, 1, 10), rng.uniform(0, 0.9, 10)
    metrics = threshold_metrics(dev_pred, dev_gold, test_pred, test_gold, paraphrase, swap)
    t = tune_threshold(dev_pred, dev_gold)
    assert metrics["threshold"] == t
    assert metrics["dev_accuracy"] == pytest.approx(np.mean((dev_pred >= t) == (dev_gold >= 3)))
    assert metrics["test_accuracy"] == pytest.approx(np.mean((test_pred >= t) == (test_gold >= 3)))
    assert metrics["test_spearman"] == pytest.approx(naive_spearman(test_pred, test_gold))
    for key, value in naive_swap_metrics(paraphrase, swap, t).items():
        assert metrics[f"swap_set_{key}"] == pytest.approx(value)
    assert set(threshold_metrics(dev_pred, dev_gold)) == {"threshold", "dev_accuracy",
                                                          "dev_spearman"}


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
