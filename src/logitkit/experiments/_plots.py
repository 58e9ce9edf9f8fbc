"""Paired-difference plots: each seed's difference between two methods, with its 95% interval.

A training claim's verdict reads paired differences over seeds; this plot shows them as they are:
one dot per seed, the mean with its Student-t 95% interval (:func:`._stats.mean_ci`), a line at 0,
and an arrow that says which side is better.

>>> import tempfile, pathlib
>>> panel = PairedPanel("held-out perplexity", "lower",
...                     [("EMO - CE", [-1.2, -0.4, -0.9]), ("TaiLr - CE", [0.3, 0.1, 0.5])])
>>> path = pathlib.Path(tempfile.mkdtemp()) / "paired.png"
>>> plot_paired_differences(path, [panel], title="fine-tuning SmolLM2, 3 paired seeds")
>>> path.exists()
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from logitkit._utils import new_figure, save_figure
from logitkit.experiments._stats import mean_ci


@dataclass(frozen=True)
class PairedPanel:
    """One metric: rows of ``(label, per-seed differences)``, e.g. ``("EMO - CE", [...])``.

    ``better`` ("higher" or "lower") says which sign of the difference favours the first method.
    """

    metric: str
    better: str
    rows: Sequence[tuple[str, Sequence[float]]]

    def __post_init__(self) -> None:
        if self.better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', got {self.better!r}")
        if not self.rows:
            raise ValueError(f"panel {self.metric!r} has no rows")


def plot_paired_differences(path: str | os.PathLike[str], panels: Sequence[PairedPanel], *,
                            title: str, columns: int = 3) -> None:
    """Save one horizontal panel per metric: a row per comparison, its per-seed differences as
    dots, their mean and 95% interval as a bar, and the zero line."""
    if not panels:
        raise ValueError("plot_paired_differences needs at least one panel")
    columns = min(columns, len(panels))
    nrows = math.ceil(len(panels) / columns)
    height = max(len(p.rows) for p in panels) * 0.45 + 1.3
    figure, axes = new_figure(nrows, columns, figsize=(4.3 * columns, height * nrows),
                              squeeze=False)
    for index, panel in enumerate(panels):
        _draw_panel(axes[index // columns][index % columns], panel)
    for index in range(len(panels), nrows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def _draw_panel(ax, panel: PairedPanel) -> None:
    labels = []
    for y, (label, differences) in enumerate(panel.rows):
        summary = mean_ci(differences, digits=12)
        ax.scatter(differences, [y] * len(differences), s=14, color="0.55", zorder=2)
        if summary["ci95"] is not None:
            low, high = summary["ci95"]
            ax.plot([low, high], [y, y], color="C0", linewidth=2.5, zorder=3)
        ax.scatter([summary["mean"]], [y], marker="D", s=30, color="C0", zorder=4)
        labels.append(f"{label}\n(n={len(differences)})")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    arrow = "better →" if panel.better == "higher" else "← better"
    ax.set_xlabel(f"difference in {panel.metric} ({arrow})", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
