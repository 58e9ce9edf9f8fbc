"""``logitkit pairs``: score a pair file with a bi- or cross-encoder, tune or apply a threshold.

    logitkit pairs PAIRS.csv [--model DIR | --cross-encoder DIR] [--out SCORED.csv]
                   [--metrics METRICS.json] [--threshold T | --threshold-file METRICS.json]
                   [--cutoff C] [--batch-size N] [--device D]

PAIRS is a CSV/TSV file with the columns sentence1, sentence2 and optionally a gold label or
score (:mod:`logitkit.matching.pair_files`). Every pair is scored (bi-encoder: cosine of the
embeddings, all-MiniLM-L6-v2 by default; ``--cross-encoder``: a trained one-output
cross-encoder's sigmoid) and the rows are written back with ``predicted_score``, plus
``predicted_label`` (1 iff score >= threshold) when a threshold is known.

With gold labels and no threshold, the threshold is tuned on these pairs (exact, for accuracy;
a second one for F1) and the metrics of sentence-transformers' ``BinaryClassificationEvaluator``
are printed and written as JSON; that JSON is the ``--threshold-file`` of a later run on other
pairs. With ``--threshold``/``--threshold-file`` the given threshold is applied (and scored, when
the pairs have labels). 0/1 labels are binary; graded 0-5 labels use the STS cutoff 3
(``--cutoff`` for another); one class after the cutoff is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logitkit._utils import (
    atomic_output,
    check_input_file,
    check_input_folder,
    check_output_file,
    require,
)
from logitkit.matching.evaluate import (
    _check_both_classes,
    _is_binary,
    best_f1,
    binary_metrics,
    resolve_cutoff,
    spearman,
    tune_threshold,
)
from logitkit.matching.pair_files import PairTable, read_pairs, write_scored_pairs

BI, CROSS = "bi-encoder", "cross-encoder"
METRIC_ROWS = ("accuracy", "f1", "precision", "recall", "ap", "mcc", "spearman")


@dataclass(frozen=True)
class _Thresholds:
    """``threshold`` (accuracy, and ``predicted_label``) and ``f1_threshold``, and their source."""

    threshold: float
    f1_threshold: float
    source: str
    tuned_here: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``logitkit pairs`` to ``parser`` and set its handler to :func:`run`.

    Args:
        parser: the (sub-)parser of the verb, as ``logitkit.cli`` creates it.

    Example:
        >>> import argparse
        >>> from logitkit.matching import cli
        >>> parser = argparse.ArgumentParser(prog="logitkit pairs")
        >>> cli.configure(parser)
        >>> args = parser.parse_args(["dev.csv", "--threshold", "0.6"])
        >>> str(args.pairs), args.threshold, args.cutoff, args.handler is cli.run
        ('dev.csv', 0.6, None, True)
    """
    parser.description = ("Score sentence pairs (CSV/TSV: sentence1, sentence2[, label|score]) "
                          "with a bi- or cross-encoder; with gold labels, tune the threshold "
                          "and report accuracy, F1, precision, recall, AP, MCC and Spearman.")
    parser.add_argument("pairs", type=Path, metavar="PAIRS",
                        help="pair file, .csv or .tsv, with a header")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, default=None, metavar="DIR",
                       help="sentence-transformers folder for the bi-encoder (cosine scores); "
                            "default: the bundled all-MiniLM-L6-v2")
    model.add_argument("--cross-encoder", type=Path, default=None, metavar="DIR",
                       help="trained one-output cross-encoder folder (sigmoid scores)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="scored pairs, .csv or .tsv, in a folder that exists "
                             "(default: PAIRS.scored.csv beside it)")
    parser.add_argument("--metrics", type=Path, default=None, metavar="JSON",
                        help="thresholds and metrics as JSON, when PAIRS has labels, in "
                             "a folder that exists (default: PAIRS.metrics.json beside it)")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--threshold", type=float, default=None, metavar="T",
                       help="apply this threshold (similar iff score >= T) instead of tuning")
    given.add_argument("--threshold-file", type=Path, default=None, metavar="JSON",
                       help="apply the thresholds of an earlier run's --metrics file")
    parser.add_argument("--cutoff", type=float, default=None, metavar="C",
                        help="graded labels: similar iff gold >= CUTOFF (default: 0/1 labels as "
                             "they are, 0-5 scores at 3)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="encoding batch size")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="torch device (cpu, cuda, ...); default: sentence-transformers' "
                             "choice")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``logitkit pairs``: score a pair file, tune or apply the thresholds, write the results.

    Every pair is scored (bi-encoder: cosine; cross-encoder: sigmoid of its logit) and written back
    with ``predicted_score``, and ``predicted_label`` = [score >= threshold] when a threshold is
    known. With gold labels and no given threshold, both thresholds are tuned on these pairs
    (:func:`~logitkit.matching.tune_threshold`, :func:`~logitkit.matching.evaluate.best_f1`) and
    the metrics are printed and written as JSON. Every check (files, outputs, thresholds, labels,
    model folder) comes before the model loads.

    Args:
        args: the namespace of a parser that :func:`configure` set up.

    Returns:
        0, the exit status.

    Raises:
        FileNotFoundError: if the pair file, the model folder or the threshold file is missing.
        ValueError: for a bad pair file, flag or threshold file, labels of one class after the
            cutoff, a folder without a trained one-output cross-encoder head, or a threshold file
            tuned with the other kind of encoder.
        ImportError: (``MissingExtra``) if sentence-transformers (extra ``matching``) is missing.

    Example:
        >>> import argparse, tempfile
        >>> from pathlib import Path
        >>> from logitkit.matching import cli
        >>> parser = argparse.ArgumentParser(prog="logitkit pairs")
        >>> cli.configure(parser)
        >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +ELLIPSIS
        ...     path = Path(folder) / "new.csv"
        ...     _ = path.write_text("sentence1,sentence2\\nA man eats.,He eats.\\n")
        ...     cli.run(parser.parse_args([str(path), "--cutoff", "3"]))  # no labels to cut
        Traceback (most recent call last):
        ValueError: --cutoff applies to gold labels, but ...new.csv has no label or score column
    """
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    table = read_pairs(args.pairs)
    out, metrics_path = _output_paths(args, table)
    given = _given_thresholds(args)
    cutoff = _checked_cutoff(args, table)  # every check before the model loads
    encoder, folder = _encoder(args)
    if args.threshold_file is not None:
        _check_same_model(args.threshold_file, encoder, folder)
    scores = _score(args, table, encoder, folder)
    thresholds = given
    if thresholds is None and table.labelled:
        thresholds = _tune(scores, table.pairs.scores, cutoff)
    predictions = None if thresholds is None else (scores >= thresholds.threshold)
    write_scored_pairs(out, table, scores, predictions)
    _summary(table, encoder, folder, cutoff)
    if table.labelled:
        report = _report(table, scores, thresholds, cutoff, encoder, folder)
        _print_table(report, thresholds)
        _write_json(metrics_path, report)
        print(f"scored pairs written to {out}; thresholds and metrics to {metrics_path}")
        return 0
    if thresholds is not None:
        print(f"{int(predictions.sum())} of {scores.size} pairs similar (score >= "
              f"{thresholds.threshold:.6g}, from {thresholds.source})")
    print(f"scored pairs written to {out}")
    return 0


def _checked_cutoff(args: argparse.Namespace, table: PairTable) -> float | None:
    """The label rule's cutoff (None without labels), after checking both classes are there."""
    if not table.labelled:
        if args.cutoff is not None:
            raise ValueError(f"--cutoff applies to gold labels, but {args.pairs} has no label or "
                             "score column")
        return None
    cutoff = resolve_cutoff(table.pairs.scores, cutoff=args.cutoff)
    _check_both_classes(table.pairs.scores, cutoff=cutoff, name=f"labels of {args.pairs}")
    return cutoff


def _output_paths(args: argparse.Namespace, table: PairTable) -> tuple[Path, Path | None]:
    """``--out`` and ``--metrics`` (defaults beside the pair file), checked writable now
    (their folders must exist)."""
    stem = args.pairs.with_suffix("")
    out = args.out or stem.with_name(f"{stem.name}.scored{args.pairs.suffix or '.csv'}")
    metrics = None
    if table.labelled:
        metrics = args.metrics or stem.with_name(f"{stem.name}.metrics.json")
    elif args.metrics is not None:
        raise ValueError(f"--metrics needs gold labels, but {args.pairs} has no label or score "
                         "column")
    for path in (out, metrics):
        if path is not None and path.resolve() == args.pairs.resolve():
            raise ValueError(f"{path} is the pair file itself; choose another output name")
    check_output_file(out, flag="--out")
    if metrics is not None:
        check_output_file(metrics, flag="--metrics")
    return out, metrics


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _given_thresholds(args: argparse.Namespace) -> _Thresholds | None:
    """``--threshold T`` (both thresholds T) or the thresholds of ``--threshold-file``."""
    if args.threshold is not None:
        value = _finite(args.threshold, "--threshold")
        return _Thresholds(value, value, f"--threshold {value:g}")
    if args.threshold_file is None:
        return None
    saved = _read_threshold_file(args.threshold_file)
    value = _finite(saved.get("threshold"), f"'threshold' in {args.threshold_file}")
    f1_value = _finite(saved.get("f1_threshold", value), f"'f1_threshold' in {args.threshold_file}")
    return _Thresholds(value, f1_value, str(args.threshold_file))


def _read_threshold_file(path: Path) -> dict[str, Any]:
    check_input_file(path, flag="--threshold-file")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error}); expected the --metrics file of an "
                         "earlier `logitkit pairs` run") from None
    if not isinstance(saved, dict) or "threshold" not in saved:
        raise ValueError(f"{path} holds no 'threshold'; expected the --metrics file of an "
                         "earlier `logitkit pairs` run")
    return saved


def _encoder(args: argparse.Namespace) -> tuple[str, Path]:
    """Which kind of model scores the pairs, and its folder (checked, not loaded yet)."""
    from logitkit.matching.encoders import minilm_path

    if args.cross_encoder is not None:
        folder = args.cross_encoder
        _check_trained_head(folder)
        return CROSS, folder.resolve()
    folder = minilm_path() if args.model is None else args.model
    check_input_folder(folder, flag="--model")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} does not exist or holds no config.json")
    return BI, folder.resolve()


def _check_trained_head(folder: Path) -> None:
    """Refuse a folder without a one-output classification head: a new random head would
    score every pair by chance."""
    check_input_folder(folder, flag="--cross-encoder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"cross-encoder folder {folder} does not exist or holds no "
                                "config.json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ValueError(
            f"{folder} holds no trained cross-encoder head (architectures: "
            f"{', '.join(architectures) or 'none'}); a new head would give random scores: pass "
            "a cross-encoder trained for similarity (e.g. by CrossEncoderTrainer), or --model "
            "for a bi-encoder"
        )
    outputs = len(config.get("id2label") or {}) or config.get("num_labels", 1)
    if outputs != 1:
        raise ValueError(f"{folder} is a cross-encoder with {outputs} outputs; pair scores need "
                         "a one-output (similarity) cross-encoder")


def _check_same_model(path: Path, encoder: str, folder: Path) -> None:
    """A threshold file holds on the scale of the model that tuned it: refuse another kind,
    say so when the folder differs."""
    saved = _read_threshold_file(path)
    if saved.get("encoder") not in (None, encoder):
        raise ValueError(f"{path} was tuned with a {saved['encoder']}, but this run scores with "
                         f"a {encoder}: their scores are on other scales")
    if saved.get("model") not in (None, str(folder)):
        print(f"note: {path} was tuned with the model {saved['model']}; this run scores with "
              f"{folder}", file=sys.stderr)


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar (restored after): one bar per run says nothing."""
    logging = require("transformers", extra="matching", purpose="loading encoders").utils.logging
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _score(args: argparse.Namespace, table: PairTable, encoder: str, folder: Path) -> np.ndarray:
    from logitkit.matching.encoders import load_bi_encoder, load_cross_encoder, pair_scores

    loader = load_cross_encoder if encoder == CROSS else load_bi_encoder
    with _no_loading_bar():
        model = loader(folder, device=args.device)
    return pair_scores(model, table.pairs.sentences_a, table.pairs.sentences_b,
                       batch_size=args.batch_size)


def _tune(scores: np.ndarray, gold: np.ndarray, cutoff: float) -> _Thresholds:
    return _Thresholds(tune_threshold(scores, gold, cutoff=cutoff),
                      best_f1(scores, gold, cutoff=cutoff)["threshold"],
                      "tuned on these pairs", tuned_here=True)


def _label_rule(gold: np.ndarray, cutoff: float) -> str:
    if _is_binary(gold) and cutoff == 1.0:
        return "binary, similar iff label == 1"
    return f"similar iff gold >= {cutoff:g}"


def _summary(table: PairTable, encoder: str, folder: Path, cutoff: float | None) -> None:
    text = f"{table.path}: {len(table.pairs)} pairs scored by the {encoder} {folder}"
    if table.labelled:
        labels = table.pairs.scores >= cutoff
        text += (f"; labels ({table.label_column}): {_label_rule(table.pairs.scores, cutoff)}, "
                 f"{int(labels.sum())} similar, {int((~labels).sum())} dissimilar")
    print(text)


def _report(table: PairTable, scores: np.ndarray, thresholds: _Thresholds, cutoff: float,
            encoder: str, folder: Path) -> dict[str, Any]:
    gold = table.pairs.scores
    metrics = binary_metrics(scores, gold, threshold=thresholds.threshold,
                             f1_threshold=thresholds.f1_threshold, cutoff=cutoff,
                             name=f"labels of {table.path}")
    metrics["spearman"] = spearman(scores, gold) if np.ptp(scores) > 0 else float("nan")
    labels = gold >= cutoff
    return {
        "pairs": str(table.path), "n_pairs": len(table.pairs), "encoder": encoder,
        "model": str(folder), "label_column": table.label_column,
        "labels": _label_rule(gold, cutoff), "cutoff": cutoff,
        "n_similar": int(labels.sum()), "n_dissimilar": int((~labels).sum()),
        "thresholds_from": thresholds.source, "threshold": thresholds.threshold,
        "f1_threshold": thresholds.f1_threshold, **metrics,
    }


def _print_table(report: dict[str, Any], thresholds: _Thresholds) -> None:
    """One line per metric with the threshold it was measured at."""
    at = {"accuracy": report["threshold"], "ap": None, "spearman": None}
    print(f"{'metric':<10} {'value':>8}  threshold (similar iff score >= t)")
    for name in METRIC_ROWS:
        where = at.get(name, report["f1_threshold"])
        column = "-" if where is None else f"{where:.6g}"
        print(f"{name:<10} {report[name]:>8.4f}  {column}")
    if thresholds.tuned_here:
        print("note: the thresholds were tuned on these same pairs (as sentence-transformers' "
              "BinaryClassificationEvaluator does), so the numbers are optimistic; apply them "
              "to other pairs with --threshold-file")


def _write_json(path: Path, report: dict[str, Any]) -> None:
    clean = {key: (None if isinstance(value, float) and math.isnan(value) else value)
             for key, value in report.items()}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
