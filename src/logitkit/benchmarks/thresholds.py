"""Per-class decision weights: logitkit vs seed 002's Powell recipe, kept verbatim, on real model
outputs and on synthetic ones.

Baseline: ``fit_class_weights(method="powell")``, the seed's code as written (weights
``(tanh(t) + 1) / 2`` from ``t = 0``, scipy Powell with ``xtol = ftol = 1e-10``,
``maxiter = 100000``, no cap on evaluations). Ours: ``method="auto"`` (the default), except at
n = 3 where the global optimum by enumerating cells (``method="exact"``) is the reference. Also
reported: one coordinate ascent without restarts, ``method="auto"`` at n = 3, and plain argmax.

Problems (``logitkit.benchmarks._threshold_problems``), each split into a validation half (the
weights are tuned there) and a test half, stratified so that both hold every class:

* real model outputs, out-of-fold (stratified 5-fold) ``predict_proba`` computed offline:
  ``digits gaussian_nb`` and ``digits logreg``: the 1797 digits bundled with scikit-learn,
  n = 10, N_val = 896 at every size. ``text multinomial_nb`` and ``text logreg`` at n = 30 and
  n = 100: the next word among the n most frequent words of Grimms' fairy tales
  (``lm/grimm_tales.txt`` of the shared data folder, ``$LOGITKIT_SHARED_DATA`` or
  ``../shared/data``; without it, the standard library's docstrings, and a note says so) from the
  previous two words; N_val 10000 (n = 30) and 5000 (n = 100), --quick 1500 and 1000. Real
  outputs need scikit-learn (the ``sklearn`` extra); without it these cases are skipped, with a
  note. No "covtype-like" tabular case: ``fetch_covtype`` downloads, and the tabular sets bundled
  with scikit-learn have at most 3 classes.
* synthetic (``zipf``): labels with Zipf priors (p_c ~ 1/(c+1)), probabilities a softmax of
  noisy logits (signal on the true class) plus a per-class bias, so argmax is mis-calibrated.
  N_val: 2000, 25000, 25000, 10000, 5000 at n = 3, 5, 10, 30, 100 (the baseline's time grows
  like n^2 N); --quick: 1000, 5000, 2000, 1000 at n = 3, 10, 30, 100. At n = 3 the exact search
  gives the global optimum and the other methods are compared to it.

Each case (problem x metric, accuracy and macro_f1): validation and test metric of every method;
wall time and CPU time (process time) of the baseline and ours, each the fastest of 3 fits when
its first fit took under a second (else one); ``speedup`` = baseline wall time / ours,
``cpu_speedup`` the same in CPU time; whether ours >= the baseline on validation.
Targets: ours >= the baseline's validation metric everywhere; >= 10x faster
(wall time) at n = 10, 30 and 100, on real and synthetic outputs; the global optimum at n = 3.

Output: a table (problem, n, N_val, metric, both methods' validation and test metric, times,
speedups, targets met) on stderr, which ``logitkit bench thresholds`` shows as it runs, then the
one JSON object (``emit``) as the last line of stdout.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from logitkit.benchmarks._threshold_problems import (
    DIGITS_MODELS,
    TEXT_MODELS,
    Problem,
    digits_problem,
    load_corpus,
    split_halves,
    text_problem,
    zipf_problem,
)
from logitkit.benchmarks.harness import case, emit, quick_flag
from logitkit.thresholds import apply_class_weights, fit_class_weights
from logitkit.thresholds.metrics import class_metric

METRICS = ("accuracy", "macro_f1")
SPEED_TARGET = 10.0
SPEED_TARGET_N = (10, 30, 100)
SHORT_RUN_S = 1.0  # a first fit shorter than this is repeated: the fastest of 3 counts

# validation rows per n (the test half is as large)
ZIPF_ROWS = {3: 2000, 5: 25000, 10: 25000, 30: 10000, 100: 5000}
ZIPF_ROWS_QUICK = {3: 1000, 10: 5000, 30: 2000, 100: 1000}
TEXT_ROWS = {30: 10000, 100: 5000}
TEXT_ROWS_QUICK = {30: 1500, 100: 1000}
QUICK_NOTE = (
    "--quick checks every target (ours >= Powell on validation everywhere, >= 10x at n = 10, 30 "
    "and 100) on the same problems, but only digits at full size (N_val 896); text runs at N_val "
    "1500 / 1000 (n = 30 / 100) instead of 10000 / 5000, Zipf at 5000 / 2000 / 1000 (n = 10 / 30 "
    "/ 100) instead of 25000 / 10000 / 5000: the speedups at those sizes come from the full run "
    "(at small N fixed costs weigh more on both sides).")


def make_problem(n_classes: int, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-imbalanced labels and miscalibrated softmax probabilities (see module docstring)."""
    problem = zipf_problem(n_classes, n_samples, seed)
    return problem.probs, problem.labels


def build_problems(quick: bool, notes: list[str]) -> list[Problem]:
    """Every problem of the run, real ones first; what could not be built goes to ``notes``."""
    problems: list[Problem] = []
    try:
        import sklearn  # noqa: F401
    except ModuleNotFoundError:
        notes.append("real-output cases skipped: scikit-learn is not installed "
                     '(pip install "logitkit[sklearn]")')
    else:
        for model in DIGITS_MODELS:
            problems.append(digits_problem(model, seed=0))
        corpus = load_corpus()
        if not corpus[1].endswith(".txt"):
            notes.append(f"text cases use {corpus[1]}: the real corpus is the shared data "
                         "folder's lm/grimm_tales.txt")
        for n, rows in (TEXT_ROWS_QUICK if quick else TEXT_ROWS).items():
            for model in TEXT_MODELS:
                problems.append(text_problem(n, 2 * rows, model, corpus=corpus, seed=0))
    for n, rows in (ZIPF_ROWS_QUICK if quick else ZIPF_ROWS).items():
        problems.append(zipf_problem(n, 2 * rows, seed=n))
    return problems


def measure(probs, labels, val, test, n, metric, repeats=None, **options):
    """Metrics of the weights fitted on ``val``; fastest wall and CPU time of ``repeats`` fits
    (None: 3 when the first fit takes under ``SHORT_RUN_S``, else 1)."""
    walls, cpus = [], []
    while True:
        wall, cpu = time.perf_counter(), time.process_time()
        weights = fit_class_weights(probs[val], labels[val], metric=metric, **options)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        wanted = repeats if repeats is not None else (3 if walls[0] < SHORT_RUN_S else 1)
        if len(walls) >= wanted:
            break

    def score(rows):
        return class_metric(labels[rows], apply_class_weights(probs[rows], weights), n, metric)

    return {"val_metric": score(val), "test_metric": score(test), "time_s": min(walls),
            "cpu_s": min(cpus), "repeats": len(walls)}


def run_case(problem: Problem, metric: str, val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Baseline, ours and the extras on one problem and metric (see module docstring)."""
    probs, labels, n = problem.probs, problem.labels, problem.n
    powell = measure(probs, labels, val, test, n, metric, method="powell")
    ours = measure(probs, labels, val, test, n, metric, method="exact" if n <= 3 else "auto")
    single = measure(probs, labels, val, test, n, metric, method="coordinate", restarts=0)
    result = case(f"{problem.name} n={n} {metric} N_val={val.size}", baseline=powell, ours=ours,
                  baseline_name="seed 002 Powell (verbatim)",
                  ours_name="exact (global)" if n <= 3 else "auto (the default)",
                  targets={"min_speedup": SPEED_TARGET} if n in SPEED_TARGET_N else {})
    result.update(problem=problem.name, kind=problem.kind, n=n, metric=metric,
                  n_val=int(val.size), n_test=int(test.size))
    result["met"]["ours_val_ge_powell"] = ours["val_metric"] >= powell["val_metric"]
    result["cpu_speedup"] = powell["cpu_s"] / ours["cpu_s"] if ours["cpu_s"] > 0 else None
    if n <= 3:  # the exact search: its validation metric is the global optimum
        auto = measure(probs, labels, val, test, n, metric, method="auto")
        result["global_optimum_val"] = ours["val_metric"]
        result["powell_gap_to_global"] = ours["val_metric"] - powell["val_metric"]
        result["single_ascent_gap_to_global"] = ours["val_metric"] - single["val_metric"]
        result["auto_gap_to_global"] = ours["val_metric"] - auto["val_metric"]
        result["auto"] = auto
    result["single_ascent"] = single
    result["argmax"] = {
        part: class_metric(labels[rows], probs[rows].argmax(axis=1), n, metric)
        for part, rows in (("val_metric", val), ("test_metric", test))}
    return result


TABLE_COLUMNS = ("problem", "n", "N_val", "metric", "Powell val", "ours val", "Powell test",
                 "ours test", "Powell s", "ours s", "speedup", "CPU x", "target met")


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def table_rows(cases: list[dict[str, Any]]) -> list[list[str]]:
    """One row of ``TABLE_COLUMNS`` per case."""
    rows = []
    for result in cases:
        powell, ours = result["baseline"], result["ours"]
        met = result["met"]
        missed = [name for name, ok in met.items() if not ok]
        verdict = "yes" if not missed else "NO: " + ", ".join(
            {"min_speedup": f"<{SPEED_TARGET:g}x", "ours_val_ge_powell": "val<Powell"}.get(m, m)
            for m in missed)
        cpu = result.get("cpu_speedup")
        rows.append([
            result["problem"], str(result["n"]), str(result["n_val"]), result["metric"],
            f"{powell['val_metric']:.4f}", f"{ours['val_metric']:.4f}",
            f"{powell['test_metric']:.4f}", f"{ours['test_metric']:.4f}",
            _seconds(powell["time_s"]), _seconds(ours["time_s"]),
            f"{result['ratio'].get('speedup', float('nan')):.1f}x",
            "-" if cpu is None else f"{cpu:.1f}x", verdict])
    return rows


def format_table(cases: list[dict[str, Any]]) -> str:
    """The speed table: a header, a rule, one line per case (columns aligned)."""
    rows = [list(TABLE_COLUMNS), *table_rows(cases)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    quick = quick_flag()
    started = time.perf_counter()
    notes: list[str] = [QUICK_NOTE] if quick else []
    problems = build_problems(quick, notes)
    for note in notes:
        print(f"# note: {note}", file=sys.stderr, flush=True)
    cases = []
    for problem in problems:
        val, test = split_halves(problem.labels, seed=problem.n)
        for metric in METRICS:
            result = run_case(problem, metric, val, test)
            cases.append(result)
            print(f"# {result['case']}: powell {result['baseline']['val_metric']:.4f} in "
                  f"{result['baseline']['time_s']:.2f} s, ours {result['ours']['val_metric']:.4f}"
                  f" in {result['ours']['time_s']:.3f} s", file=sys.stderr, flush=True)
    print("\n" + format_table(cases), file=sys.stderr)
    print(f"# {len(cases)} cases in {time.perf_counter() - started:.0f} s; all targets met: "
          f"{all(all(c['met'].values()) for c in cases)}\n", file=sys.stderr, flush=True)
    emit("thresholds", config={
        "quick": quick, "notes": notes,
        "problems": [{"name": p.name, "n": p.n, "rows": int(p.labels.size), "kind": p.kind,
                      "source": p.source, **p.info} for p in problems],
        "test_rows": "the other half of each problem, stratified",
        "baseline": "seed 002 Powell, verbatim, no evaluation cap",
        "targets": f">= {SPEED_TARGET:g}x wall time at n in {list(SPEED_TARGET_N)}; ours >= "
                   "Powell on validation everywhere",
        "timing": f"fastest of 3 fits when the first takes < {SHORT_RUN_S:g} s, else one"},
        cases=cases)


if __name__ == "__main__":
    main()
