"""Means with Student-t intervals over seeds, and paired differences, for experiment reports.

With one seed there is no interval: the functions say so (``ci95`` is None, "1 seed") rather than
printing a standard deviation of 0.

>>> mean_ci([0.80, 0.82, 0.81])["ci95"]
[0.7852, 0.8348]
>>> fmt_mean_ci([0.5])
'0.5 (1 seed)'
>>> paired_difference([0.9, 0.8, 0.85], [0.7, 0.75, 0.8])["wins"]
3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats


def mean_ci(values: Sequence[float], *, confidence: float = 0.95,
            digits: int = 4) -> dict[str, Any]:
    """``{"mean", "ci95", "n"}``: the mean and a two-sided Student-t interval (None when n < 2).

    The interval is ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample
    standard deviation; numbers are rounded to ``digits`` decimals.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    interval = None
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
        interval = [round(mean - half, digits), round(mean + half, digits)]
    return {"mean": round(mean, digits), "ci95": interval, "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float], **kwargs: Any) -> dict[str, Any]:
    """:func:`mean_ci` of ``a[i] - b[i]`` over paired seeds, plus ``wins`` (how often a > b)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs equal lengths, got {len(a)} and {len(b)}")
    differences = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    return {**mean_ci(differences, **kwargs), "wins": sum(d > 0 for d in differences)}


def fmt_mean_ci(values: Sequence[float], digits: int = 3) -> str:
    """``"0.812 [0.799, 0.825] (n=3)"``, or ``"0.812 (1 seed)"`` when there is one value."""
    summary = mean_ci(values, digits=12)
    mean = f"{summary['mean']:.{digits}g}"
    if summary["ci95"] is None:
        return f"{mean} (1 seed)"
    low, high = (f"{x:.{digits}g}" for x in summary["ci95"])
    return f"{mean} [{low}, {high}] (n={summary['n']})"


def interval_excludes_zero(summary: dict[str, Any]) -> bool:
    """True when a :func:`paired_difference` interval lies entirely above or below zero."""
    interval = summary["ci95"]
    return interval is not None and (interval[0] > 0 or interval[1] < 0)
