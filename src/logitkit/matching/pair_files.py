"""Pair files of ``logitkit pairs``: CSV/TSV with a header, read and written with :mod:`csv`.

Columns (names matched without regard to case or surrounding spaces): ``sentence1`` and
``sentence2``, optionally a gold ``label`` or ``score`` column (numbers: 0/1 labels or graded
scores such as STS's 0-5), and any others, which are kept as they are. ``.tsv`` and ``.tab``
files are tab-separated, anything else comma-separated; both use the standard quoting that
pandas and spreadsheets write (a cell with the separator, a quote or a line break is quoted,
quotes doubled). Files are read as UTF-8 (a byte-order mark is skipped) and written as UTF-8.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logitkit._utils import atomic_output
from logitkit.matching.evaluate import PairSet

SENTENCE_COLUMNS = ("sentence1", "sentence2")
LABEL_COLUMNS = ("label", "score")
SCORE_COLUMN = "predicted_score"
PREDICTION_COLUMN = "predicted_label"


@dataclass(frozen=True)
class PairTable:
    """The rows of a pair file: ``header``, every row's cells, and the pairs they hold.

    ``pairs.scores`` are the gold labels when ``label_column`` is set, else zeros (unlabelled).
    """

    path: Path
    header: list[str]
    rows: list[list[str]]
    pairs: PairSet
    label_column: str | None

    @property
    def labelled(self) -> bool:
        return self.label_column is not None


def delimiter(path: Path) -> str:
    """Tab for ``.tsv``/``.tab`` files, comma otherwise."""
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _column(header: list[str], names: tuple[str, ...], path: Path) -> dict[str, int]:
    """Index of each of ``names`` present in ``header`` (case-insensitive, stripped)."""
    found: dict[str, int] = {}
    for index, cell in enumerate(header):
        key = cell.strip().lower()
        if key in names:
            if key in found:
                raise ValueError(f"{path}: the column {key!r} appears twice in the header")
            found[key] = index
    return found


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-empty rows (with their line numbers) of a CSV/TSV file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such pair file: {path}")
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter(path), strict=True)
        try:
            header = next(reader, None)
            for fields in reader:
                if any(cell.strip() for cell in fields):
                    rows.append((reader.line_num, fields))
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: malformed quoting ({error})") from None
    if header is None:
        raise ValueError(f"{path} is empty; expected a header line with sentence1,sentence2")
    return header, rows


def _parse_label(text: str, path: Path, line: int, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: {name} {text!r} is not finite")
    return value


def _label_column(header: list[str], rows: list[tuple[int, list[str]]],
                  path: Path) -> tuple[str, int] | None:
    """Name and index of the gold column; None without one, or when all its cells are empty."""
    found = _column(header, LABEL_COLUMNS, path)
    if len(found) > 1:
        raise ValueError(f"{path} has both a 'label' and a 'score' column; keep the gold one")
    if not found:
        return None
    name, index = next(iter(found.items()))
    if not any(index < len(fields) and fields[index].strip() for _, fields in rows):
        return None
    return name, index


def read_pairs(path: str | Path) -> PairTable:
    """Read a pair file (see the module docstring); errors name the file and the line.

    A label column whose cells are all empty counts as absent; a row with an empty sentence, an
    empty or non-numeric label, or another number of cells than the header is a ValueError.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    sentences = _column(header, SENTENCE_COLUMNS, path)
    missing = [name for name in SENTENCE_COLUMNS if name not in sentences]
    if missing:
        raise ValueError(f"{path}: the header needs the columns sentence1 and sentence2 "
                         f"(missing: {', '.join(missing)}; found: {', '.join(header)})")
    if not rows:
        raise ValueError(f"{path} holds a header but no pairs")
    label = _label_column(header, rows, path)
    first, second, labels = [], [], []
    for line, fields in rows:
        if len(fields) != len(header):
            raise ValueError(f"{path}:{line}: {len(fields)} cells, but the header has "
                             f"{len(header)}")
        for name in SENTENCE_COLUMNS:
            if not fields[sentences[name]].strip():
                raise ValueError(f"{path}:{line}: empty {name}")
        first.append(fields[sentences["sentence1"]])
        second.append(fields[sentences["sentence2"]])
        if label is not None:
            labels.append(_parse_label(fields[label[1]].strip(), path, line, label[0]))
    gold = np.asarray(labels if labels else np.zeros(len(first)), dtype=np.float64)
    return PairTable(path, header, [fields for _, fields in rows], PairSet(first, second, gold),
                     None if label is None else label[0])


def write_scored_pairs(path: str | Path, table: PairTable, scores: np.ndarray,
                       predictions: np.ndarray | None = None) -> None:
    """The input rows with ``predicted_score`` (and ``predicted_label``, 0/1) appended; atomic.

    Columns of those names already in the input (a scored file read again) are dropped, so no
    stale prediction survives. Scores are written with ``repr`` (read back as the same float64).
    """
    path = Path(path)
    new = [SCORE_COLUMN] + ([] if predictions is None else [PREDICTION_COLUMN])
    ours = (SCORE_COLUMN, PREDICTION_COLUMN)
    keep = [i for i, name in enumerate(table.header) if name.strip().lower() not in ours]
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter(path))
        writer.writerow([table.header[i] for i in keep] + new)
        for row, (fields, score) in enumerate(zip(table.rows, scores, strict=True)):
            extra = [repr(float(score))]
            if predictions is not None:
                extra.append(str(int(predictions[row])))
            writer.writerow([fields[i] for i in keep] + extra)
