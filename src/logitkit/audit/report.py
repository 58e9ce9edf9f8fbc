"""Human-readable audit output: a summary, a plot of margins by status, and the remedies."""

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

TOLERANCE = ("tolerance {tol:g} (relative, per class): 'unargmaxable' still holds after pushing "
             "the class's row outward by that fraction; 'tie' means it cannot win but ties at "
             "the top (or would win after such a push)")


def _token(tokenizer: Any, k: int) -> str:
    if tokenizer is None:
        return ""
    token = tokenizer.id_to_token(int(k)) if hasattr(tokenizer, "id_to_token") else None
    if token is None and hasattr(tokenizer, "decode"):
        token = tokenizer.decode([int(k)])
    return repr(token)


def _listed(result: AuditResult, ids: np.ndarray, tokenizer: Any, limit: int) -> str:
    margin = dict(zip(result.classes.tolist(), result.margin.tolist(), strict=True))
    parts = []
    for k in ids[:limit].tolist():
        cert = result.certificates.get(k)
        evidence = f"margin {margin[k]:.2e}" if np.isfinite(margin[k]) else "no input tried"
        if cert is not None:
            evidence += f", certificate: {cert.kind} over {len(cert.support)} rows, residual " \
                        f"{cert.residual:.1e}"
        parts.append(f"{k} {_token(tokenizer, k)}".strip() + f" ({evidence})")
    more = f"; ... (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return "; ".join(parts) + more


def summary(result: AuditResult, tokenizer: Any = None, *, source: str | None = None,
            max_listed: int = 20) -> str:
    """Counts by status and stage, the tolerance, the duplicate groups, the ids of classes that
    cannot win (with tokens, their best margin and certificate), and the remedies."""
    counts, stages, settings = result.counts, result.stage_counts, result.settings
    box = "unbounded inputs" if settings.get("box") is None else f"|z|_inf <= {settings['box']}"
    head = f"a {settings['shape'][0]} x {settings['shape'][1]} head"
    lines = [
        f"audited {len(result.classes)} classes of {head}"
        + (f": {source}" if source else ""),
        f"  {'with' if settings['bias'] else 'no'} bias, {box}, method {settings['method']}, "
        f"{result.timings.get('total_s', 0.0):.1f} s; decided by stage: "
        + ", ".join(f"{name} {count}" for name, count in stages.items()),
        "  " + TOLERANCE.format(tol=settings["tol"]),
        "  margins are relative: (l_k - max_{i != k} l_i) / (|z|_2 median|w_i| + MAD(b)) at the "
        "best input found",
    ]
    lines += [f"  {name + ':':13} {counts[name]}" for name in counts]
    if result.duplicate_groups:
        shown = ", ".join("[" + " ".join(f"{k} {_token(tokenizer, k)}".strip() for k in group)
                          + "]" for group in result.duplicate_groups[:max_listed])
        lines.append(f"  duplicate rows ({len(result.duplicate_groups)} groups): {shown}")
    for name in ("unargmaxable", "tie", "unknown"):
        ids = result.classes[result.status == name]
        if len(ids):
            lines.append(f"  {name} ids: {_listed(result, ids, tokenizer, max_listed)}")
    argmaxable = result.margin[result.status == "argmaxable"]
    if len(argmaxable):
        lines.append(f"  smallest margin of an argmaxable class: {argmaxable.min():.2e}")
    if counts["unargmaxable"]:
        lines.append(REMEDIES)
    return "\n".join(lines)


def plot_margins(result: AuditResult, weight: Any, path: str | Path, *,
                 title: str = "") -> Path:
    """Two panels: each class's relative margin against its row norm (coloured by status), and
    the distribution of margins. Classes that cannot win sit at or below zero."""
    from logitkit._utils import new_figure, save_figure

    norms = np.linalg.norm(np.asarray(weight, dtype=np.float64)[result.classes], axis=1)
    margin = np.where(np.isfinite(result.margin), result.margin, np.nan)
    fig, (left, right) = new_figure(1, 2, figsize=(11, 4))
    styles = {"argmaxable": ("tab:blue", 3), "tie": ("tab:purple", 14),
              "unknown": ("tab:orange", 12), "unargmaxable": ("tab:red", 14)}
    finite = margin[np.isfinite(margin)]
    floor = float(np.abs(finite[finite != 0]).min()) if np.any(finite != 0) else 1e-12
    for status, (color, size) in styles.items():
        mask = result.status == status
        if mask.any():
            left.scatter(norms[mask], margin[mask], s=size, c=color,
                         label=f"{status} ({int(mask.sum())})")
    left.axhline(0.0, color="black", linewidth=0.7)
    left.set_yscale("symlog", linthresh=floor)
    left.set_xlabel("row norm |w_k|")
    left.set_ylabel("relative margin at the best input found")
    left.legend(fontsize=8)
    if len(finite):
        right.hist(finite, bins=60, color="tab:blue")
    right.set_xlabel("relative margin")
    right.set_ylabel("classes")
    settings = result.settings
    fig.suptitle(title or f"{settings['shape'][0]} x {settings['shape'][1]} head: how close each "
                 "class comes to winning")
    path = Path(path)
    save_figure(fig, path)
    return path
