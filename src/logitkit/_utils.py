"""Helpers shared by more than one capability: progress, optional extras, safe output files, plots.

Nothing here imports torch, scipy or matplotlib at module level, so the command line stays fast.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import secrets
import shlex
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

HEARTBEAT_SECONDS = 30.0


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the ``logitkit`` extra to install.

    >>> require("json", extra="none", purpose="reading JSON").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which is not installed: "
            f'pip install "logitkit[{extra}]"'
        ) from error


class _HeartbeatBar(tqdm):
    """A progress bar for logs and pipes: one plain line every ``mininterval`` seconds.

    tqdm redraws its line with carriage returns, which a log file keeps as one ever-growing
    line, and hiding the bar altogether leaves a long job silent. This prints a fresh line instead.
    """

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is None and self.n > 0:
            print(self.format_meter(**self.format_dict), file=sys.stderr, flush=True)
        return True


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """A progress bar on stderr: a live bar on a terminal, a heartbeat line every 30 s elsewhere.

    ``LOGITKIT_PROGRESS=0`` hides it everywhere; ``LOGITKIT_PROGRESS=1`` forces the live bar;
    ``LOGITKIT_HEARTBEAT_S`` changes the heartbeat interval (logs, CI, pipes).
    """
    forced = os.environ.get("LOGITKIT_PROGRESS")
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    if forced == "0":
        kwargs["disable"] = True
        return tqdm(iterable, **kwargs)
    if forced == "1" or sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    interval = float(os.environ.get("LOGITKIT_HEARTBEAT_S", HEARTBEAT_SECONDS))
    kwargs["mininterval"] = interval
    kwargs["miniters"] = 1
    return _HeartbeatBar(iterable, file=sys.stderr, **kwargs)


def _blocking_file(folder: Path) -> Path | None:
    """The first existing ``folder`` or ancestor of it when that is not a folder (a file stands
    where a folder must be created or used), else None."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail now, with a clear message, if ``path`` cannot be written later (before long work).

    Creates the parent folder if needed and tries a temporary file in it; returns ``Path(path)``.
    A folder at ``path``, or a file where one of its parent folders should be, is named as such
    (not "File exists"). For a file the user names on the command line use
    :func:`check_output_file`, which refuses a missing folder instead of creating it.
    """
    return _check_file_target(path, str(path), create_folder=True)


def check_output_file(path: str | os.PathLike[str], *, flag: str) -> Path:
    """An output file (``--json FILE``): fail now, before any work, unless it can be written.

    Its folder must already exist: a file option never creates folders (a mistyped path would
    otherwise leave a stray folder behind). A folder at ``path``, a missing folder, a file where a
    folder should be, or a folder that cannot be written is refused with one line naming ``flag``
    and ``path``. Nothing is left behind (a temporary file is tried and removed). Returns
    ``Path(path)``.

    >>> check_output_file("no-such-folder/out.json", flag="--json")
    Traceback (most recent call last):
    FileNotFoundError: cannot write --json no-such-folder/out.json: the folder no-such-folder \
does not exist; create it first (mkdir -p no-such-folder)
    """
    return _check_file_target(path, f"{flag} {path}", create_folder=False)


def _check_file_target(path: str | os.PathLike[str], label: str, *, create_folder: bool) -> Path:
    """The checks of :func:`check_writable` (``create_folder``) and :func:`check_output_file`,
    with ``label`` naming the target in the messages."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{label} is a folder; expected a file name")
    folder = path.parent
    blocker = _blocking_file(folder)
    if blocker is not None:
        raise NotADirectoryError(f"cannot write {label}: {blocker} is a file, not a folder")
    if not create_folder and not folder.is_dir():
        raise FileNotFoundError(f"cannot write {label}: the folder {folder} does not exist; "
                                f"create it first (mkdir -p {shlex.quote(str(folder))})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", delete=True):
            pass
    except OSError as error:
        raise OSError(f"cannot write {label}: {error.strerror or error}") from error
    return path


def check_output_folder(path: str | os.PathLike[str], *, flag: str) -> Path:
    """An output folder (``--out DIR``): created if needed and tried now; a file at ``path`` or in
    its parents' place is refused with a clear message. Returns ``Path(path)``."""
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker == path:
        raise NotADirectoryError(f"{flag} {path} is a file; expected a folder")
    if blocker is not None:
        raise NotADirectoryError(f"cannot write to {flag} {path}: {blocker} is a file, not a "
                                 "folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".logitkit-check.", delete=True):
            pass
    except OSError as error:
        raise OSError(f"cannot write to {flag} {path}: {error.strerror or error}") from error
    return path


def check_input_file(path: str | os.PathLike[str], *, flag: str) -> Path:
    """An input file (``--probs P``): it must exist and be a file, not a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; expected a file")
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    return path


def check_input_folder(path: str | os.PathLike[str], *, flag: str) -> Path:
    """An input folder (``--data DIR``): it must exist and be a folder, not a file."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{flag} {path} is a file; expected a folder")
    raise FileNotFoundError(f"{flag} {path}: no such folder")


def describe_names(names: Sequence[str], wanted: str | None = None, *, what: str = "names",
                   shown: int = 5) -> str:
    """A short account of ``names`` for an error message: the closest ones to ``wanted`` (difflib,
    or those that contain it), how many there are, and a few of them; never the whole list.

    >>> describe_names(["lm_head.weight", "model.norm.weight", "model.embed_tokens.weight"],
    ...                "lm_head.wieght", what="tensors")
    "closest: 'lm_head.weight'; 3 tensors: 'lm_head.weight', 'model.embed_tokens.weight', \
'model.norm.weight'"
    """
    ordered = sorted(dict.fromkeys(names))
    parts = []
    if wanted is not None and ordered:
        close = difflib.get_close_matches(wanted, ordered, n=3, cutoff=0.6)
        close += [name for name in ordered if wanted and wanted in name and name not in close]
        if close:
            parts.append("closest: " + ", ".join(map(repr, close[:3])))
    if not ordered:
        parts.append(f"no {what}")
    elif len(ordered) <= shown:
        parts.append(f"{len(ordered)} {what}: " + ", ".join(map(repr, ordered)))
    else:
        parts.append(f"{len(ordered)} {what}, e.g. " + ", ".join(map(repr, ordered[:shown]))
                     + ", ...")
    return "; ".join(parts)


def _new_temporary(folder: Path, stem: str, suffix: str) -> Path:
    """Create an empty file with a fresh name in ``folder``, with the mode ``open(name, "w")``
    gives: ``0o666`` less the process umask.

    ``tempfile.mkstemp`` always makes its files 0600. Asking the kernel for 0o666 lets it apply
    the umask (and a folder's default ACL) itself, as for any new file: the umask is never read,
    so there is no ``os.umask`` round trip to race with other threads and no stale copy of it.
    """
    while True:
        name = folder / f".{stem}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file, and an interrupted write leaves the old file intact.
    The temporary name keeps the suffix, so writers that choose a format by extension still work.
    The file gets the mode a plain ``open(path, "w")`` gives: a new file ``0o666`` less the umask
    (0644 under umask 022), a replaced file its former permission bits. The parent folder is
    created if needed (the command line checks its output files with :func:`check_output_file`
    first, which refuses a missing folder).

    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path.parent, path.stem, path.suffix)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` on a ``matplotlib.figure.Figure``, without pyplot.

    No global state changes: a notebook user's matplotlib backend stays as it was. ``kwargs`` go to
    ``Figure.subplots`` (``figsize`` to the figure), e.g. ``new_figure(1, 2, figsize=(8, 3))``.
    """
    figure_module = require("matplotlib.figure", extra="plots", purpose="drawing plots")
    figure = figure_module.Figure(figsize=kwargs.pop("figsize", None), layout="constrained")
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save_figure(figure: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> None:
    """Save a figure from :func:`new_figure` as PNG (or by extension), atomically."""
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=dpi)
