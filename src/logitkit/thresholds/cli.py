"""``logitkit thresholds fit|apply``: decision weights or a binary threshold on .npy/.csv files.

    logitkit thresholds fit --probs P --labels L [--metric M] [--method X] --out weights.npy
    logitkit thresholds apply --probs P --weights W [--out preds.npy|preds.csv]

CSV files are numeric, comma-separated; a first line that is not numeric is taken as a header and
skipped. Multi-class: probabilities are (N, n), labels N integer class ids in [0, n), weights n
numbers, predictions ``argmax(probs * weights)``. Binary: ``--probs`` holds one score per sample
(a 1-D array or a single column), labels are 0/1, ``fit`` writes a single threshold ``t`` (exact,
metric "accuracy" or "f1") and ``apply`` predicts ``score >= t``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    CLASS_METRICS,
    as_int_labels,
    binary_metric,
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
    fit.add_argument("--method", choices=METHODS, default="coordinate",
                     help="multi-class only; coordinate: exact coordinate ascent; powell: scipy "
                          "baseline")
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
    _check_out_name(args.out)
    probs = read_array(args.probs, ndim=(1, 2))
    labels = as_int_labels(read_array(args.labels, ndim=1), name=f"labels in {args.labels}")
    if probs.ndim == 1:
        return _fit_binary(args, probs, labels)
    if args.metric not in CLASS_METRICS:
        raise ValueError(f"--metric {args.metric} is for binary scores (a 1-D --probs file); "
                         f"for (N, n) probabilities use one of {CLASS_METRICS}")
    weights = fit_class_weights(probs, labels, metric=args.metric, method=args.method)
    n = probs.shape[1]
    before = class_metric(labels, np.argmax(probs, axis=1), n, args.metric)
    after = class_metric(labels, apply_class_weights(probs, weights), n, args.metric)
    write_array(args.out, weights)
    print(f"{args.metric}: argmax {before:.6f} -> weighted {after:.6f} "
          f"({args.method}, {labels.size} samples, {n} classes); weights written to {args.out}")
    return 0


def _fit_binary(args: argparse.Namespace, scores: np.ndarray, labels: np.ndarray) -> int:
    if args.metric not in BINARY_METRICS:
        raise ValueError(f"--metric {args.metric} is for (N, n) probabilities; for binary scores "
                         f"(a 1-D --probs file) use one of {BINARY_METRICS}")
    if args.method != "coordinate":
        raise ValueError("--method applies to (N, n) probabilities; a binary threshold is always "
                         "fitted exactly")
    threshold = fit_threshold(scores, labels, metric=args.metric)
    value = binary_metric(labels, _predict(scores, np.array([threshold])), args.metric)
    write_array(args.out, np.array([threshold]))
    print(f"{args.metric}: {value:.6f} at threshold {threshold:.9g} (score >= threshold is 1; "
          f"{labels.size} samples); threshold written to {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    probs = read_array(args.probs, ndim=(1, 2))
    weights = read_array(args.weights, ndim=1)
    if args.out is not None:
        _check_out_name(args.out)
    preds = _predict(probs, weights)
    if args.out is None:
        print("\n".join(map(str, preds.tolist())))
    else:
        write_array(args.out, preds)
        print(f"{preds.size} predictions written to {args.out}")
    return 0


def _predict(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``argmax(probs * weights)``, or ``score >= threshold`` for 1-D scores and one weight."""
    if probs.ndim == 2:
        return apply_class_weights(probs, weights)
    if weights.size != 1:
        raise ValueError(f"binary scores (1-D --probs) need a single threshold, got {weights.size} "
                         "weights")
    if not (np.all(np.isfinite(probs)) and np.isfinite(weights[0])):
        raise ValueError("scores and threshold must be finite")
    return (probs >= weights[0]).astype(np.int64)


def read_array(path: Path, *, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Load a numeric .npy or .csv file as a float array with ``ndim`` dimensions (one of them).

    A CSV whose first line does not parse as numbers is read without it (a header). A (N, 1) or
    (1, N) table is read as 1-D where a 1-D array is allowed.
    """
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable numeric .npy file ({error})") from error
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file, got {suffix or 'no extension'!r}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{path} does not hold numbers (dtype {array.dtype})")
    array = np.asarray(array, dtype=np.float64)
    if 1 in allowed and array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim not in allowed:
        wanted = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{path} must hold a {wanted} array, got shape {array.shape}")
    return array


def _read_csv(path: Path) -> np.ndarray:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    if not _is_numeric_row(lines[0]):
        lines = lines[1:]  # header
    rows = [line.split(",") for line in lines]
    if not rows:
        raise ValueError(f"{path} has a header but no data rows")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    try:
        table = np.array([[float(cell) for cell in row] for row in rows])
    except ValueError as error:
        raise ValueError(f"{path} has a non-numeric cell ({error})") from error
    return table[:, 0] if table.shape[1] == 1 else table


def _is_numeric_row(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True


def _check_out_name(path: Path) -> None:
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"--out {path}: expected a .npy or .csv file name")


def write_array(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as .npy or as .csv (one value or row per line)."""
    _check_out_name(path)
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        fmt = "%d" if np.issubdtype(array.dtype, np.integer) else "%.17g"
        np.savetxt(path, array, delimiter=",", fmt=fmt)
