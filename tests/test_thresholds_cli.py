"""`logitkit thresholds fit|apply` on .npy and .csv files, as people write them."""

import subprocess
import sys

import numpy as np
import pytest

from logitkit.cli import main


def naive_predictions(probs, weights):
    return [int(np.argmax([p * w for p, w in zip(row, weights, strict=True)])) for row in probs]


def pandas_csv(table, *, index, header=True, column_names=None):
    """Text as pandas' ``DataFrame(table).to_csv(index=index, header=header)`` writes it (default
    column names 0..k-1; the index 0..N-1 as a first column with an empty header cell)."""
    table = np.asarray(table)
    table = table[:, None] if table.ndim == 1 else table
    names = column_names or [str(i) for i in range(table.shape[1])]
    lines = [("," if index else "") + ",".join(names)] if header else []
    for i, row in enumerate(table):
        cells = [repr(int(x)) if table.dtype.kind in "iu" else repr(float(x)) for x in row]
        lines.append(",".join(([str(i)] if index else []) + cells))
    return "\n".join(lines) + "\n"


@pytest.fixture
def problem(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.choice(4, size=300, p=[0.55, 0.25, 0.15, 0.05])
    labels[:4] = np.arange(4)
    logits = rng.normal(size=(300, 4)) + 1.2 * np.eye(4)[labels] + [1.0, 0.5, 0.0, -1.0]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.save(tmp_path / "probs.npy", probs)
    (tmp_path / "labels.csv").write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    return probs, labels


def fit(tmp_path, probs_file, labels_file, *extra):
    out = tmp_path / "w.npy"
    code = main(["thresholds", "fit", "--probs", str(probs_file), "--labels", str(labels_file),
                 "--out", str(out), *extra])
    return code, (np.load(out) if code == 0 else None)


def apply(probs_file, weights_file, capsys):
    code = main(["thresholds", "apply", "--probs", str(probs_file), "--weights",
                 str(weights_file)])
    captured = capsys.readouterr()
    printed = [int(line) for line in captured.out.split()] if code == 0 else None
    return code, printed, captured.err


def test_fit_then_apply_round_trip(problem, tmp_path, capsys):
    probs, labels = problem
    code, weights = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--metric",
                        "macro_f1")
    assert code == 0
    printed = capsys.readouterr().out
    before = float(printed.split("argmax ")[1].split()[0])
    after = float(printed.split("weighted ")[1].split()[0])
    assert after >= before
    assert weights.shape == (4,)
    preds_file = tmp_path / "preds.csv"
    assert main(["thresholds", "apply", "--probs", str(tmp_path / "probs.npy"),
                 "--weights", str(tmp_path / "w.npy"), "--out", str(preds_file)]) == 0
    preds = np.loadtxt(preds_file, dtype=int)
    assert preds.tolist() == naive_predictions(probs, weights)
    assert len(preds) == len(labels)


@pytest.mark.parametrize("index", [False, True])
def test_pandas_csv_files_fit_and_apply_like_the_arrays(problem, tmp_path, capsys, index):
    # to_csv(index=False): a numeric header 0,1,2,3 that must not become a data row;
    # to_csv(): the same header after an empty cell, and an index column that must not become
    # a class
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=index))
    (tmp_path / "y.csv").write_text(pandas_csv(labels, index=index))
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv")
    assert code == 0
    _, reference = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv")
    np.testing.assert_allclose(weights, reference)
    capsys.readouterr()
    np.save(tmp_path / "w.npy", weights)
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 0 and printed == naive_predictions(probs, weights)  # N predictions, not N + 1
    assert "header" in err and (("index" in err) == index)


def test_header_of_class_names_that_are_numbers(problem, tmp_path, capsys):
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=False, column_names=list("1234")))
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "labels.csv")
    assert code == 0
    capsys.readouterr()
    assert apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)[1] == naive_predictions(
        probs, weights)


def test_index_column_without_header(problem, tmp_path, capsys):
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=True, header=False))
    (tmp_path / "y.csv").write_text(pandas_csv(labels, index=True, header=False))
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv")
    assert code == 0 and weights.shape == (4,)
    assert "row index" in capsys.readouterr().err


def test_labels_starting_with_zero_are_data_unless_a_row_too_many(problem, tmp_path, capsys):
    probs, labels = problem
    labels = labels.copy()
    labels[0] = 0
    np.save(tmp_path / "probs.npy", probs)
    (tmp_path / "plain.csv").write_text("\n".join(map(str, labels)) + "\n")  # first line "0"
    (tmp_path / "pandas.csv").write_text(pandas_csv(labels, index=False))  # header "0" + N
    code, plain = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "plain.csv")
    assert code == 0
    code, headed = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "pandas.csv")
    assert code == 0
    np.testing.assert_array_equal(plain, headed)
    assert "read as a header" in capsys.readouterr().err


def test_integer_probabilities_with_a_pandas_header(tmp_path, capsys):
    # one-hot integer scores: "0,1,2" above them is ambiguous; the labels' row count decides
    probs = np.eye(3, dtype=int)[[0, 1, 2, 2, 1, 0, 1]]
    labels = np.array([0, 1, 2, 1, 1, 0, 2])
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=False))
    (tmp_path / "y.csv").write_text("\n".join(map(str, labels)) + "\n")
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv")
    assert code == 0 and weights.shape == (3,)
    capsys.readouterr()
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert printed == naive_predictions(probs, weights) and "header" in err


@pytest.mark.parametrize("layout", ["csv_row", "npy_1d", "npy_row"])
def test_apply_on_a_single_row(tmp_path, capsys, layout):
    row = np.array([0.2, 0.5, 0.3])
    weights = np.array([1.0, 0.25, 1.0])
    np.save(tmp_path / "w.npy", weights)
    if layout == "csv_row":
        path = tmp_path / "one.csv"
        path.write_text("0.2,0.5,0.3\n")
    else:
        path = tmp_path / "one.npy"
        np.save(path, row if layout == "npy_1d" else row[None, :])
    code, printed, _ = apply(path, tmp_path / "w.npy", capsys)
    assert code == 0 and printed == naive_predictions([row], weights) == [2]


def test_apply_rejects_negative_probabilities_but_not_negative_binary_scores(tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.ones(2))
    np.save(tmp_path / "p.npy", np.array([[0.5, 0.5], [-0.1, 1.1]]))
    code, _, err = apply(tmp_path / "p.npy", tmp_path / "w.npy", capsys)
    assert code == 2 and "non-negative" in err
    np.save(tmp_path / "t.npy", np.array([0.0]))
    np.save(tmp_path / "s.npy", np.array([-1.5, 0.5, 0.0]))
    code, printed, _ = apply(tmp_path / "s.npy", tmp_path / "t.npy", capsys)
    assert code == 0 and printed == [0, 1, 1]


def test_csv_probs_and_weights_and_printed_predictions(problem, tmp_path, capsys):
    probs, _ = problem
    np.savetxt(tmp_path / "probs.csv", probs, delimiter=",", header="a,b,c,d", comments="")
    (tmp_path / "w.csv").write_text("1\n1\n1\n100\n")
    code, printed, _ = apply(tmp_path / "probs.csv", tmp_path / "w.csv", capsys)
    assert code == 0 and printed == naive_predictions(probs, [1, 1, 1, 100])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such file"),
        (lambda d: (d / "bad.txt").write_text("1,2\n"), "expected a .npy or .csv"),
        (lambda d: (d / "bad.csv").write_text("0.5,0.5\n0.5\n"), "different numbers of columns"),
        (lambda d: (d / "bad.csv").write_text("x,y\n0.5,oops\n"), "non-numeric"),
        (lambda d: (d / "bad.csv").write_text(""), "empty"),
        (lambda d: (d / "bad.csv").write_text("x,y\n"), "no data rows"),
        (lambda d: np.save(d / "bad.npy", np.ones((2, 2, 2))), "expected (N, 2)"),
        (lambda d: np.save(d / "bad.npy", np.ones((4, 3))), "expected (N, 2)"),
    ],
)
def test_bad_files_give_a_clear_error(setup, message, tmp_path, capsys):
    setup(tmp_path)
    found = sorted(p for p in tmp_path.iterdir() if p.stem == "bad")
    probs = str(found[0]) if found else str(tmp_path / "missing.npy")
    np.save(tmp_path / "w.npy", np.ones(2))
    assert main(["thresholds", "apply", "--probs", probs,
                 "--weights", str(tmp_path / "w.npy")]) == 2
    assert message in capsys.readouterr().err


def test_fit_reports_label_problems(problem, tmp_path, capsys):
    (tmp_path / "few.csv").write_text("0\n1\n")
    assert fit(tmp_path, tmp_path / "probs.npy", tmp_path / "few.csv")[0] == 2
    assert "labels has 2 entries" in capsys.readouterr().err
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "probs.npy"), "--labels",
                 str(tmp_path / "labels.csv"), "--out", str(tmp_path / "w.txt")]) == 2
    assert "expected a .npy or .csv file name" in capsys.readouterr().err
    np.save(tmp_path / "neg.npy", -np.load(tmp_path / "probs.npy"))
    assert fit(tmp_path, tmp_path / "neg.npy", tmp_path / "labels.csv")[0] == 2
    assert "non-negative" in capsys.readouterr().err


def test_fit_with_the_guard_and_a_training_prior(problem, tmp_path, capsys):
    probs, labels = problem
    (tmp_path / "prior.csv").write_text("25\n25\n25\n25\n")
    code, weights = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--shrink",
                        "1", "--train-prior", str(tmp_path / "prior.csv"))
    assert code == 0
    counts = np.bincount(labels, minlength=4) + 0.5  # the target: smoothed pi_val / pi_train
    np.testing.assert_allclose(weights, counts / counts.max())
    assert fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--shrink", "cv")[0] == 0
    assert fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--shrink", "x")[0] == 2
    assert "--shrink must be" in capsys.readouterr().err


@pytest.fixture
def binary_problem(tmp_path):
    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.3).astype(int)
    scores = rng.normal(size=400) + 1.5 * labels
    np.savetxt(tmp_path / "scores.csv", scores, header="score", comments="")
    np.save(tmp_path / "labels.npy", labels)
    return scores, labels


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_binary_scores_fit_the_best_threshold_and_apply_it(binary_problem, tmp_path, capsys,
                                                           metric):
    scores, labels = binary_problem

    def value(threshold):  # naive: the metric of score >= threshold
        preds = scores >= threshold
        if metric == "accuracy":
            return np.mean(preds == labels)
        tp = np.sum(preds & (labels == 1))
        return 2 * tp / (preds.sum() + labels.sum())

    out = tmp_path / "t.csv"
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "scores.csv"), "--labels",
                 str(tmp_path / "labels.npy"), "--metric", metric, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    threshold = np.loadtxt(out).item()
    best = max(value(s) for s in np.append(scores, np.inf))  # every distinct cut, and "all 0"
    assert value(threshold) == pytest.approx(best)
    assert float(printed.split(": ")[1].split()[0]) == pytest.approx(best, abs=1e-6)
    code, printed, _ = apply(tmp_path / "scores.csv", out, capsys)
    assert printed == [int(s >= threshold) for s in scores]


def test_binary_scores_reject_multi_class_options(binary_problem, tmp_path, capsys):
    args = ["thresholds", "fit", "--probs", str(tmp_path / "scores.csv"), "--labels",
            str(tmp_path / "labels.npy"), "--out", str(tmp_path / "t.npy")]
    assert main([*args, "--metric", "macro_f1"]) == 2
    assert "for binary scores" in capsys.readouterr().err
    assert main([*args, "--method", "powell"]) == 2
    assert "always fitted exactly" in capsys.readouterr().err


def test_multi_class_probs_reject_binary_f1(problem, tmp_path, capsys):
    assert fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--metric", "f1")[0] == 2
    assert "is for binary scores" in capsys.readouterr().err


def test_apply_does_not_import_scipy(problem, tmp_path):
    # the thresholds verb itself (other verbs' modules are outside this test)
    np.save(tmp_path / "w.npy", np.ones(4))
    code = ("import argparse, sys\nfrom logitkit.thresholds import cli\n"
            "parser = argparse.ArgumentParser()\ncli.configure(parser)\n"
            f"args = parser.parse_args(['apply', '--probs', {str(tmp_path / 'probs.npy')!r}, "
            f"'--weights', {str(tmp_path / 'w.npy')!r}, '--out', {str(tmp_path / 'p.npy')!r}])\n"
            "cli.run(args)\nprint('scipy' in sys.modules, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_an_unwritable_output_fails_before_reading_inputs(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["thresholds", "fit", "--probs", str(tmp_path / "missing.npy"), "--labels",
                 str(tmp_path / "missing.csv"), "--out", str(blocker / "w.npy")])
    assert code == 2 and "cannot write" in capsys.readouterr().err
