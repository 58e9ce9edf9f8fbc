"""``logitkit bench thresholds``: its real-output problems are valid and its table has a row per
case. Tiny sizes, no timed assertions (speed targets are reported by the benchmark, never
enforced here)."""

from __future__ import annotations

import numpy as np
import pytest

from logitkit.benchmarks import _threshold_problems as problems
from logitkit.benchmarks import thresholds

pytest.importorskip("sklearn")


def _check(problem: problems.Problem, rows: int | None = None) -> None:
    probs, labels, n = problem.probs, problem.labels, problem.n
    assert probs.shape == (labels.size, n) and (rows is None or labels.size == rows)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) == set(range(n))
    val, test = problems.split_halves(labels, seed=n)
    assert np.intersect1d(val, test).size == 0 and val.size + test.size == labels.size
    for half in (val, test):
        assert np.unique(labels[half]).size == n  # every class in both halves


@pytest.mark.parametrize("model", problems.DIGITS_MODELS)
def test_digits_problems_are_out_of_fold_probabilities_over_ten_classes(model):
    problem = problems.digits_problem(model)
    _check(problem, rows=1797)
    assert problem.n == 10 and problem.kind == "real"
    assert 0.7 < problem.info["argmax_accuracy"] < 1.0  # a real model, not a perfect one


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory):
    """The fallback corpus: a data folder without the text file."""
    text, label = problems.load_corpus(tmp_path_factory.mktemp("no_data"))
    assert label.startswith("embedded stdlib docstrings")
    return text, label


@pytest.mark.parametrize("model", problems.TEXT_MODELS)
@pytest.mark.parametrize(("n", "rows"), [(30, 300), (100, 600)])
def test_text_problems_without_the_data_folder(docstrings, model, n, rows):
    problem = problems.text_problem(n, rows, model, corpus=docstrings)
    _check(problem, rows=rows)
    assert "docstrings" in problem.source and problem.info["positions_available"] > rows


def test_text_problem_on_the_real_corpus(shared_data):
    corpus = problems.load_corpus(shared_data)
    assert corpus[1] == problems.TEXT_FILE
    problem = problems.text_problem(30, 400, "multinomial_nb", corpus=corpus)
    _check(problem, rows=400)
    assert problem.info["positions_available"] > 20000


def test_text_problem_needs_every_class_often_enough():
    with pytest.raises(ValueError, match="rarest class"):
        problems.text_problem(5, 50, corpus=("the cat the dog the cat a cat the end", "toy"))


def test_the_data_folder_override_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("LOGITKIT_SHARED_DATA", str(tmp_path / "absent"))
    assert problems.shared_data_dir() is None
    monkeypatch.setenv("LOGITKIT_SHARED_DATA", str(tmp_path))
    assert problems.shared_data_dir() == tmp_path


def test_build_problems_lists_real_outputs_then_synthetic(monkeypatch, docstrings):
    monkeypatch.setattr(thresholds, "TEXT_ROWS_QUICK", {30: 150})
    monkeypatch.setattr(thresholds, "ZIPF_ROWS_QUICK", {10: 100})
    monkeypatch.setattr(thresholds, "load_corpus", lambda: docstrings)
    notes: list[str] = []
    built = thresholds.build_problems(quick=True, notes=notes)
    assert [(p.name, p.n, p.kind) for p in built] == [
        ("digits gaussian_nb", 10, "real"), ("digits logreg", 10, "real"),
        ("text multinomial_nb", 30, "real"), ("text logreg", 30, "real"),
        ("zipf", 10, "synthetic")]
    assert any("docstrings" in note for note in notes)
    for problem in built:
        _check(problem)


def test_the_table_has_one_row_per_case(monkeypatch):
    # the table, not the search, is under test: every method returns unit weights here
    monkeypatch.setattr(thresholds, "fit_class_weights",
                        lambda probs, labels, **options: np.ones(probs.shape[1]))
    cases = []
    for n in (3, 10):
        problem = problems.zipf_problem(n, 120, seed=n)
        val, test = problems.split_halves(problem.labels, seed=n)
        for metric in thresholds.METRICS:
            cases.append(thresholds.run_case(problem, metric, val, test))
    lines = thresholds.format_table(cases).splitlines()
    assert len(lines) == 2 + len(cases)  # header, rule, one row per case
    assert lines[0].split()[:2] == ["problem", "n"] and set(lines[1]) <= {"-", " "}
    for line, result in zip(lines[2:], cases, strict=True):
        assert line.split()[:4] == ["zipf", str(result["n"]), str(result["n_val"]),
                                    result["metric"]]
        assert f"{result['baseline']['val_metric']:.4f}" in line
        assert f"{result['ours']['val_metric']:.4f}" in line
        if result["n"] == 3:  # equal weights, equal metrics, no speed target at n = 3
            assert line.endswith("yes")
    assert len(thresholds.table_rows(cases)) == len(cases)
