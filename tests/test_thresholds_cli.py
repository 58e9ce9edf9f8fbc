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


def apply(probs_file, weights_file, capsys, *extra):
    code = main(["thresholds", "apply", "--probs", str(probs_file), "--weights",
                 str(weights_file), *extra])
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
    # to_csv(): a header ",0,1,2,3" (non-numeric: a header by itself) over an index column that
    # must not become a class; to_csv(index=False): a numeric header 0,1,2,3, a header only when
    # the user says so with --header
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=index))
    (tmp_path / "y.csv").write_text(pandas_csv(labels, index=index))
    flag = [] if index else ["--header"]
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv", *flag)
    assert code == 0
    _, reference = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv")
    np.testing.assert_allclose(weights, reference)
    capsys.readouterr()
    np.save(tmp_path / "w.npy", weights)
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys, *flag)
    assert code == 0 and printed == naive_predictions(probs, weights)  # N predictions, not N + 1
    assert "read as a header" in err and (("row index" in err) == index)


def test_header_of_class_names_that_are_numbers(problem, tmp_path, capsys):
    # column names 1,2,3,4 over probabilities: data unless --header (changed: they were taken
    # for a header on their own, being integers over non-integer data)
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=False, column_names=list("1234")))
    code, _ = fit(tmp_path, tmp_path / "p.csv", tmp_path / "labels.csv")
    err = capsys.readouterr().err
    assert code == 2 and "has 301 rows" in err and "has 300 labels" in err
    assert "pass --header probs" in err
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "labels.csv", "--header")
    assert code == 0
    capsys.readouterr()
    assert apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys, "--header")[1] == (
        naive_predictions(probs, weights))


def test_index_column_without_header_is_data(problem, tmp_path, capsys):
    # changed: a headerless first column 0..N-1 was dropped as an index; it is data now, noted,
    # and the error it leads to says it may be a row index
    probs, labels = problem
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=True, header=False))
    (tmp_path / "y.csv").write_text(pandas_csv(labels, index=True, header=False))
    code, _ = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "y.csv")
    err = capsys.readouterr().err
    assert code == 2 and "shape (300, 2)" in err and "row index" in err
    np.save(tmp_path / "w.npy", np.ones(4))
    code, _, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 2 and "shape (300, 5)" in err and "if it is a row index" in err
    assert "counts the rows (0, 1, ...) and is read as data" in err


def test_labels_starting_with_zero_are_data_and_a_row_too_many_is_an_error(problem, tmp_path,
                                                                          capsys):
    # changed: a pandas header "0" over N labels was dropped because the probabilities have N
    # rows; now the count mismatch is an error that suggests --header, which reads it
    probs, labels = problem
    labels = labels.copy()
    labels[0] = 0
    np.save(tmp_path / "probs.npy", probs)
    (tmp_path / "plain.csv").write_text("\n".join(map(str, labels)) + "\n")  # first line "0"
    (tmp_path / "pandas.csv").write_text(pandas_csv(labels, index=False))  # header "0" + N
    code, plain = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "plain.csv")
    assert code == 0 and "300 samples" in capsys.readouterr().out
    code, _ = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "pandas.csv")
    err = capsys.readouterr().err
    assert code == 2
    assert "has 300 rows" in err and "has 301 labels" in err and "--header labels" in err
    code, headed = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "pandas.csv", "--header")
    assert code == 0
    np.testing.assert_array_equal(plain, headed)
    assert "read as a header (--header)" in capsys.readouterr().err


def test_integer_probabilities_with_a_pandas_header(tmp_path, capsys):
    # one-hot integer scores under "0,1,2" (changed: the labels' row count decided that it was a
    # header): without --header they are data, and the count mismatch is an error
    probs = np.eye(3, dtype=int)[[0, 1, 2, 2, 1, 0, 1]]
    labels = np.array([0, 1, 2, 1, 1, 0, 2])
    (tmp_path / "p.csv").write_text(pandas_csv(probs, index=False))
    (tmp_path / "y.csv").write_text("\n".join(map(str, labels)) + "\n")
    code, _ = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv")
    err = capsys.readouterr().err
    assert code == 2 and "8 rows" in err and "7 labels" in err and "--header probs" in err
    assert "first line 0,1,2 read as data" in err
    code, _ = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv", "--header")  # both files
    err = capsys.readouterr().err
    assert code == 2 and "8 rows" not in err and "6 labels" in err
    assert "name only the other files after --header" in err
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv", "--header", "probs")
    assert code == 0 and weights.shape == (3,) and "7 samples" in capsys.readouterr().out
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys, "--header", "probs")
    assert printed == naive_predictions(probs, weights) and "header" in err
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert printed == naive_predictions([[0, 1, 2], *probs], weights)  # told: the line is data
    assert "first line 0,1,2 read as data" in err


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
    err = capsys.readouterr().err  # changed: the CLI names both files and counts
    assert "has 300 rows" in err and "few.csv has 2 labels" in err
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


def test_multi_class_f1_needs_a_class(problem, tmp_path, capsys):
    assert fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", "--metric", "f1")[0] == 2
    assert "--pos-label" in capsys.readouterr().err


def test_multi_class_f1_of_one_class_and_balanced_accuracy(problem, tmp_path, capsys):
    probs, labels = problem
    for extra, reference in [
            (["--metric", "f1", "--pos-label", "2"],
             lambda preds: naive_class_f1(labels, preds, 2)),
            (["--metric", "balanced_accuracy"], lambda preds: naive_balanced(labels, preds))]:
        code, weights = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", *extra)
        assert code == 0
        preds = [int(np.argmax(row * weights)) for row in probs]
        assert f"weighted {reference(preds):.6f}" in capsys.readouterr().out


def naive_class_f1(labels, preds, c):
    tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == p == c)
    return 2 * tp / (sum(p == c for p in preds) + sum(y == c for y in labels))


def naive_balanced(labels, preds):
    recalls = [np.mean([p == c for y, p in zip(labels, preds, strict=True) if y == c])
               for c in sorted(set(labels.tolist()))]
    return float(np.mean(recalls))


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


# The rules of the CSV reader, end to end (user report: silent header guesses shifted rows)


def write_rows(path, rows, *, encoding="utf-8"):
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows), encoding=encoding)
    return path


def separable(n_rows, n_classes=3, seed=2):
    """Probabilities whose argmax is the label (argmax accuracy 1.0), and the labels, the first
    one 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[0] = 0
    labels[1:n_classes + 1] = np.arange(n_classes)
    probs = rng.uniform(0.05, 0.3, size=(n_rows, n_classes))
    probs[np.arange(n_rows), labels] = 0.6
    return np.round(probs / probs.sum(axis=1, keepdims=True), 6), labels


def test_a_stray_labels_row_is_an_error_not_a_shift(tmp_path, capsys):
    # the report: labels with one stray row at the end, first label 0; the 0 was dropped as a
    # "pandas header" and every label shifted by one
    probs, labels = separable(40)
    np.save(tmp_path / "p.npy", probs)
    write_rows(tmp_path / "stray.csv", [[y] for y in [*labels, 1]])
    code, _ = fit(tmp_path, tmp_path / "p.npy", tmp_path / "stray.csv")
    err = capsys.readouterr().err
    assert code == 2
    assert "p.npy has 40 rows" in err and "stray.csv has 41 labels" in err
    assert err.strip().splitlines()[-1].startswith("logitkit thresholds: error: ")
    write_rows(tmp_path / "y.csv", [[y] for y in labels])  # the same without the stray row
    code, _ = fit(tmp_path, tmp_path / "p.npy", tmp_path / "y.csv")
    out = capsys.readouterr().out
    assert code == 0 and "40 samples" in out and "argmax 1.000000 -> weighted 1.000000" in out
    write_rows(tmp_path / "short.csv", [[y] for y in labels[1:]])
    code, _ = fit(tmp_path, tmp_path / "p.npy", tmp_path / "short.csv")
    err = capsys.readouterr().err
    assert code == 2 and "has 40 rows" in err and "has 39 labels" in err


def test_a_headerless_zero_one_file_keeps_its_first_row(tmp_path, capsys):
    # 0/1 scores whose first row is "0,1" (and labels whose first is 0) are data: no row lost
    onehot = [[0, 1], [0, 1], [1, 0], [0, 1], [1, 0], [1, 0], [0, 1], [1, 0], [0, 1], [1, 0]]
    labels = [0, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    write_rows(tmp_path / "p.csv", onehot)
    write_rows(tmp_path / "y.csv", [[y] for y in labels])
    code, weights = fit(tmp_path, tmp_path / "p.csv", tmp_path / "y.csv")
    captured = capsys.readouterr()
    assert code == 0 and "10 samples, 2 classes" in captured.out
    assert "argmax 0.800000" in captured.out  # rows 0 and 7 are missed: 8 of 10
    assert "first line 0,1 read as data" in captured.err
    code, printed, _ = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 0 and printed == naive_predictions(onehot, weights) and len(printed) == 10


@pytest.mark.parametrize("header", [None, ["p0", "p1", "p2"], ['"class, a"', '"b"', "c"]])
def test_apply_on_an_excel_csv_utf8_file_gives_one_prediction_per_row(tmp_path, capsys, header):
    # a byte-order mark before the first line must not make it a header (40 rows: 40
    # predictions, in order)
    probs, _ = separable(40, seed=3)
    rows = ([header] if header else []) + probs.tolist()
    write_rows(tmp_path / "p.csv", rows, encoding="utf-8-sig")
    assert (tmp_path / "p.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    weights = [1.0, 0.5, 2.0]
    write_rows(tmp_path / "w.csv", [[w] for w in weights])
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.csv", capsys)
    assert code == 0 and printed == naive_predictions(probs, weights) and len(printed) == 40
    assert ("read as a header" in err) == (header is not None)


def test_a_quoted_header_with_commas_is_one_cell_per_column(tmp_path, capsys):
    probs, _ = separable(12, seed=4)
    text = '"class, a","class, b", "class, c"\n' + "".join(
        ",".join(map(str, row)) + "\n" for row in probs.tolist())
    (tmp_path / "p.csv").write_text(text)
    np.save(tmp_path / "w.npy", np.array([1.0, 3.0, 1.0]))
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 0 and printed == naive_predictions(probs, [1.0, 3.0, 1.0])
    assert "non-numeric cell 'class, a'" in err


def test_header_flag_reads_numeric_column_names(tmp_path, capsys):
    probs, _ = separable(6, seed=5)
    write_rows(tmp_path / "p.csv", [[1, 2, 3], *probs.tolist()])  # class names 1,2,3
    write_rows(tmp_path / "w.csv", [[1], [1], [4]])  # headerless: only probs has a header
    weights = [1, 1, 4]
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.csv", capsys, "--header",
                               "probs")
    assert code == 0 and printed == naive_predictions(probs, weights)
    assert "line 1 read as a header (--header)" in err
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.csv", capsys)
    assert code == 0 and printed == naive_predictions([[1, 2, 3], *probs], weights)
    assert "first line 1,2,3 read as data" in err
    code, _, err = apply(tmp_path / "p.csv", tmp_path / "w.csv", capsys, "--header")
    assert code == 2 and "has 2 entries" in err and "--header made the first line" in err


def test_a_pandas_header_on_the_weights_or_prior_needs_header(problem, tmp_path, capsys):
    probs, labels = problem
    write_rows(tmp_path / "w.csv", [[0], [1.0], [1.0], [1.0], [9.0]])  # to_csv(index=False)
    np.save(tmp_path / "p.npy", probs)
    code, _, err = apply(tmp_path / "p.npy", tmp_path / "w.csv", capsys)
    assert code == 2 and "has 5 entries" in err and "pass --header weights" in err
    code, printed, _ = apply(tmp_path / "p.npy", tmp_path / "w.csv", capsys, "--header")
    assert code == 0 and printed == naive_predictions(probs, [1, 1, 1, 9])
    write_rows(tmp_path / "prior.csv", [[0], [25], [25], [25], [25]])
    args = ("--shrink", "1", "--train-prior", str(tmp_path / "prior.csv"))
    code, _ = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", *args)
    err = capsys.readouterr().err
    assert code == 2 and "has 5 entries" in err and "--header train-prior" in err
    code, _ = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv", *args, "--header",
                  "train-prior")
    assert code == 0


@pytest.mark.parametrize("text", ["0.2;0.8\n0.1;0.9\n", "0,2;0,8\n0,1;0,9\n", "a;b\n0.2;0.8\n",
                                  "0.2;0.8\n", "0.2\t0.8\n0.1\t0.9\n"])
def test_semicolon_or_tab_separated_files_are_a_clear_error(tmp_path, capsys, text):
    (tmp_path / "p.csv").write_text(text)
    np.save(tmp_path / "w.npy", np.ones(2))
    code, _, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 2 and "must be separated by ','" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n0.5,0.5\n\n0.5,oops\n", "line 4, column 2: non-numeric cell 'oops'"),
        ("0.5,0.5\n0.5,\n", "line 2, column 2: empty cell"),
        ("0.5,,0.5\n0.5,0.1,0.4\n", "line 1, column 2: empty cell"),  # not a header
        ("0.5,0.5\n0.5,0.5\n0.5\n", "line 3 has 1, line 1 has 2"),
        ('"a\nb",c\n0.5,0.5\n1,2,3\n', "line 4 has 3, line 2 has 2"),  # a cell over two lines
        ("\ufeffa,b\n0.5,1e-3\n0.5,1_000\n", "line 3, column 2: non-numeric cell '1_000'"),
        ("a,b\n1,2,3\n", "a row index column without a header cell"),  # R's write.table
    ],
)
def test_errors_name_the_line_and_column(tmp_path, capsys, text, message):
    (tmp_path / "p.csv").write_text(text)
    np.save(tmp_path / "w.npy", np.ones(2))
    code, _, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 2 and message in err


@pytest.mark.parametrize("first", ["", "Unnamed: 0", "index", '"Index"', "id"])
def test_only_a_header_drops_an_index_column(tmp_path, capsys, first):
    probs, _ = separable(5, seed=6)
    rows = [[first, "a", "b", "c"], *([i, *row] for i, row in enumerate(probs.tolist()))]
    write_rows(tmp_path / "p.csv", rows)
    np.save(tmp_path / "w.npy", np.array([2.0, 1.0, 1.0]))
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    if first == "id":  # a column like any other: kept, and the error says what it may be
        assert code == 2 and "shape (5, 4)" in err and "if it is a row index" in err
    else:
        assert code == 0 and printed == naive_predictions(probs, [2.0, 1.0, 1.0])
        assert "read as a row index and dropped" in err


def test_blank_and_empty_cell_lines_are_skipped_and_noted(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("a,b\n0.2,0.8\n\n , \n0.9,0.1\n,\n,\n")  # Excel's ",,"
    np.save(tmp_path / "w.npy", np.ones(2))
    code, printed, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 0 and printed == [1, 0]
    assert "2 blank line(s) skipped (line 3, 4)" in err


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "p.csv").write_bytes("classé,b\n0.2,0.8\n".encode("latin-1"))
    np.save(tmp_path / "w.npy", np.ones(2))
    code, _, err = apply(tmp_path / "p.csv", tmp_path / "w.npy", capsys)
    assert code == 2 and "is not UTF-8 text" in err


# What `fit` says about the weights it found: optimal, or how far from optimal they can be


def zipf_problem(n_classes, n_rows, seed=1):
    """Zipf-prior labels (every class present) and softmax probabilities with a per-class bias,
    so that plain argmax is mis-calibrated."""
    rng = np.random.default_rng(seed)
    prior = 1 / np.arange(1, n_classes + 1)
    labels = rng.choice(n_classes, size=n_rows, p=prior / prior.sum())
    labels[:n_classes] = np.arange(n_classes)
    logits = (rng.normal(size=(n_rows, n_classes)) + np.eye(n_classes)[labels]
              + rng.normal(size=n_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def naive_accuracy(probs, labels, weights):
    right = 0
    for row, label in zip(probs, labels, strict=True):
        products = [p * w for p, w in zip(row, weights, strict=True)]
        best = 0
        for k in range(1, len(products)):
            if products[k] > products[best]:  # ties: the lowest index, like np.argmax
                best = k
        right += best == label
    return right / len(labels)


def fit_line(err):
    """The one line about the fit on stderr."""
    lines = [line for line in err.splitlines() if line.startswith("validation ")]
    assert len(lines) == 1, err
    return lines[0]


def save_problem(tmp_path, probs, labels):
    np.save(tmp_path / "p.npy", probs)
    np.save(tmp_path / "y.npy", labels)
    return tmp_path / "p.npy", tmp_path / "y.npy"


def test_fit_says_an_exact_fit_is_proven_optimal(tmp_path, capsys):
    probs, labels = zipf_problem(3, 150)
    code, weights = fit(tmp_path, *save_problem(tmp_path, probs, labels))
    line = fit_line(capsys.readouterr().err)
    assert code == 0 and line.endswith("(exact: proven optimal)")
    assert line.startswith("validation accuracy ")
    assert float(line.split()[2]) == pytest.approx(naive_accuracy(probs, labels, weights),
                                                   abs=5e-5)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_fit_gives_a_bound_and_the_gap_when_not_proven(tmp_path, capsys, metric):
    # 6 classes x 3000 rows: "auto" runs coordinate ascent, whose bound is only "every row that
    # can be right is right"
    probs, labels = zipf_problem(6, 3000)
    code, _ = fit(tmp_path, *save_problem(tmp_path, probs, labels), "--metric", metric)
    line = fit_line(capsys.readouterr().err)
    assert code == 0 and "proven optimal" not in line
    assert f"validation {metric} " in line and "upper bound" in line and "gap <=" in line
    assert line.endswith("method coordinate)")
    value = float(line.split()[2].rstrip(";"))
    bound = float(line.split("upper bound ")[1].split()[0])
    gap = float(line.split("gap <= ")[1].split(";")[0])
    assert bound >= value and gap == pytest.approx(bound - value, abs=2e-4)


@pytest.mark.parametrize(("n_classes", "n_rows", "proven"), [(3, 150, True), (6, 3000, False)])
def test_fit_report_json(tmp_path, capsys, n_classes, n_rows, proven):
    import json

    probs, labels = zipf_problem(n_classes, n_rows)
    report = tmp_path / "sub" / "fit.json"
    report.parent.mkdir()  # an output file's folder must exist
    code, weights = fit(tmp_path, *save_problem(tmp_path, probs, labels), "--report",
                        str(report))
    assert code == 0
    found = json.loads(report.read_text())
    assert set(found) == {"metric", "value", "bound", "gap", "proven_optimal", "method", "shrink",
                          "weights"}
    assert found["metric"] == "accuracy" and found["shrink"] == 0
    assert found["weights"] == weights.tolist()  # the weights written to --out
    assert found["value"] == pytest.approx(naive_accuracy(probs, labels, weights), abs=1e-12)
    assert found["bound"] >= found["value"]
    assert found["gap"] == pytest.approx(found["bound"] - found["value"], abs=1e-12)
    assert found["proven_optimal"] is proven
    assert found["method"] == ("exact" if proven else "coordinate")
    if proven:
        assert found["gap"] == pytest.approx(0, abs=1e-9)
    assert not [p for p in report.parent.iterdir() if p.name != "fit.json"]  # no temporary left
    line = fit_line(capsys.readouterr().err)
    assert f"{found['value']:.4f}" in line


def test_fit_passes_the_time_limit(tmp_path, capsys, monkeypatch):
    from logitkit.thresholds import cli, tune_class_weights

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs["time_limit"])
        return tune_class_weights(*args, **kwargs)

    monkeypatch.setattr(cli, "tune_class_weights", recording)
    probs, labels = zipf_problem(4, 24)  # small: the exact program finishes well within it
    code, weights = fit(tmp_path, *save_problem(tmp_path, probs, labels), "--method", "exact",
                        "--time-limit", "60")
    assert code == 0 and seen == [60.0]
    assert fit_line(capsys.readouterr().err).endswith("(exact: proven optimal)")
    assert weights.shape == (4,)


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_time_limit_is_an_error_before_any_work(tmp_path, capsys, limit):
    # the inputs do not exist: the option is checked first
    code = main(["thresholds", "fit", "--probs", str(tmp_path / "missing.npy"), "--labels",
                 str(tmp_path / "missing.csv"), "--out", str(tmp_path / "w.npy"),
                 "--time-limit", limit])
    err = capsys.readouterr().err
    assert code == 2 and "--time-limit must be a positive number of seconds" in err
    assert err.startswith("logitkit thresholds: error: ")
    assert not (tmp_path / "w.npy").exists()


def test_an_unwritable_report_fails_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["thresholds", "fit", "--probs", str(tmp_path / "missing.npy"), "--labels",
                 str(tmp_path / "missing.csv"), "--out", str(tmp_path / "w.npy"), "--report",
                 str(blocker / "fit.json")])
    assert code == 2 and "cannot write" in capsys.readouterr().err
    code = main(["thresholds", "fit", "--probs", str(tmp_path / "missing.npy"), "--labels",
                 str(tmp_path / "missing.csv"), "--out", str(tmp_path / "w.npy"), "--report",
                 str(tmp_path / "w.npy")])
    assert code == 2 and "is the --out file" in capsys.readouterr().err


def test_binary_scores_reject_the_report_and_time_limit(binary_problem, tmp_path, capsys):
    args = ["thresholds", "fit", "--probs", str(tmp_path / "scores.csv"), "--labels",
            str(tmp_path / "labels.npy"), "--out", str(tmp_path / "t.npy")]
    for extra in (["--time-limit", "5"], ["--report", str(tmp_path / "r.json")]):
        assert main([*args, *extra]) == 2
        assert "apply to (N, n) probabilities" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_cost_matrix_is_minimised(problem, tmp_path, capsys):
    probs, labels = problem
    cost = np.array([[0, 1, 1, 1], [4, 0, 4, 4], [1, 1, 0, 1], [9, 9, 9, 0]], dtype=float)
    np.savetxt(tmp_path / "cost.csv", cost, delimiter=",")
    code, weights = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv",
                        "--cost-matrix", str(tmp_path / "cost.csv"))
    assert code == 0
    out = capsys.readouterr().out

    def mean_cost(w):  # naive loop
        total = 0.0
        for row, y in zip(probs, labels, strict=True):
            total += cost[y][max(range(4), key=lambda j: (row[j] * w[j], -j))]
        return total / len(labels)

    assert f"weighted {-mean_cost(weights):.6f}" in out
    assert mean_cost(weights) < mean_cost(np.ones(4))
    for extra, message in [(["--metric", "accuracy"], "not both"),
                           (["--header", "cost-matrix"], "4 x 4")]:
        code, _ = fit(tmp_path, tmp_path / "probs.npy", tmp_path / "labels.csv",
                      "--cost-matrix", str(tmp_path / "cost.csv"), *extra)
        assert code == 2 and message in capsys.readouterr().err
