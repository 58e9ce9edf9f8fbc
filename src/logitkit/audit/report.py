"""Human-readable audit output: a summary, a plot of row norms by status, and the remedies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from logitkit.audit.argmaxable import AuditResult

REMEDIES = """Remedies if classes are unargmaxable:
  * normalise the rows (|w_i| = r for all i, no bias): distinct rows of equal norm are all
    argmaxable, since z = w_k gives w_k.w_k = r^2 > w_i.w_k for every other row (Cauchy-Schwarz,
    strict unless w_i = w_k);
  * or add the bias b_i = -|w_i|^2 / 2: then w_i.z + b_i = (|z|^2 - |z - w_i|^2) / 2, so the
    argmax is the row nearest to z, and every distinct row wins at z = w_i."""


def _token(tokenizer: Any, k: int) -> str:
    if tokenizer is None:
        return ""
    token = tokenizer.id_to_token(int(k)) if hasattr(tokenizer, "id_to_token") else None
    return repr(token if token is not None else tokenizer.decode([int(k)]))


def summary(result: AuditResult, tokenizer: Any = None, *, max_listed: int = 50) -> str:
    """Counts by status and by deciding stage, the unargmaxable ids (with tokens), the remedies."""
    counts, stages = result.counts, result.stage_counts
    settings = result.settings
    box = "unbounded inputs" if settings.get("box") is None else f"|z|_inf <= {settings['box']}"
    lines = [
        f"audited {len(result.classes)} classes of a {settings['shape'][0]} x "
        f"{settings['shape'][1]} head ({'with' if settings['bias'] else 'no'} bias, {box}, "
        f"method {settings['method']}) in {result.timings.get('total_s', 0.0):.1f} s",
        f"  argmaxable:   {counts['argmaxable']} (certified fast: {stages.get('fast', 0)}, "
        f"by exact LP: {int(((result.stage == 'exact') & (result.status == 'argmaxable')).sum())}"
        f", by Frank-Wolfe: "
        f"{int(((result.stage == 'frank_wolfe') & (result.status == 'argmaxable')).sum())})",
        f"  unargmaxable: {counts['unargmaxable']}",
        f"  unknown:      {counts['unknown']}",
    ]
    for name, ids in (("unargmaxable", result.unargmaxable), ("unknown", result.unknown)):
        if len(ids):
            shown = ", ".join(f"{k} {_token(tokenizer, k)}".strip() for k in ids[:max_listed])
            more = f" ... (+{len(ids) - max_listed} more)" if len(ids) > max_listed else ""
            lines.append(f"  {name} ids: {shown}{more}")
    if counts["unargmaxable"]:
        lines.append(REMEDIES)
    return "\n".join(lines)


def plot_norms(result: AuditResult, weight: Any, path: str | Path) -> Path:
    """Scatter of each audited row's norm (x: class id) coloured by status; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = np.linalg.norm(np.asarray(weight, dtype=np.float64)[result.classes], axis=1)
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"argmaxable": ("tab:blue", 4), "unknown": ("tab:orange", 12),
              "unargmaxable": ("tab:red", 16)}
    for status, (color, size) in styles.items():
        mask = result.status == status
        if mask.any():
            ax.scatter(result.classes[mask], norms[mask], s=size, c=color,
                       label=f"{status} ({int(mask.sum())})")
    ax.set_xlabel("class id")
    ax.set_ylabel("row norm |w_k|")
    ax.set_title("output-layer row norms by argmaxability")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
