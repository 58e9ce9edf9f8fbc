"""Human-readable audit output: a summary, a plot of margins by status, and the remedies.

What ``logitkit audit`` prints and draws for an :class:`~logitkit.audit.argmaxable.AuditResult`.

Reference:
    Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but
    Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
    Probability: A Structural Weakness of Neural Language Models", ACL 2020.
"""

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
    """The audit as text: what ``logitkit audit`` prints.

    Lines: the head's shape and source; bias, box, method, time and the count per deciding stage;
    the tolerance; how margins are scaled; the count per status; the duplicate groups; the ids of
    the "unargmaxable", "tie" and "unknown" classes, each with its token, relative margin and
    certificate (kind, support size, residual); the smallest witness margin of an argmaxable
    class (the margin at the witness found, a lower bound on that class's best margin, not the
    head's worst case); and,
    if a class is unargmaxable, the remedies (:data:`REMEDIES`: rows of equal norm, or the bias
    ``b_i = -|w_i|^2 / 2``).

    Args:
        result: the :class:`~logitkit.audit.argmaxable.AuditResult` to describe; no default.
        tokenizer: an object with ``id_to_token(k)`` or ``decode([k])`` to name classes, or None;
            default None.
        source: where the head came from (e.g. ``Head.source``), or None; default None.
        max_listed: the most ids listed per status and duplicate groups shown; default 20.

    Returns:
        The summary, lines joined by newlines (no trailing newline).

    Raises:
        KeyError: ``result.settings`` lacks ``shape``, ``bias``, ``method`` or ``tol`` (a
            hand-made result).

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> print(summary(check_argmaxable(W, show_progress=False)))  # doctest: +ELLIPSIS
        audited 5 classes of a 5 x 2 head
          no bias, unbounded inputs, method exact, ... s; decided by stage: exact 1, fast 4
        ...
          unargmaxable: 1
          unknown:      0
          unargmaxable ids: 4 (margin -5.00e-01, certificate: depth over 4 rows, residual ...)
          smallest witness margin of an argmaxable class: 2.00e-03 (at the witness found; ...
        Remedies if classes are unargmaxable:
        ...
    """
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
        "  margins are witness margins, relative: (l_k - max_{i != k} l_i) / (|z|_2 median|w_i| "
        "+ MAD(b)) at the input z found, a lower bound on each class's best margin; 0 for a tie",
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
        lines.append(f"  smallest witness margin of an argmaxable class: {argmaxable.min():.2e} "
                     "(at the witness found; the class's best margin can be larger)")
    if counts["unargmaxable"]:
        lines.append(REMEDIES)
    return "\n".join(lines)


def _margin_histogram(ax: Any, margins: np.ndarray) -> None:
    """|margin| on log-spaced bins and a log count axis (margins and counts both span decades),
    positive (a class wins) and negative margins apart, exact zeros (ties) counted in the title."""
    parts = {"margin > 0": (margins[margins > 0], "tab:blue"),
             "margin < 0": (-margins[margins < 0], "tab:red")}
    nonzero = np.concatenate([values for values, _ in parts.values()])
    if len(nonzero):
        low, high = float(nonzero.min()), float(nonzero.max())
        bins = np.geomspace(low, high * (1 + 1e-9) if high > low else low * 10, 50)
        for label, (values, color) in parts.items():
            if len(values):
                ax.hist(values, bins=bins, color=color, alpha=0.7, label=f"{label} ({len(values)})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("|relative witness margin| (log scale)")
    ax.set_ylabel("classes (log scale)")
    ax.set_title(f"exact ties (margin 0): {int(np.sum(margins == 0))}", fontsize=9)


def plot_margins(result: AuditResult, weight: Any, path: str | Path, *,
                 title: str = "") -> Path:
    """Draw the audit's margins to a PNG (what ``logitkit audit --plot`` writes).

    Two panels: each audited class's relative witness margin (the margin at the input the audit
    found, a lower bound on its best margin; symmetric log scale) against its row norm
    ``|w_k|_2``, coloured by status, and the histogram of the finite margins. Ties sit at exactly
    zero, unargmaxable classes below it; classes with no input tried (margin -inf) are left
    out.

    Args:
        result: the :class:`~logitkit.audit.argmaxable.AuditResult` to draw; no default.
        weight: the (V, d) weight that was audited (array or array-like), for the row norms; no
            default.
        path: the image file to write (atomically; its folder is created); no default.
        title: the figure title; default "" (the head's shape).

    Returns:
        ``Path(path)``.

    Raises:
        ImportError: matplotlib is not installed (``MissingExtra``: ``pip install
            "logitkit[plots]"``).
        OSError: ``path`` cannot be written.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> out = plot_margins(check_argmaxable(W, show_progress=False), W,
        ...                    pathlib.Path(tmp.name) / "margins.png")
        >>> out.name, out.stat().st_size > 0
        ('margins.png', True)
        >>> tmp.cleanup()
    """
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
    left.set_ylabel("relative witness margin (0: tie)")
    left.legend(fontsize=8)
    _margin_histogram(right, finite)
    settings = result.settings
    fig.suptitle(title or f"{settings['shape'][0]} x {settings['shape'][1]} head: how close each "
                 "class comes to winning")
    path = Path(path)
    save_figure(fig, path)
    return path
