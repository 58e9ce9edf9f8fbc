"""Estimate the share of unargmaxable (and tied) classes of a head from a random sample of classes.

A full audit of a 150k-256k-class head takes hours; :func:`estimate_statuses` audits ``n``
classes drawn uniformly without replacement, exactly and with evidence (every row of the head
still competes), and turns the count of each status in the sample into an exact confidence
interval for that status's count over the whole head. ``logitkit audit PATH --sample N`` prints
it (:meth:`Estimate.summary`) and writes it to ``--json`` (:meth:`Estimate.to_json`).

Reference:
    Clopper and Pearson, "The Use of Confidence or Fiducial Limits Illustrated in the Case of the
    Binomial", Biometrika 26(4), 1934. Buonaccorsi, "A Note on Confidence Intervals for
    Proportions in Finite Populations", The American Statistician 41(3), 1987. Grivas,
    Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but Rarely in
    Practice", ACL 2022, arXiv 2203.06462.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from logitkit.audit.argmaxable import AuditResult, check_argmaxable


@dataclass(frozen=True)
class StatusEstimate:
    """One status's share of a head, estimated from a sample of classes.

    Args:
        count: classes of the sample with this status.
        fraction: ``count / n``, the point estimate of the share over the head.
        low: lower end of the interval for the share, ``implied_low / V``.
        high: upper end of the interval for the share, ``implied_high / V``.
        implied: ``fraction * V``, the point estimate of the number of such classes in the head.
        implied_low: lower end of the exact interval for that number (an integer).
        implied_high: upper end of the exact interval for that number (an integer).

    Returns:
        The constructed record (built by :func:`estimate_statuses`).

    Example:
        >>> StatusEstimate(1, 0.5, 0.1, 0.9, 5.0, 1, 9).implied_high
        9
    """

    count: int
    fraction: float
    low: float
    high: float
    implied: float
    implied_low: int
    implied_high: int


@dataclass(frozen=True)
class Estimate:
    """The result of :func:`estimate_statuses`: the sample, its audit and an interval per status.

    Args:
        classes: (n,) int64 sampled class ids, sorted.
        result: the :class:`~logitkit.audit.argmaxable.AuditResult` of those classes.
        n_total: ``V``, the number of classes of the head.
        seed: the seed of the draw.
        confidence: the confidence level of every interval (each status's interval on its own,
            not simultaneous).
        statuses: ``{status: StatusEstimate}`` for "argmaxable", "tie", "unargmaxable" and
            "unknown".

    Returns:
        The constructed record (built by :func:`estimate_statuses`).

    Example:
        >>> import numpy as np
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> estimate = estimate_statuses(W, sample=5, show_progress=False)
        >>> estimate.statuses["unargmaxable"].count, estimate.n_total
        (1, 5)
    """

    classes: np.ndarray
    result: AuditResult
    n_total: int
    seed: int
    confidence: float
    statuses: dict[str, StatusEstimate]

    def to_dict(self) -> dict[str, Any]:
        """The estimate as plain data: what ``--json`` writes under ``"estimate"``.

        Returns:
            ``{"sample": n, "n_total": V, "seed", "confidence", "interval": <method in words>,
            "statuses": {status: {"count", "fraction", "low", "high", "implied", "implied_low",
            "implied_high"}}}``.

        Example:
            >>> import numpy as np
            >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
            >>> payload = estimate_statuses(W, sample=5, show_progress=False).to_dict()
            >>> payload["sample"], payload["statuses"]["unargmaxable"]["implied_high"]
            (5, 1)
        """
        return {
            "sample": len(self.classes),
            "n_total": self.n_total,
            "seed": self.seed,
            "confidence": self.confidence,
            "interval": INTERVAL_NOTE,
            "statuses": {name: vars(value) for name, value in self.statuses.items()},
        }

    def to_json(self, *, include_evidence: bool = False) -> str:
        """The sample's audit as JSON (:meth:`~logitkit.audit.argmaxable.AuditResult.to_json`)
        with :meth:`to_dict` added under ``"estimate"``.

        Args:
            include_evidence: also write every witness and certificate; default False.

        Returns:
            A JSON string (one line without evidence).

        Example:
            >>> import json
            >>> import numpy as np
            >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
            >>> payload = json.loads(estimate_statuses(W, sample=3, seed=1,
            ...                                        show_progress=False).to_json())
            >>> payload["n_classes"], payload["estimate"]["sample"], payload["estimate"]["seed"]
            (3, 3, 1)
        """
        text = io.StringIO()
        self.write_json(text, include_evidence=include_evidence)
        return text.getvalue()

    def write_json(self, file: TextIO, *, include_evidence: bool = False) -> None:
        """:meth:`to_json` written to ``file`` a piece at a time
        (:meth:`~logitkit.audit.argmaxable.AuditResult.write_json`)."""
        self.result.write_json(file, include_evidence=include_evidence,
                               extra={"estimate": self.to_dict()})

    def summary(self) -> str:
        """The estimate as text: one line per status with its count in the sample, the share
        and its interval, and the implied number of classes of the head with its interval.

        Returns:
            The lines joined by newlines (no trailing newline).

        Example:
            >>> import numpy as np
            >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
            >>> print(estimate_statuses(W, sample=5, show_progress=False).summary())
            ... # doctest: +NORMALIZE_WHITESPACE
            estimate from a sample of 5 of 5 classes (seed 0), exact 95% intervals:
              argmaxable:   4 in sample, 80.000% [80.000%, 80.000%], about 4.0 of 5 [4, 4]
              tie:          0 in sample,  0.000% [ 0.000%,  0.000%], about 0.0 of 5 [0, 0]
              unargmaxable: 1 in sample, 20.000% [20.000%, 20.000%], about 1.0 of 5 [1, 1]
              unknown:      0 in sample,  0.000% [ 0.000%,  0.000%], about 0.0 of 5 [0, 0]
        """
        lines = [f"estimate from a sample of {len(self.classes)} of {self.n_total} classes "
                 f"(seed {self.seed}), exact {self.confidence:.0%} intervals:"]
        for name, value in self.statuses.items():
            lines.append(
                f"  {name + ':':13} {value.count} in sample, {value.fraction:7.3%} "
                f"[{value.low:7.3%}, {value.high:7.3%}], about {value.implied:.1f} of "
                f"{self.n_total} [{value.implied_low}, {value.implied_high}]")
        return "\n".join(lines)


INTERVAL_NOTE = (
    "exact (Clopper-Pearson) interval for sampling without replacement: every count K of the "
    "head with P(X >= x | K) > (1 - confidence) / 2 and P(X <= x | K) > (1 - confidence) / 2, "
    "X hypergeometric (V classes, K of them with the status, n drawn); each status on its own")


def population_interval(count: int, sample: int, population: int,
                        confidence: float = 0.95) -> tuple[int, int]:
    """Exact interval for the number ``K`` of marked items of a population of ``V``, after
    ``x = count`` marked items in a sample of ``n`` drawn without replacement.

    The Clopper-Pearson construction with the hypergeometric law in place of the binomial one
    (Buonaccorsi 1987): with ``alpha = 1 - confidence`` and ``X ~ Hypergeometric(V, K, n)``, the
    interval is every ``K`` that neither one-sided test at level ``alpha / 2`` rejects,

        ``{K : P(X >= x | K) > alpha / 2  and  P(X <= x | K) > alpha / 2}``.

    ``P(X >= x | K)`` grows with ``K`` and ``P(X <= x | K)`` falls, so the set is an interval of
    integers within the counts the sample allows, ``x <= K <= V - (n - x)``, and it is the
    single point ``x`` when ``n = V`` (the whole population was sampled). Coverage is at least
    ``confidence`` for every ``K``. As ``V`` grows with ``n`` fixed it tends to ``V`` times the
    Clopper-Pearson interval ``[B(alpha/2; x, n-x+1), B(1-alpha/2; x+1, n-x)]`` (``B`` a beta
    quantile), which treats the draw as with replacement.

    Args:
        count: ``x``, marked items in the sample, ``0 <= x <= n``; no default.
        sample: ``n``, the sample size, ``1 <= n <= V``; no default.
        population: ``V``, the population size; no default.
        confidence: the confidence level, in (0, 1); default 0.95.

    Returns:
        ``(K_low, K_high)``, inclusive.

    Raises:
        ValueError: ``confidence`` outside (0, 1), or counts out of range.

    Reference:
        Clopper and Pearson, "The Use of Confidence or Fiducial Limits Illustrated in the Case of
        the Binomial", Biometrika 26(4), 1934. Buonaccorsi, "A Note on Confidence Intervals for
        Proportions in Finite Populations", The American Statistician 41(3), 1987.

    Example:
        >>> population_interval(0, 100, 1000)  # none among 100 of 1000 (Clopper-Pearson: 36.2)
        (0, 34)
        >>> population_interval(7, 10, 10)  # the whole population: the count itself
        (7, 7)
    """
    from scipy.stats import hypergeom

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if not (1 <= sample <= population and 0 <= count <= sample):
        raise ValueError(f"need 0 <= count <= sample <= population and sample >= 1; got count "
                         f"{count}, sample {sample}, population {population}")
    alpha = 1.0 - confidence
    marked = np.arange(population + 1)
    at_least = hypergeom.sf(count - 1, population, marked, sample)  # P(X >= x | K)
    at_most = hypergeom.cdf(count, population, marked, sample)  # P(X <= x | K)
    kept = marked[(at_least > alpha / 2) & (at_most > alpha / 2)]
    return int(kept.min()), int(kept.max())


def estimate_statuses(weight: Any, bias: Any = None, *, sample: int, seed: int = 0,
                      confidence: float = 0.95, **audit_options: Any) -> Estimate:
    """Audit a uniform random sample of classes exactly and estimate each status's share.

    Draws ``n = sample`` distinct ids from ``0 .. V-1`` uniformly without replacement
    (``numpy.random.default_rng(seed).choice(V, n, replace=False)``, sorted), audits them with
    :func:`~logitkit.audit.argmaxable.check_argmaxable` (``classes=ids``: every row of the head
    still competes, so each verdict is the one the full audit gives), and for each status with
    ``x`` classes in the sample reports the share ``x / n``, the implied count ``V x / n`` and an
    exact interval for the head's count ``K`` (:func:`population_interval`: Clopper-Pearson with
    the hypergeometric law, valid for the draw without replacement; it is the single point ``x``
    when ``n = V``). The intervals hold each on its own at ``confidence``, not all four at once.
    A status that the method leaves undecided ("unknown", ``method="fast"``) is estimated like
    the others.

    Args:
        weight: (V, d) array or tensor, as for :func:`~logitkit.audit.argmaxable.check_argmaxable`;
            no default.
        bias: (V,) array or tensor, or None for no bias; default None.
        sample: the number of classes to audit, ``1 <= sample <= V`` (``V``: the full audit);
            no default.
        seed: the seed of the draw; default 0.
        confidence: the confidence level of the intervals, in (0, 1); default 0.95.
        **audit_options: passed to :func:`~logitkit.audit.argmaxable.check_argmaxable`
            (``method``, ``box``, ``tol``, ``jobs``, ``show_progress``, ...; not ``classes``).

    Returns:
        An :class:`Estimate`: the sampled ids, their :class:`~logitkit.audit.argmaxable.
        AuditResult` and a :class:`StatusEstimate` per status.

    Raises:
        ValueError: ``weight`` is not 2-D; ``sample`` not an integer in ``[1, V]``;
            ``confidence`` outside (0, 1); ``classes`` among ``audit_options``; and the errors
            of :func:`~logitkit.audit.argmaxable.check_argmaxable`.

    Reference:
        Clopper and Pearson, "The Use of Confidence or Fiducial Limits Illustrated in the Case of
        the Binomial", Biometrika 26(4), 1934. Buonaccorsi, "A Note on Confidence Intervals for
        Proportions in Finite Populations", The American Statistician 41(3), 1987.

    Example:
        Ten points on a circle and ten inside it: half the classes are unargmaxable.

        >>> import numpy as np
        >>> angles = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        >>> ring = np.c_[np.cos(angles), np.sin(angles)]
        >>> W = np.vstack([ring, 0.5 * ring])
        >>> estimate = estimate_statuses(W, sample=8, seed=0, show_progress=False)
        >>> estimate.classes.tolist()
        [0, 1, 4, 5, 7, 8, 11, 19]
        >>> unargmaxable = estimate.statuses["unargmaxable"]  # 11 and 19 are inside
        >>> unargmaxable.count, unargmaxable.fraction, unargmaxable.implied
        (2, 0.25, 5.0)
        >>> unargmaxable.implied_low, unargmaxable.implied_high  # the true count, 10, is inside
        (2, 11)
    """
    if "classes" in audit_options:
        raise ValueError("estimate_statuses draws the classes itself; do not pass classes=")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    shape = np.shape(weight)
    if len(shape) != 2:
        raise ValueError(f"weight must have shape (V, d); got {tuple(shape)}")
    total = int(shape[0])
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)):
        raise ValueError(f"sample must be an integer, got {sample!r}")
    if not 1 <= sample <= total:
        raise ValueError(f"sample must lie in [1, V] = [1, {total}] (V is the full audit), "
                         f"got {sample}")
    ids = np.sort(np.random.default_rng(seed).choice(total, size=int(sample), replace=False))
    result = check_argmaxable(weight, bias, classes=ids, **audit_options)
    statuses = {}
    for name, count in result.counts.items():
        low, high = population_interval(count, int(sample), total, confidence)
        statuses[name] = StatusEstimate(
            count=count, fraction=count / sample, low=low / total, high=high / total,
            implied=count * total / sample, implied_low=low, implied_high=high)
    return Estimate(classes=ids.astype(np.int64), result=result, n_total=total, seed=seed,
                    confidence=confidence, statuses=statuses)
