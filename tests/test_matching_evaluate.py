"""STS-B loader, Spearman, tuned thresholds and their metrics, swap-set metrics: against naive
computations, scikit-learn and sentence-transformers' BinaryClassificationEvaluator."""

import gzip
import math

import numpy as np
import pytest

from logitkit.matching import (
    PairSet,
    load_stsb,
    spearman,
    threshold_metrics,
    tune_threshold,
)
from logitkit.matching.evaluate import (
    accuracy_at,
    average_precision,
    best_f1,
    binary_metrics,
    matthews_corrcoef,
    resolve_cutoff,
    similar_labels,
    swap_metrics,
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
        dev_gold[:2] = [1.0, 4.0]  # both classes (one class is refused, see below)
        dev_pred = np.round(dev_gold / 5 + rng.normal(scale=0.3, size=n), 1)  # ties in scores
        threshold = tune_threshold(dev_pred, dev_gold)
        candidates = [*dev_pred, np.inf]  # "similar iff score >= t" only changes at a dev score
        best = max(np.mean((dev_pred >= t) == (dev_gold >= 3)) for t in candidates)
        assert np.mean((dev_pred >= threshold) == (dev_gold >= 3)) == pytest.approx(best), trial
    # one class only: the constant rule would score 1.0 whatever the scores; refused
    scores = np.array([0.2, 0.9, 0.5])
    with pytest.raises(ValueError, match=r"3 similar and 0 dissimilar .* gold >= 3"):
        tune_threshold(scores, [4.0, 3.0, 5.0])
    with pytest.raises(ValueError, match=r"0 similar and 3 dissimilar"):
        tune_threshold(scores, [1.5, 0.5, 2.9])


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
    assert set(threshold_metrics(dev_pred, dev_gold)) == {
        "threshold", "f1_threshold", "dev_accuracy", "dev_f1", "dev_precision", "dev_recall",
        "dev_ap", "dev_mcc", "dev_spearman"}


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


# --- binary labels, the cutoff rule, one class refused (issue 6) ---


def brute_force_accuracy(scores, labels):
    """Best accuracy of "similar iff score >= t" over every t that changes a prediction."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    return max(np.mean((scores >= t) == (labels == 1)) for t in [*scores, np.inf])


def test_binary_labels_are_used_as_given_not_cut_at_3():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, size=80)
    scores = 0.5 * labels + rng.normal(scale=0.4, size=80)  # overlapping classes
    metrics = threshold_metrics(scores, labels, scores, labels)
    best = brute_force_accuracy(scores, labels)
    assert best < 0.95  # not separable: a perfect score could only come from the bug
    assert metrics["dev_accuracy"] == pytest.approx(best)
    assert metrics["test_accuracy"] == pytest.approx(best)
    assert tune_threshold(scores, labels.astype(bool)) == metrics["threshold"]  # booleans too
    assert similar_labels(labels).tolist() == labels.tolist()
    assert accuracy_at(scores, labels, metrics["threshold"]) == pytest.approx(best)
    # an explicit cutoff is applied as given: (0, 1] keeps 0/1 labels, 3 leaves one class
    assert threshold_metrics(scores, labels, cutoff=0.5) == threshold_metrics(scores, labels)
    with pytest.raises(ValueError, match=r"0 similar and 80 dissimilar .* gold >= 3"):
        threshold_metrics(scores, labels, cutoff=3.0)


def test_resolve_cutoff_rules():
    assert resolve_cutoff([0, 1, 1, 0]) == 1.0
    assert resolve_cutoff([True, False]) == 1.0
    assert resolve_cutoff([0.0, 1.0], [1, 1]) == 1.0  # dev and test together
    assert resolve_cutoff([0.0, 1.0], [0.0, 4.2]) == 3.0  # graded somewhere: STS rule for both
    assert resolve_cutoff([0.0, 2.5, 5.0]) == 3.0
    assert resolve_cutoff([0.2, 0.8]) == 3.0  # within 0-5: the one-class check explains it
    assert resolve_cutoff([0, 1], cutoff=0.5) == 0.5
    assert resolve_cutoff([-1.0, 0.5], cutoff=0) == 0.0
    for gold in ([-1.0, 0.5, 1.0], [0.0, 50.0, 100.0]):
        with pytest.raises(ValueError, match="explicit cutoff"):
            resolve_cutoff(gold)
    with pytest.raises(ValueError, match="finite"):
        resolve_cutoff([0, 1], cutoff=float("nan"))


@pytest.mark.parametrize(
    ("dev_gold", "test_gold", "cutoff", "match"),
    [
        ([0.2, 0.8, 0.4, 0.6], None, None,
         r"tuning labels: 0 similar and 4 dissimilar .* gold >= 3 .*\[0.2, 0.8\].*lies above"),
        ([1, 1, 1, 1], None, None, r"4 similar and 0 dissimilar .* gold >= 1"),
        ([0.0, 1.0, 4.0, 5.0], [3.5, 4.0, 5.0, 4.5], None,
         r"test labels: 4 similar and 0 dissimilar"),
        ([0, 1, 0, 1], [0, 0, 0, 0], None, r"test labels: 0 similar and 4 dissimilar"),
        ([0.2, 0.8, 0.4, 0.6], None, 0.1, r"4 similar and 0 dissimilar .*at or below"),
    ],
)
def test_one_class_after_the_cutoff_is_refused(dev_gold, test_gold, cutoff, match):
    scores = np.array([0.1, 0.9, 0.3, 0.7])
    test_scores = None if test_gold is None else scores[::-1]
    with pytest.raises(ValueError, match=match):
        threshold_metrics(scores, dev_gold, test_scores, test_gold, cutoff=cutoff)


def test_labels_in_0_1_need_their_cutoff():
    scores = np.array([0.1, 0.9, 0.3, 0.7, 0.5])
    gold = np.array([0.2, 0.8, 0.4, 0.6, 0.1])
    metrics = threshold_metrics(scores, gold, cutoff=0.5)
    assert metrics["dev_accuracy"] == pytest.approx(brute_force_accuracy(scores, gold >= 0.5))


# --- the metrics of sentence-transformers' BinaryClassificationEvaluator (issue 7) ---


def _tied_problem(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    labels[:2] = [0, 1]
    scores = np.round(0.4 * labels + rng.normal(scale=0.3, size=n), 1)  # many ties
    return scores, labels


@pytest.mark.parametrize("seed", range(8))
def test_metrics_equal_sklearn_and_sentence_transformers(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    reference = evaluation.BinaryClassificationEvaluator
    scores, labels = _tied_problem(seed, 12 + 9 * seed)
    ours = best_f1(scores, labels)
    f1, precision, recall, f1_threshold = reference.find_best_f1_and_threshold(
        scores, labels, True)
    assert ours == pytest.approx({"f1": f1, "precision": precision, "recall": recall,
                                  "threshold": f1_threshold})
    accuracy, _ = reference.find_best_acc_and_threshold(scores, labels, True)
    metrics = threshold_metrics(scores, labels)
    predicted = (scores >= f1_threshold).astype(int)
    assert metrics["dev_accuracy"] == pytest.approx(accuracy)
    assert metrics["f1_threshold"] == pytest.approx(f1_threshold)
    assert metrics["dev_f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted))
    assert metrics["dev_f1"] == pytest.approx(f1)
    assert metrics["dev_precision"] == pytest.approx(
        sklearn_metrics.precision_score(labels, predicted))
    assert metrics["dev_recall"] == pytest.approx(sklearn_metrics.recall_score(labels, predicted))
    assert metrics["dev_ap"] == pytest.approx(
        sklearn_metrics.average_precision_score(labels, scores))
    assert metrics["dev_mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predicted))


def test_test_metrics_use_the_dev_thresholds():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    dev_scores, dev_labels = _tied_problem(11, 60)
    test_scores, test_labels = _tied_problem(12, 50)
    test_scores[-1] = 5.0  # no dev score there: AP must still group it alone
    metrics = threshold_metrics(dev_scores, dev_labels, test_scores, test_labels)
    t, f1_t = metrics["threshold"], metrics["f1_threshold"]
    predicted = (test_scores >= f1_t).astype(int)
    assert metrics["test_accuracy"] == pytest.approx(np.mean((test_scores >= t) == test_labels))
    expected = {
        "f1": sklearn_metrics.f1_score(test_labels, predicted),
        "precision": sklearn_metrics.precision_score(test_labels, predicted, zero_division=0),
        "recall": sklearn_metrics.recall_score(test_labels, predicted),
        "ap": sklearn_metrics.average_precision_score(test_labels, test_scores),
        "mcc": sklearn_metrics.matthews_corrcoef(test_labels, predicted),
    }
    for key, value in expected.items():
        assert metrics[f"test_{key}"] == pytest.approx(value), key


def test_binary_metrics_edge_cases_match_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    labels = np.array([0, 1, 0, 1])
    nothing = binary_metrics(scores, labels, threshold=0.9)  # nothing predicted similar
    assert nothing["precision"] == 0.0 and nothing["f1"] == 0.0 and nothing["mcc"] == 0.0
    everything = binary_metrics(scores, labels, threshold=0.0)
    assert everything["precision"] == 0.5 and everything["recall"] == 1.0
    assert everything["mcc"] == sklearn_metrics.matthews_corrcoef(labels, [1, 1, 1, 1])
    tied = np.full(4, 0.5)  # one group: AP = the positive rate
    assert average_precision(tied, labels) == pytest.approx(
        sklearn_metrics.average_precision_score(labels, tied))
    predictions = np.array([1, 1, 0, 1])
    assert matthews_corrcoef(labels, predictions) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(labels, predictions))
    with pytest.raises(ValueError, match="test labels: 0 similar"):
        binary_metrics(scores, [0, 0, 0, 0], threshold=0.2, name="test labels")
