"""Reading and writing the numeric .npy/.csv files of ``logitkit thresholds``.

A .npy file is taken as it is (no header, no index). Everything read is float64.

A .csv file is read with Python's ``csv`` module: cells separated by ``,`` and quoted with ``"``
(``"class, a"`` is one cell, also after a space: ``a, "b, c"``), text decoded as UTF-8 with an
optional byte-order mark (Excel's "CSV UTF-8"); cells are stripped of surrounding spaces.
Nothing is guessed; every decision below is reported in ``Table.notes`` (printed on stderr by
the CLI):

* blank lines, and lines of empty cells only (Excel's ``,,,``), are skipped; such lines between
  the first and the last row are noted;
* the first line is a header when the caller says so (``header=True``, the CLI's ``--header``),
  when one of its cells is text (``a,b``; ``"class, a"``) or when its first cell is empty before
  others (pandas' ``,0,1`` over a row index). Otherwise it is data: a first line of numbers is
  never taken for column names on its own (one of integers only, as pandas' column names
  ``0,1,...`` are, is noted as read as data), and an empty cell among numbers is an error;
* the first column is a row index, and dropped, only when the header names it so: an empty first
  header cell (pandas' ``to_csv()``, R's ``write.csv``), ``Unnamed: 0`` or ``index`` (any case),
  with another column beside it. Without such a header the first column is data whatever it
  holds; one holding ``0..N-1`` or ``1..N`` is noted and sets ``Table.index_like``, for error
  messages;
* every line must have as many cells as the first one, and every cell after the header must be a
  number (``1``, ``-0.5``, ``1e-3``, ``nan``, ``inf``); otherwise a ValueError names the line (as
  counted in the file, from 1) and the column. Only ``,`` separates cells and only ``.`` is a
  decimal point: a ``;``- or tab-separated file is an error that says so.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logitkit._utils import atomic_output, check_output_file

_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)",
                     re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_INDEX_NAMES = ("", "unnamed: 0", "index")


@dataclass
class Table:
    """A numeric table read from ``path``. ``header``: the first line was read as a header;
    ``first_line_is_data``: a CSV's first line, all numbers, was read as data (no header);
    ``index_like``: a CSV's first column, kept as data, holds ``0..N-1`` or ``1..N``."""

    data: np.ndarray
    path: Path
    notes: list[str] = field(default_factory=list)
    header: bool = False
    first_line_is_data: bool = False
    index_like: bool = False


def read_table(path: Path, *, header: bool = False) -> Table:
    """Load ``path`` (.npy or .csv) as a float array: a 2-D table for CSV; ``header``: the CSV's
    first line is a header even if it holds numbers only (see the module docstring)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable numeric .npy file ({error})") from error
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"{path} does not hold numbers (dtype {array.dtype})")
        return Table(np.asarray(array, dtype=np.float64), path)
    if suffix == ".csv":
        return _read_csv(path, header)
    raise ValueError(f"{path}: expected a .npy or .csv file, got {suffix or 'no extension'!r}")


def _read_csv(path: Path, header: bool) -> Table:
    rows, notes = _csv_rows(path)
    if not rows:
        raise ValueError(f"{path} is empty")
    first_line, first = rows[0]
    for line, cells in rows[1:]:
        if len(cells) != len(first):
            raise ValueError(f"{path}: rows have different numbers of columns: line {line} has "
                             f"{len(cells)}, line {first_line} has {len(first)}"
                             f"{_width_hint(first, cells, header)}")
    why = "--header" if header else _header_reason(first)
    has_header = why is not None
    body = rows[1:] if has_header else rows
    if has_header:
        notes.append(f"{path}: line {first_line} read as a header ({why})")
    elif all(_INTEGER.fullmatch(cell) for cell in first) and len(rows) > 1:
        notes.append(f"{path}: first line {','.join(first)} read as data, not as column names "
                     "(pass --header if it is a header)")
    if not body:
        raise ValueError(f"{path} has a header but no data rows{_separator_hint(first)}")
    index = has_header and len(first) > 1 and first[0].lower() in _INDEX_NAMES
    if index:
        name = f"header cell {first[0]!r}" if first[0] else "empty header cell"
        notes.append(f"{path}: first column ({name}) read as a row index and dropped")
    table = np.array([_numbers(path, line, cells, skip=int(index)) for line, cells in body])
    count = table.shape[0]
    index_like = (not index and table.shape[1] > 1 and count > 1
                  and (np.array_equal(table[:, 0], np.arange(count))
                       or np.array_equal(table[:, 0], np.arange(1, count + 1))))
    if index_like:
        notes.append(f"{path}: first column counts the rows ({table[0, 0]:g}, {table[1, 0]:g}, "
                     "...) and is read as data, not as a row index")
    return Table(table, path, notes, has_header, not has_header, index_like)


def _header_reason(cells: list[str]) -> str | None:
    """Why a first line is a header by itself, or None: a cell that is text, or an empty first
    cell before others (pandas' header over an index). Empty cells among numbers are not."""
    text = next((cell for cell in cells if cell and not _NUMBER.fullmatch(cell)), None)
    if text is not None:
        return f"non-numeric cell {text!r}"
    if len(cells) > 1 and not cells[0]:
        return "empty first cell, as pandas writes over a row index"
    return None


def _csv_rows(path: Path) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """The non-blank rows as (line number, stripped cells), and a note on inner blank lines."""
    rows: list[tuple[int, list[str]]] = []
    blank: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, skipinitialspace=True)
            for cells in reader:
                stripped = [cell.strip() for cell in cells]
                if any(stripped):
                    rows.append((reader.line_num, stripped))
                else:
                    blank.append(reader.line_num)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason}); save it as CSV UTF-8"
                         ) from None
    except csv.Error as error:
        raise ValueError(f"{path}: line {reader.line_num}: {error}") from None
    inner = [line for line in blank if rows and rows[0][0] < line < rows[-1][0]]
    notes = []
    if inner:
        shown = ", ".join(map(str, inner[:10])) + (", ..." if len(inner) > 10 else "")
        notes.append(f"{path}: {len(inner)} blank line(s) skipped (line {shown})")
    return rows, notes


def _numbers(path: Path, line: int, cells: list[str], skip: int) -> list[float]:
    for column, cell in enumerate(cells[skip:], start=skip + 1):
        if not _NUMBER.fullmatch(cell):
            what = f"non-numeric cell {cell!r}" if cell else "empty cell"
            raise ValueError(f"{path}: line {line}, column {column}: {what}"
                             f"{_separator_hint(cells)}")
    return [float(cell) for cell in cells[skip:]]


def _separator_hint(cells: list[str]) -> str:
    if any(";" in cell or "\t" in cell for cell in cells):
        return (" (cells must be separated by ',' with '.' as decimal point; this line has ';' or "
                "a tab)")
    return ""


def _width_hint(first: list[str], cells: list[str], header: bool) -> str:
    hint = _separator_hint(first) or _separator_hint(cells)
    if not hint and len(cells) == len(first) + 1 and (header or _header_reason(first)):
        hint = " (a row index column without a header cell? add an empty first header cell)"
    return hint


def as_matrix(table: Table, name: str) -> np.ndarray:
    """The table as (N, n) scores; 1-D .npy arrays and single columns stay 1-D (binary scores)."""
    data = table.data
    if data.ndim == 2 and data.shape[1] == 1:
        return data[:, 0]
    if data.ndim not in (1, 2):
        raise ValueError(f"{name} {table.path} must hold a 1-D or 2-D array, got shape "
                         f"{data.shape}")
    return data


def as_vector(table: Table, name: str) -> np.ndarray:
    """The table as a 1-D array: a column, a single row or a 1-D .npy array."""
    data = table.data
    if data.ndim == 2 and 1 in data.shape:
        return data.reshape(-1)
    if data.ndim != 1:
        raise ValueError(f"{name} {table.path} must hold one value per line (a 1-D array), "
                         f"got shape {data.shape}{index_hint(table)}")
    return data


def index_hint(table: Table) -> str:
    """An error message's tail when the table's first column looks like a row index."""
    if not table.index_like:
        return ""
    return (f" (the first column of {table.path} counts the rows: if it is a row index, delete "
            "it or give the file a header line whose first cell is empty, as pandas writes)")


def check_out(path: Path) -> None:
    """``--out``: a .npy or .csv name that can be written, in a folder that exists (checked
    before any work)."""
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"--out {path}: expected a .npy or .csv file name")
    check_output_file(path, flag="--out")


def write_array(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as .npy or as .csv (one value or row per line), atomically."""
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".npy":
            np.save(tmp, array)
        else:
            fmt = "%d" if np.issubdtype(array.dtype, np.integer) else "%.17g"
            np.savetxt(tmp, array, delimiter=",", fmt=fmt)
