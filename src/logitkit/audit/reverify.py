"""Re-verify a saved audit (``logitkit audit --json OUT --evidence``) against its head, anew.

Nothing here calls the audit's search or its own checks: every witness and certificate of the JSON
is checked again in float64 from the head ``W, b`` as read, by the inequalities of
:data:`EVIDENCE_CONVENTION` (also written into every JSON with evidence, so that a third party can
reimplement the check without reading this code). In brief, with ``d_i = w_k - w_i``,
``c_i = b_k - b_i``, ``l = W z + b``, ``e_i = gamma_{d+2} (|w_i|_2 |z|_2 + |b_i|)`` and, for a
certificate ``a`` over ``S``, ``g = sum_i a_i d_i``, ``c_a = sum_i a_i c_i``,
``size = sum_i a_i |d_i|_1`` and ``rho = gamma_{|S|+2} size``:

* argmaxable witness: ``(l_k - l_i) - 2 (e_k + e_i) > 0`` for every ``i != k``;
* tie witness: ``(l_k - l_i) + 2 (e_k + e_i) >= -tau`` for every ``i != k``;
* "hull": ``|g|_1 + rho <= tol / 64 * size`` and ``c_a <= tol sum_i a_i |c_i|``;
* "depth": as "hull" for row ``k`` pushed outward by the tolerance: ``|g + s|_1 + rho <= tol / 64
  * size`` with ``s = tol (w_k - m_k)``, ``m_k`` the mean of the other distinct rows (no bias),
  or ``c_a <= -tol beta_k + tol sum_i a_i |c_i|`` (bias; ``beta_k`` the median bias gap);
* "inner" (a tie): as "depth" for row ``k`` pushed inward: ``|g - s|_1 + rho <= tol / 64 * size``,
  or ``c_a <= +tol beta_k + tol sum_i a_i |c_i|``;
* "box": ``B (|g|_1 + rho) + c_a + gamma_{|S|+2} sum_i a_i |c_i|`` below ``-tau_S``
  (unargmaxable) or at most ``tau`` (tie).

``gamma_n = n u / (1 - n u)``, ``u = 2^-53``. For every ``z``, ``min_i (d_i . z + c_i) <=
g . z + c_a`` (a convex combination is at least the minimum), which is why a certificate's
inequalities prove that ``k`` cannot win.

Example:
    >>> import json
    >>> import numpy as np
    >>> from logitkit.audit import check_argmaxable
    >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
    >>> payload = json.loads(check_argmaxable(W, show_progress=False).to_json(
    ...     include_evidence=True))
    >>> report = verify_saved_result(W, None, payload)
    >>> report.ok, report.verified
    (True, {'argmaxable': 4, 'tie': 0, 'unargmaxable': 1})
    >>> payload["witnesses"]["0"] = [1.0, 0.0]  # class 1 wins there, not class 0
    >>> verify_saved_result(W, None, payload).failures  # doctest: +ELLIPSIS
    ['class 0 (argmaxable): the witness does not win strictly (worst pair with row 1: ...)']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

UNIT_ROUNDOFF = 2.0**-53
RESIDUAL_SHARE = 1.0 / 64  # the share of tol a certificate's residual may use
WEIGHT_SUM_SLACK = 1e-9  # |sum_i a_i - 1| allowed
BLOCK = 256  # witnesses per matrix product
ROW_BLOCK = 4096  # certificate rows per block

EVIDENCE_CONVENTION: dict[str, str] = {
    "notation": (
        "W (V x d) and b (zeros when settings.bias is false) are the head as read; all arithmetic "
        "in float64; tol = settings.tol; B = settings.box (null: no box). For a class k (a key of "
        "witnesses/certificates) and a row i: d_i = w_k - w_i, c_i = b_k - b_i; logits l = W z + "
        "b; gamma_n = n u / (1 - n u), u = 2^-53; 'distinct rows' are the distinct pairs "
        "(w_i, b_i); beta_k = 0 without a bias, else numpy.median of |b_k - b_i| over the "
        "distinct rows i (row k's own included; their max if that median is 0)."),
    "witness": (
        "witnesses[k] = z (d floats), for argmaxable and tie classes; e_i = gamma_{d+2} "
        "(|w_i|_2 |z|_2 + |b_i|) bounds the rounding error of the computed l_i. With a box "
        "|z|_inf <= B. argmaxable: (l_k - l_i) - 2 (e_k + e_i) > 0 for every i != k (k wins "
        "strictly for the exact head; a tie is not a win). tie: (l_k - l_i) + 2 (e_k + e_i) >= "
        "-tau for every i != k, tau = tol (|z|_2 max_{i in S} |d_i|_2 + beta_k) with S the "
        "support of certificates[k], or, when that certificate's kind is 'box', tau = tol (B "
        "max_{i != k} |d_i|_1 + max_{i != k} |c_i|)."),
    "certificate": (
        "certificates[k] = {support S (row ids, k not among them), weights a (a_i >= 0, "
        "|sum_i a_i - 1| <= 1e-9), kind, residual, bound}. Recompute g = sum_{i in S} a_i d_i, "
        "c_a = sum a_i c_i, size = sum a_i |d_i|_1, csize = sum a_i |c_i| and rho = "
        "gamma_{|S|+2} size (bounds the rounding error of |g|_1). For every z, min_i (d_i . z + "
        "c_i) <= g . z + c_a, so the inequalities of each kind prove that k cannot win. "
        "residual: the audit's (|g + s|_1 + rho) / size (information only)."),
    "hull": (
        "kind 'hull' (a tie): |g|_1 + rho <= (tol / 64) size and c_a <= tol csize; bound = c_a. "
        "k never wins strictly, for a head whose rows in S move by tol/64 relative (backward "
        "error); a duplicate row gives S = [that row], a = [1], g = 0, c_a = 0."),
    "depth": (
        "kind 'depth' (unargmaxable): k cannot win even after row k is pushed OUTWARD (away from "
        "the centroid) by the tolerance. No bias: s = tol (w_k - m_k), m_k the mean of the "
        "distinct rows other than w_k, and |g + s|_1 + rho <= (tol / 64) size (w_k + s lies in "
        "the hull of the rows S). With a bias: |g|_1 + rho <= (tol / 64) size and c_a <= "
        "-delta + tol csize, delta = tol beta_k (b_k raised by delta). bound = c_a."),
    "inner": (
        "kind 'inner' (a tie): as 'depth' with row k pushed INWARD (towards the centroid) by the "
        "tolerance: |g - s|_1 + rho <= (tol / 64) size without a bias; with a bias |g|_1 + rho "
        "<= (tol / 64) size and c_a <= +delta + tol csize (b_k lowered by delta). k never wins "
        "by more than the tolerance: it lies within the tolerance of the hull's boundary, on "
        "either side (a class outside the hull by less than float64 can show is such a tie)."),
    "box": (
        "kind 'box' (needs B): beta = B (|g|_1 + rho) + c_a + gamma_{|S|+2} csize bounds the best "
        "margin min_{i != k} (d_i . z + c_i) over |z|_inf <= B, and bound >= beta (up to "
        "rounding). unargmaxable: beta < -tol (B max_{i in S} |d_i|_1 + max_{i in S} |c_i|); "
        "tie: beta <= tol (B max_{i != k} |d_i|_1 + max_{i != k} |c_i|). (The audit's own "
        "threshold is over the rows of its LP, a superset of S: its acceptance implies these.)"),
    "ball": (
        "with settings.min_radius = r (needs B; the question of Grivas et al. 2022): a class is "
        "argmaxable when a ball of radius r around some z with |z|_inf <= B lies where it wins. "
        "Witness: (l_k - l_i) - 2 (e_k + e_i) >= r |d_i|_2 (1 + gamma_{d+2}) for every i != k "
        "(a tie: r (1 - tol)). Certificate kind 'ball': beta = (B (|g|_1 + rho) + c_a + "
        "gamma' csize) / (sum_i a_i |d_i|_2 (1 - gamma')) (1 + 2 gamma'), gamma' = "
        "gamma_{|S|+d+2}, bounds the largest such radius (r sum a_i |d_i|_2 <= g . z + c_a); "
        "unargmaxable: beta < r (1 - tol); tie: beta <= r (1 + tol)."),
    "statuses": (
        "argmaxable: a witness (n_classes minus the listed tie, unargmaxable and unknown ids "
        "equals the number of argmaxable witnesses); tie: a witness and a 'hull', 'inner' or "
        "'box' certificate; unargmaxable: a 'depth' or 'box' certificate; unknown: no claim. Ids, "
        "witnesses and bounds refer to the head as read (settings.rescaled_by is undone). "
        "Check: logitkit audit PATH --verify RESULT.json."),
}


@dataclass
class VerificationReport:
    """What :func:`verify_saved_result` found.

    Args:
        verified: ``{status: n}``, the classes of each status whose evidence checked out.
        failures: one line per class whose evidence failed (or is missing or unexpected).
        settings_problems: the JSON's settings that do not match the head given.
        unknown: classes without a claim ("unknown"), not checked.

    Returns:
        The record; :attr:`ok` when nothing failed.

    Example:
        >>> VerificationReport({"argmaxable": 2, "tie": 0, "unargmaxable": 1}).ok
        True
    """

    verified: dict[str, int]
    failures: list[str] = field(default_factory=list)
    settings_problems: list[str] = field(default_factory=list)
    unknown: int = 0

    @property
    def ok(self) -> bool:
        """True when the settings match and every witness and certificate checked out."""
        return not self.failures and not self.settings_problems

    def lines(self) -> list[str]:
        """The report as printed by ``logitkit audit --verify``.

        Example:
            >>> VerificationReport({"argmaxable": 2, "tie": 0, "unargmaxable": 1}).lines()[0]
            'verified: argmaxable 2, tie 0, unargmaxable 1 (unknown, not checked: 0)'
        """
        counts = ", ".join(f"{name} {n}" for name, n in self.verified.items())
        out = [f"verified: {counts} (unknown, not checked: {self.unknown})"]
        out += [f"settings mismatch: {problem}" for problem in self.settings_problems]
        out += [f"FAILED {failure}" for failure in self.failures]
        out.append("all evidence verified" if self.ok else
                   f"{len(self.failures) + len(self.settings_problems)} problem(s)")
        return out


def _gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``, ``u = 2^-53``: a bound on the relative rounding error of a
    float64 sum or dot product of ``n`` terms (any order)."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def _distinct(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The distinct pairs ``(w_i, b_i)`` as rows ``(V', d + 1)``."""
    return np.unique(np.hstack([weight, bias[:, None]]), axis=0)


def _beta(bias: np.ndarray, distinct: np.ndarray, k: int) -> float:
    """``beta_k``: the median over distinct rows of ``|b_k - b_i|`` (their max if it is 0)."""
    gaps = np.abs(bias[k] - distinct[:, -1])
    return float(np.median(gaps)) or float(gaps.max())


def _pair_gaps(weight: np.ndarray, bias: np.ndarray, ks: np.ndarray,
               zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l_k - l_i, 2 (e_k + e_i))`` per witness (rows) and row ``i`` (columns); the column
    ``i = k`` is set to ``(+inf, 0)`` so that it never decides a minimum."""
    rows = np.arange(len(ks))
    logits = zs @ weight.T + bias
    errors = _gamma(weight.shape[1] + 2) * (np.outer(np.linalg.norm(zs, axis=1),
                                                     np.linalg.norm(weight, axis=1))
                                            + np.abs(bias))
    gaps = logits[rows, ks][:, None] - logits
    allowance = 2.0 * (errors[rows, ks][:, None] + errors)
    gaps[rows, ks], allowance[rows, ks] = np.inf, 0.0
    return gaps, allowance


@dataclass
class _Combination:
    """A certificate recomputed from the head (the ``certificate`` entry of the convention)."""

    g: np.ndarray
    c_a: float
    size: float
    csize: float
    rho: float
    gamma: float
    max_l1: float  # max_{i in S} |d_i|_1
    max_l2: float  # max_{i in S} |d_i|_2
    max_gap: float  # max_{i in S} |c_i|
    l2_size: float  # sum_{i in S} a_i |d_i|_2


def _combination(weight: np.ndarray, bias: np.ndarray, k: int, support: np.ndarray,
                 a: np.ndarray) -> _Combination:
    g = np.zeros(weight.shape[1])
    size = max_l1 = max_l2 = l2_size = 0.0
    for start in range(0, len(support), ROW_BLOCK):  # a dense certificate lists every row
        part = slice(start, start + ROW_BLOCK)
        diffs = weight[k] - weight[support[part]]
        g += a[part] @ diffs
        l1 = np.abs(diffs).sum(1)
        size += float(a[part] @ l1)
        max_l1 = max(max_l1, float(l1.max()))
        l2 = np.linalg.norm(diffs, axis=1)
        max_l2 = max(max_l2, float(l2.max()))
        l2_size += float(a[part] @ l2)
    gaps = bias[k] - bias[support]
    gamma = _gamma(len(support) + 2)
    return _Combination(g=g, c_a=float(a @ gaps), size=size, csize=float(a @ np.abs(gaps)),
                        rho=gamma * size, gamma=gamma, max_l1=max_l1, max_l2=max_l2,
                        max_gap=float(np.abs(gaps).max()), l2_size=l2_size)


def _read_certificate(entry: Any, k: int, n_rows: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(support, weights, kind)`` of a JSON certificate; ValueError where malformed."""
    try:
        support = np.asarray(entry["support"], dtype=np.int64)
        a = np.asarray(entry["weights"], dtype=np.float64)
        kind = str(entry["kind"])
        float(entry["bound"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed certificate ({error})") from None
    if support.ndim != 1 or a.shape != support.shape or len(support) == 0:
        raise ValueError("support and weights must be non-empty lists of the same length")
    if support.min() < 0 or support.max() >= n_rows or np.any(support == k):
        raise ValueError(f"support ids must be rows of the head other than {k}")
    if not np.all(np.isfinite(a)) or np.any(a < 0) or abs(float(a.sum()) - 1.0) > WEIGHT_SUM_SLACK:
        raise ValueError("weights must be >= 0 and sum to 1")
    return support, a, kind


def _certificate_failure(weight: np.ndarray, bias: np.ndarray, has_bias: bool,
                         distinct: np.ndarray, k: int, status: str, entry: Any, tol: float,
                         box: float | None, min_radius: float | None = None,
                         ) -> tuple[str | None, _Combination | None, str]:
    """``(failure or None, the recomputed combination, kind)`` for ``certificates[k]``."""
    try:
        support, a, kind = _read_certificate(entry, k, len(weight))
    except ValueError as error:
        return str(error), None, ""
    allowed = {"tie": ("hull", "inner", "box"), "unargmaxable": ("depth", "box")}[status]
    if min_radius is not None:
        allowed = ("ball",)
    if kind not in allowed:
        return f"a {status} needs a certificate of kind {' or '.join(allowed)}, got {kind!r}", \
            None, kind
    if kind == "box" and box is None:
        return "a 'box' certificate without a box in the settings", None, kind
    comb = _combination(weight, bias, k, support, a)
    if kind == "ball":
        return _ball_failure(comb, status, box, min_radius, tol, weight.shape[1], len(support)), \
            comb, kind
    limit = tol * RESIDUAL_SHARE * comb.size
    if kind == "box":
        beta = box * (float(np.abs(comb.g).sum()) + comb.rho) + comb.c_a + comb.gamma * comb.csize
        if beta > float(entry["bound"]) + comb.gamma * (box * comb.size + comb.csize):
            return f"recorded bound {entry['bound']:.6g} is below the recomputed {beta:.6g}", \
                comb, kind
        if status == "unargmaxable":
            tau = tol * (box * comb.max_l1 + comb.max_gap)
            if not beta < -tau:
                return f"box bound {beta:.6g} is not below -tau = {-tau:.6g}", comb, kind
            return None, comb, kind
        others = np.arange(len(weight)) != k
        tau = tol * (box * float(np.abs(weight[k] - weight[others]).sum(1).max())
                     + float(np.abs(bias[k] - bias[others]).max()))
        if beta > tau:
            return f"box bound {beta:.6g} exceeds tau = {tau:.6g}", comb, kind
        return None, comb, kind
    direction = {"depth": 1.0, "inner": -1.0}.get(kind, 0.0)  # pushed outward, inward, not
    g, pushed = comb.g, direction != 0 and not has_bias
    if pushed:
        others = distinct[np.any(distinct[:, :-1] != weight[k], axis=1), :-1]
        g = g + direction * tol * (weight[k] - others.mean(0))
    off = float(np.abs(g).sum()) + comb.rho
    if off > limit:
        sign = "" if not pushed else " + s" if direction > 0 else " - s"
        return (f"|g{sign}|_1 + rho = {off:.6g} exceeds (tol / 64) size = {limit:.6g}"), \
            comb, kind
    if has_bias:
        target = -direction * tol * _beta(bias, distinct, k)
        if comb.c_a > target + tol * comb.csize:
            named = {1.0: "-delta", -1.0: "+delta"}.get(direction, "0")
            return (f"c_a = {comb.c_a:.6g} exceeds {target + tol * comb.csize:.6g} "
                    f"({named} + tol csize)"), comb, kind
    if comb.c_a > float(entry["bound"]) + comb.gamma * comb.csize:
        return f"recorded bound {entry['bound']:.6g} is below c_a = {comb.c_a:.6g}", comb, kind
    return None, comb, kind


def _ball_failure(comb: _Combination, status: str, box: float, min_radius: float, tol: float,
                  d: int, n_support: int) -> str | None:
    """The 'ball' entry of the convention: the duality bound on the largest radius."""
    gamma = _gamma(n_support + d + 2)
    numerator = box * (float(np.abs(comb.g).sum()) + comb.rho) + comb.c_a + gamma * comb.csize
    denominator = comb.l2_size * (1.0 - gamma)
    if not denominator > 0:
        return "sum_i a_i |d_i|_2 is 0"
    bound = numerator / denominator
    bound += abs(bound) * 2.0 * gamma
    limit = min_radius * (1.0 - tol) if status == "unargmaxable" else min_radius * (1.0 + tol)
    if status == "unargmaxable" and not bound < limit:
        return f"ball bound {bound:.6g} is not below r_min (1 - tol) = {limit:.6g}"
    if status == "tie" and bound > limit:
        return f"ball bound {bound:.6g} exceeds r_min (1 + tol) = {limit:.6g}"
    return None


def _ball_radii(weight: np.ndarray, ks: np.ndarray, gaps: np.ndarray,
                allowance: np.ndarray) -> np.ndarray:
    """Lower bounds on the radius of the ball around each witness where its class wins:
    ``min_i (gap_i - allowance_i) / |d_i|_2`` (``|d_i|_2`` rounded up by ``gamma_{d+2}``)."""
    radii = np.empty(len(ks))
    for j, k in enumerate(ks.tolist()):
        lengths = np.linalg.norm(weight[k] - weight, axis=1) * (1.0 + _gamma(weight.shape[1] + 2))
        slack = gaps[j] - allowance[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(slack >= 0, slack / lengths, -np.inf)
        ratio[k] = np.inf
        radii[j] = float(ratio.min())
    return radii


def _settings_problems(settings: dict[str, Any], weight: np.ndarray, has_bias: bool,
                       distinct: np.ndarray) -> list[str]:
    problems = []
    if list(settings.get("shape", [])) != list(weight.shape):
        problems.append(f"shape {settings.get('shape')} in the JSON, {list(weight.shape)} in "
                        "the head")
    if bool(settings.get("bias")) != has_bias:
        problems.append(f"bias {settings.get('bias')} in the JSON, {has_bias} for the head "
                        "(see --no-bias)")
    if "distinct_rows" in settings and settings["distinct_rows"] != len(distinct):
        problems.append(f"distinct_rows {settings['distinct_rows']} in the JSON, "
                        f"{len(distinct)} in the head")
    tol, box = settings.get("tol"), settings.get("box")
    if not isinstance(tol, (int, float)) or not 0 < tol < 1e-2:
        problems.append(f"tol {tol!r} is not in (0, 0.01)")
    if box is not None and (not isinstance(box, (int, float)) or not box > 0):
        problems.append(f"box {box!r} is not a positive number")
    return problems


def _witness_failures(weight: np.ndarray, bias: np.ndarray, witnesses: dict[int, np.ndarray],
                      status_of: dict[int, str], taus: dict[int, float],
                      box: float | None, min_radius: float | None = None,
                      tol: float = 0.0) -> dict[int, str]:
    """Failing witnesses: ``{k: reason}`` (the ``witness`` entry of the convention)."""
    failures: dict[int, str] = {}
    good = {}
    for k, z in witnesses.items():
        if z.shape != (weight.shape[1],) or not np.all(np.isfinite(z)):
            failures[k] = f"the witness is not {weight.shape[1]} finite numbers"
        elif box is not None and float(np.abs(z).max()) > box:
            failures[k] = f"the witness leaves the box: |z|_inf = {np.abs(z).max():.6g} > {box}"
        else:
            good[k] = z
    ks_all = np.array(sorted(good), dtype=np.int64)
    for start in range(0, len(ks_all), BLOCK):
        ks = ks_all[start:start + BLOCK]
        gaps, allowance = _pair_gaps(weight, bias, ks, np.stack([good[int(k)] for k in ks]))
        if min_radius is not None:
            radii = _ball_radii(weight, ks, gaps, allowance)
            for j, k in enumerate(ks.tolist()):
                need = min_radius * (1.0 if status_of[k] == "argmaxable" else 1.0 - tol)
                if not radii[j] >= need:
                    failures[k] = (f"the ball around the witness has radius {radii[j]:.6g} "
                                   f"< {need:.6g}")
            continue
        for j, k in enumerate(ks.tolist()):
            if status_of[k] == "argmaxable":
                slack = gaps[j] - allowance[j]
                if not slack.min() > 0:
                    i = int(np.argmin(slack))
                    failures[k] = (f"the witness does not win strictly (worst pair with row {i}: "
                                   f"l_k - l_i = {gaps[j, i]:.6g}, rounding allowance "
                                   f"{allowance[j, i]:.3g})")
            else:
                slack = gaps[j] + allowance[j] + taus[k]
                if not slack.min() >= 0:
                    i = int(np.argmin(slack))
                    failures[k] = (f"the witness does not reach a tie (row {i}: l_k - l_i = "
                                   f"{gaps[j, i]:.6g} < -tau = {-taus[k]:.6g})")
    return failures


def verify_saved_result(weight: Any, bias: Any, payload: dict[str, Any]) -> VerificationReport:
    """Check a saved audit (``AuditResult.to_json(include_evidence=True)``, parsed) from scratch.

    Every witness and certificate is checked in float64 against ``W, b`` by the inequalities of
    :data:`EVIDENCE_CONVENTION` (module doc), with ``tol`` and the box taken from the JSON's
    settings, which are checked against the head first (shape, bias presence, distinct rows).
    E.g. an argmaxable witness needs ``(l_k - l_i) - 2 (e_k + e_i) > 0`` for all ``i != k`` and a
    "depth" certificate without a bias ``|g + s|_1 + rho <= tol / 64 * size``.

    Args:
        weight: (V, d) head weight (array or tensor; computed in float64).
        bias: (V,) bias, or None for none (as audited: ``--no-bias`` drops it).
        payload: the parsed JSON; it must hold ``witnesses`` and ``certificates``.

    Returns:
        A :class:`VerificationReport`: per status the classes verified, each failure, each
        settings mismatch (with a mismatched shape nothing else is checked).

    Raises:
        ValueError: the JSON has no evidence (written without ``--evidence``) or no settings.

    Example:
        >>> import json
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1.0, 0], [1, 0], [0, 1]])  # rows 0 and 1 tie
        >>> payload = json.loads(check_argmaxable(W, show_progress=False).to_json(
        ...     include_evidence=True))
        >>> verify_saved_result(W, None, payload).verified
        {'argmaxable': 1, 'tie': 2, 'unargmaxable': 0}
    """
    if "witnesses" not in payload or "certificates" not in payload:
        raise ValueError("the JSON holds no evidence (witnesses and certificates): write it with "
                         "logitkit audit PATH --json OUT --evidence")
    if "settings" not in payload:
        raise ValueError("the JSON holds no settings: is it the output of logitkit audit --json?")
    w = np.asarray(weight.detach().cpu().double().numpy() if hasattr(weight, "detach")
                   else weight, dtype=np.float64)
    has_bias = bias is not None
    b = np.zeros(len(w)) if bias is None else np.asarray(
        bias.detach().cpu().double().numpy() if hasattr(bias, "detach") else bias,
        dtype=np.float64)
    settings = payload["settings"]
    distinct = _distinct(w, b)
    report = VerificationReport(verified={"argmaxable": 0, "tie": 0, "unargmaxable": 0})
    report.settings_problems = _settings_problems(settings, w, has_bias, distinct)
    if report.settings_problems and list(settings.get("shape", [])) != list(w.shape):
        return report
    tol, box = float(settings["tol"]), settings.get("box")
    box = None if box is None else float(box)
    min_radius = settings.get("min_radius")
    min_radius = None if min_radius is None or box is None else float(min_radius)
    status_of = {int(k): name for name in ("tie", "unargmaxable", "unknown")
                 for k in payload.get(name, [])}
    report.unknown = sum(1 for s in status_of.values() if s == "unknown")
    witnesses = {int(k): np.asarray(z, dtype=np.float64) for k, z in payload["witnesses"].items()}
    saved = payload["certificates"]  # read one at a time where the file allows (read_saved_result)
    key_of = {int(k): k for k in saved}
    certificates = key_of.keys()
    for k in witnesses:
        status_of.setdefault(k, "argmaxable")
    missing = int(payload.get("n_classes", 0)) - len(status_of)
    if missing > 0:
        report.failures.append(f"{missing} argmaxable class(es) have no witness")
    failures: dict[int, str] = {}
    taus: dict[int, float] = {}
    for k, status in sorted(status_of.items()):
        if not 0 <= k < len(w):
            failures[k] = f"class id out of range [0, {len(w) - 1}]"
            continue
        if status == "unknown":
            if k in witnesses or k in certificates:
                failures[k] = "evidence given for an unknown class"
            continue
        if status == "argmaxable":
            if k in certificates:
                failures[k] = "a certificate given for an argmaxable class"
            continue
        if status == "unargmaxable" and k in witnesses:
            failures[k] = "a witness given for an unargmaxable class"
            continue
        if k not in certificates:
            failures[k] = "no certificate"
            continue
        problem, comb, kind = _certificate_failure(w, b, has_bias, distinct, k, status,
                                                   saved[key_of[k]], tol, box, min_radius)
        if problem is not None:
            failures[k] = f"certificate: {problem}"
        elif status == "tie" and k not in witnesses:
            failures[k] = "no witness"
        elif status == "tie" and comb is not None:
            z = witnesses[k]
            if kind == "box" and box is not None:
                others = np.arange(len(w)) != k
                taus[k] = tol * (box * float(np.abs(w[k] - w[others]).sum(1).max())
                                 + float(np.abs(b[k] - b[others]).max()))
            else:
                beta = _beta(b, distinct, k) if has_bias else 0.0
                taus[k] = tol * (float(np.linalg.norm(z)) * comb.max_l2 + beta)
    checked = {k: z for k, z in witnesses.items()
               if k not in failures and status_of[k] in ("argmaxable", "tie")}
    failures.update(_witness_failures(w, b, checked, status_of, taus, box, min_radius, tol))
    for k, status in status_of.items():
        if status != "unknown" and k not in failures:
            report.verified[status] += 1
    report.failures += [f"class {k} ({status_of[k]}): {failures[k]}" for k in sorted(failures)]
    return report


def verify_file(result_path: str | Path, weight: Any, bias: Any, *, source: str = "") -> bool:
    """``logitkit audit PATH --verify RESULT.json``: load the JSON, check it, print the report.

    Args:
        result_path: the JSON written by ``logitkit audit --json RESULT.json --evidence``.
        weight: (V, d) head weight, read again from the checkpoint.
        bias: (V,) bias or None (``--no-bias``).
        source: where the head came from, for the first printed line; default "".

    Returns:
        True when :attr:`VerificationReport.ok` (the CLI exits 0), else False (exit 1).

    Raises:
        OSError: the JSON cannot be read.
        ValueError: it is not JSON, not an object, or holds no evidence
            (:func:`verify_saved_result`).

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "out.json"
        >>> _ = path.write_text(check_argmaxable(W, show_progress=False).to_json(
        ...     include_evidence=True))
        >>> verify_file(path, W, None)  # doctest: +ELLIPSIS
        re-verified out.json against the head
        verified: argmaxable 4, tie 0, unargmaxable 1 (unknown, not checked: 0)
        all evidence verified
        True
        >>> tmp.cleanup()
    """
    path = Path(result_path)
    payload = read_saved_result(path)
    report = verify_saved_result(weight, bias, payload)
    print(f"re-verified {path.name} against {source or 'the head'}")
    print("\n".join(report.lines()))
    return report.ok


class SavedEntries(Mapping):
    """The witnesses or the certificates of a saved result, ``{"k": value}``, each parsed from
    its own line of the file when asked for (see :func:`read_saved_result`)."""

    def __init__(self, path: Path, offsets: dict[str, int]) -> None:
        self.path, self.offsets = path, offsets

    def __getitem__(self, key: str) -> Any:
        with open(self.path, "rb") as file:
            file.seek(self.offsets[key])
            line = file.readline().rstrip().removesuffix(b",")
        return json.loads(b"{" + line + b"}")[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets)


def read_saved_result(path: str | Path) -> dict[str, Any]:
    """A saved audit's JSON with its evidence left in the file until each entry is asked for.

    :meth:`~logitkit.audit.argmaxable.AuditResult.write_json` writes every witness and
    certificate on a line of its own (gigabytes for a 150k-row head: parsed at once, they would
    take several times that in Python objects). Here those lines are only indexed
    (``witnesses`` and ``certificates`` become :class:`SavedEntries`); the rest is parsed as
    usual. A file in another layout (one line, or indented) is parsed whole.

    Args:
        path: the JSON written by ``logitkit audit --json PATH --evidence`` (or without
            evidence).

    Returns:
        The JSON object, as ``json.load`` gives it but for the lazily read evidence.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON, or not a JSON object.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "out.json"
        >>> with open(path, "w") as file:
        ...     check_argmaxable(W, show_progress=False).write_json(file, include_evidence=True)
        >>> saved = read_saved_result(path)
        >>> type(saved["certificates"]).__name__, saved["certificates"]["4"]["weights"]
        ('SavedEntries', [0.25, 0.25, 0.25, 0.25])
        >>> tmp.cleanup()
    """
    path = Path(path)
    skeleton: list[bytes] = []
    sections: dict[str, dict[str, int]] = {}
    section = None
    with open(path, "rb") as file:
        offset = 0
        for line in file:
            if section is not None and line.startswith(b'"'):
                key, _, _ = line[1:].partition(b'"')
                sections[section][key.decode()] = offset
            elif section is not None and not line.startswith(b"}"):
                return _parsed_whole(path)  # not the layout write_json writes
            else:
                skeleton.append(line)
                section = next((name for name in ("witnesses", "certificates")
                                if line.rstrip().endswith(f'"{name}": {{'.encode())), None)
                if section is not None:
                    sections[section] = {}
            offset += len(line)
    payload = _parsed(path, b"".join(skeleton))
    for name, offsets in sections.items():
        if not isinstance(payload.get(name), dict) or payload[name]:
            return _parsed_whole(path)
        payload[name] = SavedEntries(path, offsets)
    return payload


def _parsed_whole(path: Path) -> dict[str, Any]:
    return _parsed(path, path.read_bytes())


def _parsed(path: Path, text: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--verify: {path} is not JSON ({error})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"--verify: {path} is not the JSON object logitkit audit --json writes")
    return payload
