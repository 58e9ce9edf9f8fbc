"""Certificates past a memory budget kept in a temporary file: a whole vocabulary's evidence
without its gigabytes resident.

The entropy certificates of interior classes are dense over their pool of ``8 (d + 1)`` rows
(12 bytes a row: an int32 id and a float64 weight). A 151936 x 896 head has 31606 of them: 2.7 GB,
five times its float32 head. :class:`CertificateStore` is the read-only mapping ``{class:
Certificate}`` of an :class:`~logitkit.audit.argmaxable.AuditResult`: the first ``memory_budget``
bytes of rows stay in memory, the rest are appended to an anonymous temporary file (created by
:func:`tempfile.TemporaryFile` in :func:`tempfile.gettempdir`, so ``TMPDIR`` chooses the disk;
the file has no name and is gone when the store is) and read back, one certificate per access.
The evidence is the same either way; only where it waits differs. (A ``TMPDIR`` on a RAM disk,
such as a tmpfs ``/tmp``, keeps the file in memory after all, outside the process's own.)
:class:`RowStore` keeps the points where the witness search settled the same way until the exact
stage takes them, one per class.

Example::

    import numpy as np
    from logitkit.audit.evidence_store import CertificateStore
    from logitkit.audit.verify import Certificate
    store = CertificateStore(memory_budget=0)  # every certificate goes to the file
    store.add(7, Certificate(np.array([1, 2]), np.array([0.5, 0.5]), "depth", 1e-16))
    assert store[7].weights.tolist() == [0.5, 0.5] and store.bytes_on_disk == 24
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO

import numpy as np

from logitkit.audit.verify import Certificate

MEMORY_BUDGET = 16 * 2**20  # bytes of certificate rows held in memory before the file is used


class SpillFile:
    """An anonymous temporary file in ``directory`` (None: ``TMPDIR``) that arrays are appended to
    and read back from; open as long as the object is (closed, and so removed, when collected).

    Raises:
        OSError: the file cannot be created, written or read back whole.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115
        self.size = 0  # bytes written

    def append(self, array: np.ndarray) -> int:
        """Write the bytes of the C-contiguous ``array`` at the end; returns their offset."""
        data, offset = memoryview(array).cast("B"), self.size
        self._file.seek(offset)  # (a read may have moved the position)
        done = 0
        while done < len(data):  # a raw file may take part of a large write
            done += self._file.write(data[done:])
        self.size += len(data)
        return offset

    def read(self, into: np.ndarray, offset: int) -> None:
        """Fill the C-contiguous ``into`` with the bytes written at ``offset``."""
        view = memoryview(into).cast("B")
        self._file.seek(offset)
        done = 0
        while done < len(view):
            got = self._file.readinto(view[done:])
            if not got:
                raise OSError("the spill file ended early: it was changed from outside")
            done += got


class RowStore(Mapping):
    """A mapping ``{key: float32 row}`` of rows of one width kept in a :class:`SpillFile` and read
    back one per access: the points where the witness search settled, which the exact stage
    takes one per class (31639 x 896 floats, 108 MiB, on a 151936 x 896 head).

    Example:
        >>> import numpy as np
        >>> rows = RowStore(3)
        >>> rows.add(4, np.array([1.0, 2.0, 3.0]))
        >>> rows[4].tolist(), rows.get(5), len(rows), rows.bytes_on_disk
        ([1.0, 2.0, 3.0], None, 1, 12)
        >>> moved = rows.rekeyed([(0, 4)])  # the same file, new keys
        >>> list(moved), moved[0].tolist()
        ([0], [1.0, 2.0, 3.0])
    """

    def __init__(self, width: int, directory: str | None = None) -> None:
        self.width, self.directory = width, directory
        self._offsets: dict[int, int] = {}
        self._file: SpillFile | None = None

    def add(self, key: int, row: np.ndarray) -> None:
        """Keep ``row`` (rounded to float32) under ``key``.

        Raises:
            KeyError: ``key`` is already held.
            ValueError: ``row`` is not ``width`` numbers.
        """
        if key in self._offsets:
            raise KeyError(f"a row for {key} is already held")
        row = np.ascontiguousarray(row, dtype=np.float32)
        if row.shape != (self.width,):
            raise ValueError(f"rows here have {self.width} numbers, got shape {row.shape}")
        if self._file is None:
            self._file = SpillFile(self.directory)
        self._offsets[key] = self._file.append(row)

    def __getitem__(self, key: int) -> np.ndarray:
        """The row under ``key`` (float32, read back from the file)."""
        offset = self._offsets[key]
        row = np.empty(self.width, dtype=np.float32)
        self._file.read(row, offset)
        return row

    def __iter__(self) -> Iterator[int]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)

    def rekeyed(self, pairs: Iterable[tuple[int, int]]) -> RowStore:
        """A store over the same file holding, for each ``(new, old)`` pair, the row held under
        ``old`` as ``new`` (nothing is read or copied; rows not named are left out).

        Raises:
            KeyError: an old key is not held.
        """
        store = RowStore(self.width, self.directory)
        store._file = self._file
        store._offsets = {new: self._offsets[old] for new, old in pairs}
        return store

    @property
    def bytes_on_disk(self) -> int:
        return 0 if self._file is None else self._file.size


@dataclass(frozen=True)
class _OnDisk:
    """Where one certificate's rows lie in the file: the ids, then the float64 weights."""

    offset: int
    rows: int
    id_dtype: str
    kind: str
    residual: float
    bound: float


class CertificateStore(Mapping):
    """A mapping ``{key: Certificate}`` that keeps certificates past ``memory_budget`` bytes of
    rows in an anonymous temporary file (module doc).

    Args:
        memory_budget: bytes of support ids and weights held in memory; default None: the
            module's ``MEMORY_BUDGET`` (16 MiB).
        directory: where the temporary file goes; default :func:`tempfile.gettempdir`
            (``TMPDIR``).

    Raises:
        ValueError: ``memory_budget`` negative.
        OSError: the file cannot be created or written (e.g. a full disk), on :meth:`add`.

    Example:
        >>> import numpy as np
        >>> from logitkit.audit.verify import Certificate
        >>> store = CertificateStore(memory_budget=16)  # one row of 12 bytes fits in memory
        >>> store.add(3, Certificate(np.array([0]), np.ones(1), "hull", 0.0))
        >>> store.add(5, Certificate(np.array([1, 2]), np.array([0.25, 0.75]), "depth", 0.0))
        >>> sorted(store), store[5].support.tolist(), store.bytes_on_disk
        ([3, 5], [1, 2], 24)
    """

    def __init__(self, memory_budget: int | None = None, directory: str | None = None) -> None:
        memory_budget = MEMORY_BUDGET if memory_budget is None else memory_budget
        if memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0 bytes, got {memory_budget}")
        self.memory_budget = memory_budget
        self.directory = directory
        self.bytes_in_memory = 0
        self.bytes_on_disk = 0
        self._index: dict[int, Certificate | _OnDisk] = {}
        self._file: SpillFile | None = None

    def add(self, key: int, certificate: Certificate) -> None:
        """Keep ``certificate`` under ``key`` (in memory while the budget lasts, else on disk).

        Args:
            key: the class id.
            certificate: its evidence.

        Raises:
            KeyError: ``key`` is already held.
        """
        if key in self._index:
            raise KeyError(f"a certificate for {key} is already held")
        size = _size(certificate)
        if self.bytes_in_memory + size <= self.memory_budget:
            self._index[key] = certificate
            self.bytes_in_memory += size
            return
        if self._file is None:
            self._file = SpillFile(self.directory)
        support = np.ascontiguousarray(certificate.support)
        weights = np.ascontiguousarray(certificate.weights, dtype=np.float64)
        offset = self._file.append(support)
        self._file.append(weights)
        self._index[key] = _OnDisk(offset=offset, rows=len(support),
                                   id_dtype=support.dtype.str, kind=certificate.kind,
                                   residual=certificate.residual, bound=certificate.bound)
        self.bytes_on_disk = self._file.size

    def __getitem__(self, key: int) -> Certificate:
        record = self._index[key]
        if isinstance(record, Certificate):
            return record
        support = np.empty(record.rows, dtype=np.dtype(record.id_dtype))
        weights = np.empty(record.rows, dtype=np.float64)
        self._file.read(support, record.offset)
        self._file.read(weights, record.offset + support.nbytes)
        return Certificate(support=support, weights=weights, kind=record.kind,
                           residual=record.residual, bound=record.bound)

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def rekeyed(self, entries: Iterable[tuple[int, int | Certificate]]) -> CertificateStore:
        """A new store, in the order given, from ``(new key, old key or Certificate)`` pairs: an
        old key moves its certificate (nothing is copied; an old key may serve several new ones,
        old keys not named are dropped), a Certificate is added. This store's file moves with
        its certificates; this store is left empty.

        Raises:
            KeyError: an old key is not held, or a new key is named twice.
        """
        store = CertificateStore(self.memory_budget, self.directory)
        store._file, store.bytes_on_disk = self._file, self.bytes_on_disk
        for new, old in entries:
            if isinstance(old, Certificate):
                store.add(new, old)
                continue
            if new in store._index:
                raise KeyError(f"{new} is named twice")
            record = store._index[new] = self._index[old]
            if isinstance(record, Certificate):
                store.bytes_in_memory += _size(record)
        self._index, self._file, self.bytes_in_memory, self.bytes_on_disk = {}, None, 0, 0
        return store

    def __reduce__(self) -> tuple:
        # Pickled (e.g. gathered from another rank) as its certificates; rebuilt on arrival with
        # the same budget, so the receiver spills them again.
        return _rebuilt, (self.memory_budget, list(self.items()))

    def __repr__(self) -> str:
        return (f"CertificateStore({len(self)} certificates, {self.bytes_in_memory} bytes in "
                f"memory, {self.bytes_on_disk} on disk)")


def _size(certificate: Certificate) -> int:
    """Bytes held by a certificate's arrays in memory."""
    return certificate.support.nbytes + certificate.weights.nbytes


def _rebuilt(memory_budget: int, items: list[tuple[int, Certificate]]) -> CertificateStore:
    store = CertificateStore(memory_budget)
    for key, certificate in items:
        store.add(key, certificate)
    return store
