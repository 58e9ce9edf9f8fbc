"""`logitkit thresholds fit|apply` round trips on .npy and .csv files."""

import numpy as np
import pytest

from logitkit.cli import main


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


def test_fit_then_apply_round_trip(problem, tmp_path, capsys):
    probs, labels = problem
    weights_file = tmp_path / "weights.npy"
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "probs.npy"),
                 "--labels", str(tmp_path / "labels.csv"), "--metric", "macro_f1",
                 "--out", str(weights_file)]) == 0
    printed = capsys.readouterr().out
    weights = np.load(weights_file)
    before = float(printed.split("argmax ")[1].split()[0])
    after = float(printed.split("weighted ")[1].split()[0])
    assert after >= before
    assert weights.shape == (4,)
    preds_file = tmp_path / "preds.csv"
    assert main(["thresholds", "apply", "--probs", str(tmp_path / "probs.npy"),
                 "--weights", str(weights_file), "--out", str(preds_file)]) == 0
    preds = np.loadtxt(preds_file, dtype=int)
    expected = [int(np.argmax([p * w for p, w in zip(row, weights, strict=True)])) for row in probs]
    assert preds.tolist() == expected
    assert len(preds) == len(labels)


def test_csv_probs_and_weights_and_printed_predictions(problem, tmp_path, capsys):
    probs, _ = problem
    np.savetxt(tmp_path / "probs.csv", probs, delimiter=",", header="a,b,c,d", comments="")
    (tmp_path / "w.csv").write_text("1\n1\n1\n100\n")
    assert main(["thresholds", "apply", "--probs", str(tmp_path / "probs.csv"),
                 "--weights", str(tmp_path / "w.csv")]) == 0
    printed = [int(line) for line in capsys.readouterr().out.split()]
    assert printed == np.argmax(probs * [1, 1, 1, 100], axis=1).tolist()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such file"),
        (lambda d: (d / "bad.txt").write_text("1,2\n"), "expected a .npy or .csv"),
        (lambda d: (d / "bad.csv").write_text("0.5,0.5\n0.5\n"), "different numbers of columns"),
        (lambda d: (d / "bad.csv").write_text("x,y\n0.5,oops\n"), "non-numeric"),
        (lambda d: (d / "bad.csv").write_text(""), "empty"),
        (lambda d: np.save(d / "bad.npy", np.ones((2, 2, 2))), "1-D or 2-D array"),
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
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "probs.npy"), "--labels",
                 str(tmp_path / "few.csv"), "--out", str(tmp_path / "w.npy")]) == 2
    assert "labels has 2 entries" in capsys.readouterr().err
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "probs.npy"), "--labels",
                 str(tmp_path / "labels.csv"), "--out", str(tmp_path / "w.txt")]) == 2
    assert "expected a .npy or .csv file name" in capsys.readouterr().err


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
    assert main(["thresholds", "apply", "--probs", str(tmp_path / "scores.csv"),
                 "--weights", str(out)]) == 0
    printed = [int(line) for line in capsys.readouterr().out.split()]
    assert printed == [int(s >= threshold) for s in scores]


def test_binary_scores_reject_multi_class_options(binary_problem, tmp_path, capsys):
    args = ["thresholds", "fit", "--probs", str(tmp_path / "scores.csv"), "--labels",
            str(tmp_path / "labels.npy"), "--out", str(tmp_path / "t.npy")]
    assert main([*args, "--metric", "macro_f1"]) == 2
    assert "for binary scores" in capsys.readouterr().err
    assert main([*args, "--method", "powell"]) == 2
    assert "always fitted exactly" in capsys.readouterr().err
    np.save(tmp_path / "w.npy", np.ones(2))
    assert main(["thresholds", "apply", "--probs", str(tmp_path / "scores.csv"),
                 "--weights", str(tmp_path / "w.npy")]) == 2
    assert "need a single threshold" in capsys.readouterr().err


def test_multi_class_probs_reject_binary_f1(problem, tmp_path, capsys):
    assert main(["thresholds", "fit", "--probs", str(tmp_path / "probs.npy"), "--labels",
                 str(tmp_path / "labels.csv"), "--metric", "f1",
                 "--out", str(tmp_path / "w.npy")]) == 2
    assert "is for binary scores" in capsys.readouterr().err
