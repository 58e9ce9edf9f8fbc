"""``logitkit thresholds fit|apply``: per-class decision weights on .npy or .csv files.

    logitkit thresholds fit --probs P --labels L [--metric M] [--method X] --out weights.npy
    logitkit thresholds apply --probs P --weights W [--out preds.npy|preds.csv]

CSV files are numeric, comma-separated; a first line that is not numeric is taken as a header and
skipped. Probabilities are (N, n), labels N integer class ids in [0, n), weights n numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from logitkit.thresholds.metrics import CLASS_METRICS, as_int_labels, class_metric
from logitkit.thresholds.search import METHODS, apply_class_weights, fit_class_weights


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser("fit", help="tune weights w so that argmax(probs * w) scores best")
    fit.add_argument("--probs", type=Path, required=True, help="(N, n) probabilities, .npy/.csv")
    fit.add_argument("--labels", type=Path, required=True, help="N class ids in [0, n)")
    fit.add_argument("--metric", choices=CLASS_METRICS, default="accuracy")
    fit.add_argument("--method", choices=METHODS, default="coordinate",
                     help="coordinate: exact coordinate ascent; powell: scipy baseline")
    fit.add_argument("--out", type=Path, required=True, help="weights file (.npy or .csv)")
    apply = actions.add_parser("apply", help="predict argmax(probs * weights)")
    apply.add_argument("--probs", type=Path, required=True, help="(N, n) probabilities")
    apply.add_argument("--weights", type=Path, required=True, help="n weights from `fit`")
    apply.add_argument("--out", type=Path, default=None,
                       help="predictions file (.npy or .csv); default: print them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "fit":
        return _fit(args)
    return _apply(args)


def _fit(args: argparse.Namespace) -> int:
    _check_out_name(args.out)
    probs = read_array(args.probs, ndim=2)
    labels = as_int_labels(read_array(args.labels, ndim=1), name=f"labels in {args.labels}")
    weights = fit_class_weights(probs, labels, metric=args.metric, method=args.method)
    n = probs.shape[1]
    before = class_metric(labels, np.argmax(probs, axis=1), n, args.metric)
    after = class_metric(labels, apply_class_weights(probs, weights), n, args.metric)
    write_array(args.out, weights)
    print(f"{args.metric}: argmax {before:.6f} -> weighted {after:.6f} "
          f"({args.method}, {labels.size} samples, {n} classes); weights written to {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    probs = read_array(args.probs, ndim=2)
    weights = read_array(args.weights, ndim=1)
    if args.out is not None:
        _check_out_name(args.out)
    preds = apply_class_weights(probs, weights)
    if args.out is None:
        print("\n".join(map(str, preds.tolist())))
    else:
        write_array(args.out, preds)
        print(f"{preds.size} predictions written to {args.out}")
    return 0


def read_array(path: Path, *, ndim: int) -> np.ndarray:
    """Load a numeric .npy or .csv file as a float array with ``ndim`` dimensions.

    A CSV whose first line does not parse as numbers is read without it (a header). A (N, 1) or
    (1, N) table is accepted where a 1-D array is expected.
    """
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
    if ndim == 1 and array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != ndim:
        raise ValueError(f"{path} must hold a {ndim}-D array, got shape {array.shape}")
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
