"""Reading and writing the numeric .npy/.csv files of ``logitkit thresholds``, as people write them.

CSV conventions handled (each one is reported in ``Table.notes``, printed by the CLI):

* a header line: any non-numeric or empty cell (``a,b,c``; pandas' ``,0,1`` over an index);
* a header of numbers: a first line of integers over data that is not integer-valued (pandas'
  ``to_csv(index=False)`` writes column names ``0,1,2`` or class names ``1,2,3``);
* a first line ``0,1,...,k-1`` over integer data (pandas' column names again) is ambiguous: it is
  a header when the row count of another file says so (``fit``: probabilities and labels must
  have as many rows), otherwise it is taken as a header where data remain, with a note;
* an index column: the first column when the header's first cell is empty (pandas' ``to_csv()``),
  or when it holds exactly ``0, 1, ..., N-1`` and either the other columns are not integer-valued
  or a single column was expected (``labels``, ``weights``).

A .npy file is taken as it is. Everything read is float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logitkit._utils import atomic_output, check_writable

_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass
class Table:
    """A numeric table read from ``path``; ``maybe_header``: its first row is ``0..k-1`` and
    could be pandas' column names (see the module docstring)."""

    data: np.ndarray
    path: Path
    maybe_header: bool = False
    notes: list[str] = field(default_factory=list)

    def without_first_row(self) -> Table:
        note = (f"{self.path}: first line {_row_text(self.data[0])} read as a header "
                "(pandas' column names), not as data")
        return Table(self.data[1:], self.path, False, [*self.notes, note])


def read_table(path: Path, *, single_column: bool) -> Table:
    """Load ``path`` (.npy or .csv) as a float array: a 2-D table for CSV (see the module
    docstring); ``single_column``: one value per row is expected (labels, weights)."""
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
        return _read_csv(path, single_column)
    raise ValueError(f"{path}: expected a .npy or .csv file, got {suffix or 'no extension'!r}")


def _read_csv(path: Path, single_column: bool) -> Table:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    rows = [[cell.strip().strip('"').strip() for cell in line.split(",")] for line in lines]
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    notes = []
    header, body = rows[0], rows[1:]
    index_header = False
    if not all(_is_number(cell) for cell in header):
        index_header = header[0] == ""
        notes.append(f"{path}: first line read as a header")
    elif body and all(_INTEGER.match(c) for c in header) and not _all_integers(body):
        notes.append(f"{path}: first line {','.join(header)} read as a header (integer column "
                     "names over non-integer data)")
    else:
        body, header = rows, None
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    try:
        table = np.array([[float(cell) for cell in row] for row in body])
    except ValueError as error:
        raise ValueError(f"{path} has a non-numeric cell ({error})") from error
    integer_rows = _all_integers(body)
    if table.shape[1] > 1 and (index_header or _is_index(body, single_column, integer_rows)):
        notes.append(f"{path}: first column read as a row index and dropped")
        table = table[:, 1:]
        integer_rows = _all_integers([row[1:] for row in body])
    maybe_header = (header is None and table.shape[0] > 1 and integer_rows
                    and np.array_equal(table[0], np.arange(table.shape[1])))
    return Table(table, path, maybe_header, notes)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _all_integers(rows: list[list[str]]) -> bool:
    return all(_INTEGER.match(cell) for row in rows for cell in row)


def _is_index(rows: list[list[str]], single_column: bool, integer_rows: bool) -> bool:
    """The first column holds exactly 0..N-1 and is not plausibly data (module docstring)."""
    first = [row[0] for row in rows]
    if len(rows) < 2 or first != [str(i) for i in range(len(rows))]:
        return False
    return (single_column and len(rows[0]) == 2) or not _all_integers([r[1:] for r in rows])


def _row_text(row: np.ndarray) -> str:
    return ",".join(f"{x:g}" for x in row)


def resolve_header(table: Table, rows: int | None = None) -> Table:
    """Drop an ambiguous first row ``0..k-1`` unless ``rows`` (the count another file demands)
    says it is data; with no count, drop it if data remain."""
    if not table.maybe_header:
        return table
    if rows is not None:
        return table.without_first_row() if table.data.shape[0] == rows + 1 else table
    return table.without_first_row() if table.data.shape[0] > 1 else table


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
                         f"got shape {data.shape}")
    return data


def check_out(path: Path) -> None:
    """A .npy or .csv name that can be written (checked before any work)."""
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"--out {path}: expected a .npy or .csv file name")
    check_writable(path)


def write_array(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as .npy or as .csv (one value or row per line), atomically."""
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".npy":
            np.save(tmp, array)
        else:
            fmt = "%d" if np.issubdtype(array.dtype, np.integer) else "%.17g"
            np.savetxt(tmp, array, delimiter=",", fmt=fmt)
