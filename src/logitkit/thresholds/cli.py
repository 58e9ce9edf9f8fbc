"""``logitkit thresholds fit|apply``: decision weights or a binary threshold on .npy/.csv files.

    logitkit thresholds fit --probs P --labels L [--metric M] [--method X] [--shrink S]
                            [--train-prior T] [--time-limit SECONDS] [--report FIT.json]
                            [--header [FILE ...]] --out weights.npy
    logitkit thresholds apply --probs P --weights W [--header [FILE ...]]
                              [--out preds.npy|preds.csv]

Multi-class: probabilities are (N, n) non-negative scores, labels N integer class ids in [0, n),
weights n numbers (a weight may be 0: its class switched off), predictions
``argmax(probs * weights)``. ``fit`` tunes them with ``tune_class_weights`` and says on stderr the
validation metric reached and either that it is proven optimal or a proved upper bound on what any
weights reach there and the gap (``--report`` writes the same as JSON); ``apply`` takes any number
of rows, one included, and gives one prediction per row, in order. Binary: ``--probs`` holds one
score per sample (a 1-D array or a single column, any real numbers), labels are 0/1, ``fit``
writes a single threshold ``t`` (exact, metric "accuracy" or "f1") and ``apply`` predicts
``score >= t``.

CSV files are read by ``_files`` (Python's ``csv`` module, UTF-8 with or without a byte-order
mark, commas only). Nothing is guessed:

* a first line with a text cell (``a,b``; ``"class, a"``) or an empty first cell before others
  (pandas' ``,0,1``) is a header; a first line of numbers only is data unless ``--header`` says
  it is a header: bare ``--header``, the first line of every CSV input; ``--header probs labels``
  (names among probs, labels, train-prior for ``fit``; probs, weights for ``apply``), of those
  files only;
* a first column is a row index, dropped, only when the header's first cell is empty (pandas'
  ``to_csv()``), ``Unnamed: 0`` or ``index``; otherwise it is data;
* ``fit``: probabilities and labels must have as many rows, else an error gives both counts (and
  suggests ``--header`` when a numeric first line makes the difference of one); likewise the
  weights of ``apply`` and the ``--train-prior`` of ``fit`` must have one entry per class.

What was read as a header or an index, a first line of integers read as data and skipped blank
lines are said on stderr; lines of different widths and non-numeric or empty cells are errors
that name the line (and column).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from logitkit._utils import atomic_output, check_input_file, check_output_file
from logitkit.thresholds._files import (
    Table,
    as_matrix,
    as_vector,
    check_out,
    index_hint,
    read_table,
    write_array,
)
from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    CLASS_METRICS,
    as_int_labels,
    binary_metric,
    check_probs,
    class_metric,
    metric_weights,
    resolve_metric,
)
from logitkit.thresholds.search import (
    METHODS,
    ClassWeightFit,
    apply_class_weights,
    fit_threshold,
    tune_class_weights,
)

_METRICS = tuple(dict.fromkeys(CLASS_METRICS + BINARY_METRICS))
_HEADER_HELP = ("the first line of every CSV input (with names, e.g. '--header probs', of those "
                "inputs only) is a header, even when it is all numbers (pandas' column names "
                "0,1,...). Without it a first line of numbers is data; one with text, or with an "
                "empty first cell (pandas' index), is always a header")


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit", help="tune weights w so that argmax(probs * w) scores best (binary: a threshold)")
    fit.add_argument("--probs", type=Path, required=True,
                     help="(N, n) probabilities, or N binary scores; .npy/.csv")
    fit.add_argument("--labels", type=Path, required=True, help="N class ids in [0, n)")
    fit.add_argument("--metric", choices=_METRICS, default=None,
                     help="multi-class: accuracy (default), balanced_accuracy, macro_f1, or f1 "
                          "of the class --pos-label; binary scores: accuracy (default) or f1")
    fit.add_argument("--cost-matrix", type=Path, default=None, metavar="C",
                     help="multi-class, instead of --metric: an (n, n) cost matrix C[true, pred] "
                          "(.npy/.csv); the weights minimise the mean cost")
    fit.add_argument("--pos-label", type=int, default=None, metavar="K",
                     help="multi-class --metric f1: the class id whose F1 is tuned")
    fit.add_argument("--method", choices=METHODS, default="auto",
                     help="multi-class only; exact: the proven global optimum (any number of "
                          "classes; beyond about 100 rows x 8 classes for accuracy, far fewer "
                          "for macro_f1, it can take very long: see --time-limit); coordinate: "
                          "coordinate ascent with restarts (not proven); auto: exact for 2 "
                          "classes, 3 classes up to 4000 rows and tiny problems, coordinate "
                          "otherwise; powell: seed 002's baseline")
    fit.add_argument("--shrink", default=None,
                     help="over-fitting guard (multi-class): 'cv' (chosen on 5 folds) or a "
                          "number in [0, 1]: log-weights moved that far toward the prior ratio "
                          "(with --train-prior) or toward plain argmax")
    fit.add_argument("--train-prior", type=Path, default=None,
                     help="n class frequencies or counts of the model's training data")
    fit.add_argument("--time-limit", default=None, metavar="SECONDS",
                     help="multi-class, 4 or more classes: seconds for the exact program "
                          "(--method exact; auto caps it at 1 s); when cut short the best "
                          "weights found are kept and the bound it proved is reported")
    fit.add_argument("--report", type=Path, default=None, metavar="FILE.json",
                     help="multi-class: also write the metric reached, the upper bound, the gap, "
                          "whether it is proven optimal, the method, the shrinkage and the "
                          "weights as JSON (its folder must exist)")
    fit.add_argument("--header", nargs="*",
                     choices=("probs", "labels", "train-prior", "cost-matrix"),
                     default=None, metavar="FILE", help=_HEADER_HELP)
    fit.add_argument("--out", type=Path, required=True,
                     help="weights (or threshold) file, .npy or .csv (its folder must "
                          "exist)")
    apply = actions.add_parser(
        "apply", help="predict argmax(probs * weights) (binary scores: score >= threshold)")
    apply.add_argument("--probs", type=Path, required=True,
                       help="(N, n) probabilities, or N binary scores")
    apply.add_argument("--weights", type=Path, required=True,
                       help="n weights (or the threshold) from `fit`")
    apply.add_argument("--header", nargs="*", choices=("probs", "weights"), default=None,
                       metavar="FILE", help=_HEADER_HELP)
    apply.add_argument("--out", type=Path, default=None,
                       help="predictions file (.npy or .csv, in a folder that exists); "
                            "default: print them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "fit":
        return _fit(args)
    return _apply(args)


def _check_inputs(args: argparse.Namespace, *names: str) -> None:
    """Each input given is an existing file (a folder is named as such), before any work."""
    for name in names:
        path = getattr(args, name.replace("-", "_"))
        if path is not None:
            check_input_file(path, flag=f"--{name}")


def _fit(args: argparse.Namespace) -> int:
    check_out(args.out)
    shrink = _parse_shrink(args.shrink)
    time_limit = _parse_time_limit(args.time_limit)
    if args.report is not None:
        if args.report.resolve() == args.out.resolve():
            raise ValueError(f"--report {args.report} is the --out file; give another name")
        check_output_file(args.report, flag="--report")
    _check_inputs(args, "probs", "labels", "train-prior", "cost-matrix")
    if args.cost_matrix is not None and args.metric is not None:
        raise ValueError("give --metric or --cost-matrix, not both")
    probs_table = _read(args, "probs")
    labels_table = _read(args, "labels")
    probs = as_matrix(probs_table, "--probs")
    labels = as_vector(labels_table, "--labels")
    _check_rows(args, probs_table, probs.shape[0], labels_table, labels.size)
    labels = as_int_labels(labels, name=f"labels in {args.labels}")
    if probs.ndim == 1:
        return _fit_binary(args, probs, labels)
    name = "cost" if args.cost_matrix is not None else args.metric or "accuracy"
    if name == "f1" and args.pos_label is None:
        raise ValueError("--metric f1 on (N, n) probabilities is the F1 of one class: give "
                         "--pos-label K (or a 1-D --probs file of binary scores)")
    check_probs(probs, name=f"--probs {args.probs}")
    prior = None
    if args.train_prior is not None:
        prior_table = _read(args, "train-prior")
        prior = as_vector(prior_table, "--train-prior")
        if prior.size != probs.shape[1]:
            hint = _header_hint(args, prior_table, "train-prior", prior.size, probs.shape[1])
            raise ValueError(f"--train-prior {args.train_prior} has {prior.size} entries but "
                             f"--probs {args.probs} has {probs.shape[1]} classes{hint}")
    n = probs.shape[1]
    metric = resolve_metric(_cost_matrix(args, n) if name == "cost" else name, n, args.pos_label)
    fitted = tune_class_weights(probs, labels, metric=metric, method=args.method, shrink=shrink,
                                train_prior=prior, time_limit=time_limit)
    weights = fitted.weights
    counted = metric_weights(metric, labels, n, None)  # balanced accuracy's sample weights
    before = class_metric(labels, np.argmax(probs, axis=1), n, metric, counted)
    after = class_metric(labels, apply_class_weights(probs, weights), n, metric, counted)
    write_array(args.out, weights)
    label = "minus mean cost" if name == "cost" else name
    if args.report is not None:
        _write_report(args.report, label, fitted)
    print(f"{label}: argmax {before:.6f} -> weighted {after:.6f} "
          f"({args.method}, {labels.size} samples, {n} classes); weights written to {args.out}")
    print(_fit_line(label, fitted), file=sys.stderr)
    return 0


def _cost_matrix(args: argparse.Namespace, n: int) -> np.ndarray:
    """The ``--cost-matrix`` file as an (n, n) array of finite numbers."""
    table = _read(args, "cost-matrix")
    cost = as_matrix(table, "--cost-matrix")
    if cost.shape != (n, n) or not np.all(np.isfinite(cost)):
        raise ValueError(f"--cost-matrix {args.cost_matrix} must hold {n} x {n} finite numbers "
                         f"(C[true, pred] for the {n} classes of --probs), got shape {cost.shape}")
    return cost


def _fit_line(metric: str, fitted: ClassWeightFit) -> str:
    """One line on the fit: the metric reached on the data, and that it is optimal or how far
    from optimal it can be (the proved bound and the gap)."""
    if fitted.proven_optimal:
        return f"validation {metric} {fitted.metric:.4f} ({fitted.method}: proven optimal)"
    shrink = f"; shrink {fitted.shrink:g}" if fitted.shrink else ""
    return (f"validation {metric} {fitted.metric:.4f}; upper bound {fitted.bound:.4f} "
            f"(gap <= {fitted.gap:.4f}; method {fitted.method}{shrink})")


def _write_report(path: Path, metric: str, fitted: ClassWeightFit) -> None:
    """``--report``: the fit as JSON, written atomically."""
    report = {"metric": metric, "value": float(fitted.metric), "bound": float(fitted.bound),
              "gap": float(fitted.gap), "proven_optimal": bool(fitted.proven_optimal),
              "method": fitted.method, "shrink": float(fitted.shrink),
              "weights": [float(w) for w in fitted.weights]}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _parse_shrink(text: str | None) -> float | str | None:
    if text is None or text == "cv":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--shrink must be 'cv' or a number in [0, 1], got {text!r}") from None


def _parse_time_limit(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--time-limit must be a positive number of seconds, got {text!r}")
    return seconds


def _read(args: argparse.Namespace, name: str) -> Table:
    """Read the input ``--name``, with a header if ``--header`` (bare, or naming it) says so;
    print the reader's notes."""
    table = read_table(getattr(args, name.replace("-", "_")), header=_header(args, name))
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    return table


def _header(args: argparse.Namespace, name: str) -> bool:
    """``--header`` given bare (every CSV input) or naming ``name``."""
    return args.header is not None and (not args.header or name in args.header)


def _check_rows(args: argparse.Namespace, probs: Table, n_probs: int, labels: Table,
                n_labels: int) -> None:
    """Probabilities and labels pair up row by row: a different count is an error."""
    if n_probs == n_labels:
        return
    hint = (_header_hint(args, probs, "probs", n_probs, n_labels)
            or _header_hint(args, labels, "labels", n_labels, n_probs))
    raise ValueError(f"--probs {args.probs} has {n_probs} rows but --labels {args.labels} has "
                     f"{n_labels} labels; they must match row by row{hint}")


def _header_hint(args: argparse.Namespace, table: Table, name: str, count: int,
                 expected: int) -> str:
    """Why ``table`` may hold ``count`` entries where ``expected`` are needed: a header line read
    as data (one too many), or one that ``--header`` made a header (one too few)."""
    if count == expected + 1 and table.first_line_is_data:
        return (f" (the first line of {table.path}, all numbers, was read as data: if it is a "
                f"header, pass --header {name})")
    if count == expected - 1 and table.header and _header(args, name):
        return (f" (--header made the first line of {table.path} a header: if it is data, "
                f"name only the other files after --header)")
    return ""


def _fit_binary(args: argparse.Namespace, scores: np.ndarray, labels: np.ndarray) -> int:
    metric = args.metric or "accuracy"
    if metric not in BINARY_METRICS:
        raise ValueError(f"--metric {metric} is for (N, n) probabilities; for binary scores "
                         f"(a 1-D --probs file) use one of {BINARY_METRICS}")
    if (args.method != "auto" or args.shrink is not None or args.train_prior is not None
            or args.time_limit is not None or args.report is not None
            or args.cost_matrix is not None):
        raise ValueError("--method, --shrink, --train-prior, --time-limit, --report and "
                         "--cost-matrix apply to (N, n) probabilities; a binary threshold is "
                         "always fitted exactly")
    threshold = fit_threshold(scores, labels, metric=metric)
    value = binary_metric(labels, (scores >= threshold).astype(np.int64), metric)
    write_array(args.out, np.array([threshold]))
    print(f"{metric}: {value:.6f} at threshold {threshold:.9g} (score >= threshold is 1; "
          f"{labels.size} samples); threshold written to {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_out(args.out)
    _check_inputs(args, "probs", "weights")
    probs_table = _read(args, "probs")
    weights_table = _read(args, "weights")
    weights = as_vector(weights_table, "--weights")
    if weights.size == 1:  # a binary threshold: one score per sample, any real numbers
        scores = as_vector(probs_table, "--probs")
        if not (np.all(np.isfinite(scores)) and np.isfinite(weights[0])):
            raise ValueError("scores and threshold must be finite")
        preds = (scores >= weights[0]).astype(np.int64)
    else:
        probs = probs_table.data
        if probs.ndim == 1 and probs.size == weights.size:  # one sample saved as a 1-D array
            probs = probs[None, :]
        if probs.ndim != 2 or probs.shape[1] != weights.size:
            columns = probs.shape[1] if probs.ndim == 2 else 0
            hint = _header_hint(args, weights_table, "weights", weights.size, columns)
            if not hint and columns == weights.size + 1:
                hint = index_hint(probs_table)
            raise ValueError(f"--probs {args.probs} has shape {probs.shape} but --weights "
                             f"{args.weights} has {weights.size} entries: expected (N, "
                             f"{weights.size}) probabilities{hint}")
        check_probs(probs, name=f"--probs {args.probs}")
        preds = apply_class_weights(probs, weights)
    if args.out is None:
        print("\n".join(map(str, preds.tolist())))
    else:
        write_array(args.out, preds)
        print(f"{preds.size} predictions written to {args.out}")
    return 0
