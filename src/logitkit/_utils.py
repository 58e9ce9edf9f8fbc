"""Helpers shared by more than one capability."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm progress bar on stderr.

    Shown on a terminal, hidden when stderr is not one (logs, CI) unless ``LOGITKIT_PROGRESS=1``;
    ``LOGITKIT_PROGRESS=0`` hides it everywhere.
    """
    forced = os.environ.get("LOGITKIT_PROGRESS")
    disable = not sys.stderr.isatty() if forced is None else forced == "0"
    kwargs.setdefault("disable", disable)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
