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

from logitkit._utils import atomic_output, check_input_file
from logitkit.matching.evaluate import PairSet

SENTENCE_COLUMNS = ("sentence1", "sentence2")
LABEL_COLUMNS = ("label", "score")
SCORE_COLUMN = "predicted_score"
PREDICTION_COLUMN = "predicted_label"


@dataclass(frozen=True)
class PairTable:
    """The rows of a pair file: ``header``, every row's cells, and the pairs they hold.

    Made by :func:`read_pairs`. ``pairs.scores`` are the gold labels when ``label_column`` is set,
    else zeros (unlabelled); ``labelled`` says which.

    Args:
        path: the file read.
        header: the header's cells, as written.
        rows: every non-empty row's cells, as written (strings), in file order.
        pairs: the sentence pairs of the rows with their gold labels (or zeros).
        label_column: "label" or "score", the gold column used; None without labels.

    Example:
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from logitkit.matching import PairSet
        >>> from logitkit.matching.pair_files import PairTable
        >>> pairs = PairSet(["A man eats."], ["He eats."], np.zeros(1))
        >>> table = PairTable(Path("pairs.csv"), ["sentence1", "sentence2"],
        ...                   [["A man eats.", "He eats."]], pairs, None)
        >>> table.labelled
        False
    """

    path: Path
    header: list[str]
    rows: list[list[str]]
    pairs: PairSet
    label_column: str | None

    @property
    def labelled(self) -> bool:
        """True when the file has a gold ``label`` or ``score`` column with at least one value."""
        return self.label_column is not None


def _delimiter(path: Path) -> str:
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
    check_input_file(path, flag="pair file")
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(path), strict=True)
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
    """Read a pair file: a CSV/TSV whose header holds sentence1, sentence2 and maybe a label.

    Columns are matched without regard to case or surrounding spaces; ``.tsv``/``.tab`` files are
    tab-separated, others comma-separated, with standard CSV quoting; UTF-8 (a byte-order mark is
    skipped). Empty rows are skipped; other columns are kept in ``rows``. A gold ``label`` or
    ``score`` column whose cells are all empty counts as absent.

    Args:
        path: the pair file (str or Path).

    Returns:
        A :class:`PairTable`; its ``pairs.scores`` are the gold labels (zeros when unlabelled).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for an empty file, a missing sentence column, no pairs, both a label and a score
            column, a column named twice, malformed quoting, a row with another number of cells than
            the header, an empty sentence, or an empty, non-numeric or infinite label (the message
            names the file and the line).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from logitkit.matching.pair_files import read_pairs
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "pairs.csv"
        ...     lines = ["sentence1,sentence2,label", "A man eats.,He eats.,1", "I run.,I sing.,0"]
        ...     _ = path.write_text("\\n".join(lines) + "\\n", encoding="utf-8")
        ...     table = read_pairs(path)
        >>> table.label_column, table.pairs.pairs[0], table.pairs.scores
        ('label', ('A man eats.', 'He eats.'), array([1., 0.]))
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
    """Write the rows with ``predicted_score`` (and ``predicted_label``, 0/1) appended; atomic.

    Columns of those names already in the input (a scored file read again) are dropped, so no stale
    prediction survives. Scores are written with ``repr`` (read back as the same float64). The file
    appears complete or not at all (written to a temporary file, then renamed); its separator
    follows its own suffix, as in :func:`read_pairs`.

    Args:
        path: the output file (str or Path).
        table: the rows to write, from :func:`read_pairs`.
        scores: one predicted score per row.
        predictions: one 0/1 predicted label per row (default None: no ``predicted_label`` column).

    Raises:
        ValueError: if ``scores`` has another length than ``table.rows``.
        OSError: if the file cannot be written.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from logitkit.matching.pair_files import read_pairs, write_scored_pairs
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path, out = Path(folder) / "pairs.csv", Path(folder) / "scored.csv"
        ...     _ = path.write_text("sentence1,sentence2\\nA man eats.,He eats.\\n")
        ...     write_scored_pairs(out, read_pairs(path), np.array([0.94]), np.array([1]))
        ...     print(out.read_text(encoding="utf-8"), end="")
        sentence1,sentence2,predicted_score,predicted_label
        A man eats.,He eats.,0.94,1
    """
    path = Path(path)
    new = [SCORE_COLUMN] + ([] if predictions is None else [PREDICTION_COLUMN])
    ours = (SCORE_COLUMN, PREDICTION_COLUMN)
    keep = [i for i, name in enumerate(table.header) if name.strip().lower() not in ours]
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=_delimiter(path))
        writer.writerow([table.header[i] for i in keep] + new)
        for row, (fields, score) in enumerate(zip(table.rows, scores, strict=True)):
            extra = [repr(float(score))]
            if predictions is not None:
                extra.append(str(int(predictions[row])))
            writer.writerow([fields[i] for i in keep] + extra)
