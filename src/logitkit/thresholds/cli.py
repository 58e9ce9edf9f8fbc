"""``logitkit thresholds fit|apply``: decision weights or a binary threshold on .npy/.csv files.

    logitkit thresholds fit --probs P --labels L [--metric M] [--method X] [--shrink S]
                            [--train-prior T] --out weights.npy
    logitkit thresholds apply --probs P --weights W [--out preds.npy|preds.csv]

Multi-class: probabilities are (N, n) non-negative scores, labels N integer class ids in [0, n),
weights n numbers, predictions ``argmax(probs * weights)``; ``apply`` takes any number of rows,
one included. Binary: ``--probs`` holds one score per sample (a 1-D array or a single column, any
real numbers), labels are 0/1, ``fit`` writes a single threshold ``t`` (exact, metric "accuracy"
or "f1") and ``apply`` predicts ``score >= t``. CSV files may carry a header and an index column
as pandas writes them (``_files``); what was read as a header or an index is said on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from logitkit.thresholds._files import (
    Table,
    as_matrix,
    as_vector,
    check_out,
    read_table,
    resolve_header,
    write_array,
)
from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    CLASS_METRICS,
    as_int_labels,
    binary_metric,
    check_probs,
    class_metric,
)
from logitkit.thresholds.search import (
    METHODS,
    apply_class_weights,
    fit_class_weights,
    fit_threshold,
)

_METRICS = tuple(dict.fromkeys(CLASS_METRICS + BINARY_METRICS))


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit", help="tune weights w so that argmax(probs * w) scores best (binary: a threshold)")
    fit.add_argument("--probs", type=Path, required=True,
                     help="(N, n) probabilities, or N binary scores; .npy/.csv")
    fit.add_argument("--labels", type=Path, required=True, help="N class ids in [0, n)")
    fit.add_argument("--metric", choices=_METRICS, default="accuracy",
                     help="multi-class: accuracy or macro_f1; binary scores: accuracy or f1")
    fit.add_argument("--method", choices=METHODS, default="auto",
                     help="multi-class only; auto: exact (global) for 2-3 classes, coordinate "
                          "ascent with restarts otherwise; powell: seed 002's baseline")
    fit.add_argument("--shrink", default=None,
                     help="over-fitting guard (multi-class): 'cv' (chosen on 5 folds) or a "
                          "number in [0, 1]: log-weights moved that far toward the prior ratio "
                          "(with --train-prior) or toward plain argmax")
    fit.add_argument("--train-prior", type=Path, default=None,
                     help="n class frequencies or counts of the model's training data")
    fit.add_argument("--out", type=Path, required=True,
                     help="weights (or threshold) file, .npy or .csv")
    apply = actions.add_parser(
        "apply", help="predict argmax(probs * weights) (binary scores: score >= threshold)")
    apply.add_argument("--probs", type=Path, required=True,
                       help="(N, n) probabilities, or N binary scores")
    apply.add_argument("--weights", type=Path, required=True,
                       help="n weights (or the threshold) from `fit`")
    apply.add_argument("--out", type=Path, default=None,
                       help="predictions file (.npy or .csv); default: print them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "fit":
        return _fit(args)
    return _apply(args)


def _fit(args: argparse.Namespace) -> int:
    check_out(args.out)
    shrink = _parse_shrink(args.shrink)
    probs_table, labels_table = _same_rows(read_table(args.probs, single_column=False),
                                           read_table(args.labels, single_column=True))
    probs = as_matrix(probs_table, "--probs")
    labels = as_int_labels(as_vector(labels_table, "--labels"), name=f"labels in {args.labels}")
    if probs.ndim == 1:
        return _fit_binary(args, probs, labels)
    if args.metric not in CLASS_METRICS:
        raise ValueError(f"--metric {args.metric} is for binary scores (a 1-D --probs file); "
                         f"for (N, n) probabilities use one of {CLASS_METRICS}")
    check_probs(probs, name=f"--probs {args.probs}")
    prior = None
    if args.train_prior is not None:
        prior_table = read_table(args.train_prior, single_column=True)
        _say(prior_table)
        prior = as_vector(resolve_header(prior_table, probs.shape[1]), "--train-prior")
    weights = fit_class_weights(probs, labels, metric=args.metric, method=args.method,
                                shrink=shrink, train_prior=prior)
    n = probs.shape[1]
    before = class_metric(labels, np.argmax(probs, axis=1), n, args.metric)
    after = class_metric(labels, apply_class_weights(probs, weights), n, args.metric)
    write_array(args.out, weights)
    print(f"{args.metric}: argmax {before:.6f} -> weighted {after:.6f} "
          f"({args.method}, {labels.size} samples, {n} classes); weights written to {args.out}")
    return 0


def _parse_shrink(text: str | None) -> float | str | None:
    if text is None or text == "cv":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--shrink must be 'cv' or a number in [0, 1], got {text!r}") from None


def _same_rows(probs: Table, labels: Table) -> tuple[Table, Table]:
    """Resolve ambiguous first rows (``0..k-1``, maybe pandas' column names) so that both files
    have as many rows; both ambiguous: both headers."""
    options = [(1, 1), (0, 0), (1, 0), (0, 1)]
    for drop_probs, drop_labels in options:
        if (drop_probs and not probs.maybe_header) or (drop_labels and not labels.maybe_header):
            continue
        if probs.data.shape[0] - drop_probs == labels.data.shape[0] - drop_labels:
            probs = probs.without_first_row() if drop_probs else probs
            labels = labels.without_first_row() if drop_labels else labels
            break
    _say(probs)
    _say(labels)
    return probs, labels


def _say(table: Table) -> None:
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)


def _fit_binary(args: argparse.Namespace, scores: np.ndarray, labels: np.ndarray) -> int:
    if args.metric not in BINARY_METRICS:
        raise ValueError(f"--metric {args.metric} is for (N, n) probabilities; for binary scores "
                         f"(a 1-D --probs file) use one of {BINARY_METRICS}")
    if args.method != "auto" or args.shrink is not None or args.train_prior is not None:
        raise ValueError("--method, --shrink and --train-prior apply to (N, n) probabilities; a "
                         "binary threshold is always fitted exactly")
    threshold = fit_threshold(scores, labels, metric=args.metric)
    value = binary_metric(labels, (scores >= threshold).astype(np.int64), args.metric)
    write_array(args.out, np.array([threshold]))
    print(f"{args.metric}: {value:.6f} at threshold {threshold:.9g} (score >= threshold is 1; "
          f"{labels.size} samples); threshold written to {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_out(args.out)
    probs_table = read_table(args.probs, single_column=False)
    weights_table = read_table(args.weights, single_column=True)
    probs_table = resolve_header(probs_table)
    columns = probs_table.data.shape[1] if probs_table.data.ndim == 2 else None
    weights_table = resolve_header(weights_table, columns)
    _say(probs_table)
    _say(weights_table)
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
            raise ValueError(f"--probs {args.probs} has shape {probs.shape} but --weights "
                             f"{args.weights} has {weights.size} entries: expected (N, "
                             f"{weights.size}) probabilities")
        check_probs(probs, name=f"--probs {args.probs}")
        preds = apply_class_weights(probs, weights)
    if args.out is None:
        print("\n".join(map(str, preds.tolist())))
    else:
        write_array(args.out, preds)
        print(f"{preds.size} predictions written to {args.out}")
    return 0
