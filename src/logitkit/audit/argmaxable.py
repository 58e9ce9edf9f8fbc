"""Which classes of a softmax layer ``W z + b`` can win the argmax? ``check_argmaxable``.

Class ``k`` is *argmaxable* iff some input ``z`` gives ``(w_k - w_i) . z + (b_k - b_i) > 0`` for
all ``i != k`` (strictly: a tie is not a win), optionally with ``|z|_inf <= B``. By the
Gordan/Motzkin alternative it is not iff a convex combination ``a`` of the other rows has
``sum_i a_i (w_k - w_i) = 0`` and ``sum_i a_i (b_k - b_i) <= 0``; without a bias: iff ``w_k`` lies
in the convex hull of the other rows. Statuses, each with evidence checked in float64:

* "argmaxable": a witness ``z`` at which ``k`` wins, proved with rounding bounds;
* "tie": ``k`` cannot win strictly (certificate), yet ties at the top (witness of a tie): exact
  duplicates of a winning row (reported in ``duplicate_groups``; greedy decoding's lowest-id
  tie-break lets one of them through), points on a facet of the hull, and points within the
  tolerance of one;
* "unargmaxable": ``k`` stays unable to win even after its row is pushed outward by the tolerance
  (``w_k`` moved away from the centroid of the other rows by the fraction ``tol``; with a bias,
  ``b_k`` raised by ``tol`` times the median bias gap);
* "unknown": undecided (``method="fast"`` or ``"frank_wolfe"`` only).

The tolerance is relative and per class, so verdicts do not change when ``W, b`` are scaled by a
power of two (the audit itself rescales them exactly by one) or when one row gets an extreme bias
(a masked token). Without a bias a box changes nothing (the problem is homogeneous).

Methods: ``"exact"`` (fast witnesses, then the exact stage of :mod:`~logitkit.audit.exact` for the
classes left), ``"fast"`` (the witness stage only) and ``"frank_wolfe"`` (the blog's method).

Example::

    import numpy as np
    from logitkit.audit import check_argmaxable
    W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
    check_argmaxable(W).counts  # class 4 = (1, 1) lies inside the hull: unargmaxable
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitkit._utils import progress
from logitkit.audit.certify import certify_fast
from logitkit.audit.exact import Decision, decide_many
from logitkit.audit.frank_wolfe import frank_wolfe
from logitkit.audit.statuses import METHODS, STATUSES
from logitkit.audit.verify import Certificate


@dataclass
class AuditResult:
    """Per audited class: ``status``, the ``stage`` that decided it and ``margin``, plus evidence.

    ``margin`` is the margin ``l_k - max_{i != k} l_i`` at the best input found (a witness for
    argmaxable classes, a tie input for ties), relative to ``|z|_2 * median_i |w_i|_2 +
    median_i |b_i - median(b)|`` (scale-free; -inf where no input was tried). ``witnesses[k]`` is
    that input, ``certificates[k]`` the convex combination proving that ``k`` cannot win.
    ``duplicate_groups`` lists the ids of identical rows (weights and bias), lowest id first.
    ``stage`` is "fast", "exact", "frank_wolfe", "duplicate" or "none" (undecided).
    """

    classes: np.ndarray
    status: np.ndarray
    stage: np.ndarray
    margin: np.ndarray
    witnesses: dict[int, np.ndarray]
    certificates: dict[int, Certificate]
    duplicate_groups: list[np.ndarray]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def _with(self, status: str) -> np.ndarray:
        return self.classes[self.status == status]

    @property
    def argmaxable(self) -> np.ndarray:
        return self._with("argmaxable")

    @property
    def tie(self) -> np.ndarray:
        return self._with("tie")

    @property
    def unargmaxable(self) -> np.ndarray:
        """Ids of the classes proved unargmaxable."""
        return self._with("unargmaxable")

    @property
    def unknown(self) -> np.ndarray:
        return self._with("unknown")

    @property
    def counts(self) -> dict[str, int]:
        return {name: int((self.status == name).sum()) for name in STATUSES}

    @property
    def stage_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.stage, return_counts=True)
        return {str(name): int(count) for name, count in zip(names, counts, strict=True)}

    def status_of(self, k: int) -> str:
        where = np.flatnonzero(self.classes == k)
        if len(where) == 0:
            raise KeyError(f"class {k} was not audited")
        return str(self.status[where[0]])

    def to_json(self, *, include_evidence: bool = False) -> str:
        """Settings, counts, timings, the ids per status, margins and duplicate groups; with
        ``include_evidence`` also every witness and certificate."""
        decided = np.isfinite(self.margin)
        payload: dict[str, Any] = {
            "settings": self.settings,
            "n_classes": len(self.classes),
            "counts": self.counts,
            "stage_counts": self.stage_counts,
            "timings": self.timings,
            **{name: self._with(name).tolist() for name in STATUSES[1:]},
            "duplicate_groups": [group.tolist() for group in self.duplicate_groups],
            "margins": {str(k): float(m) for k, m in
                        zip(self.classes[decided], self.margin[decided], strict=True)},
        }
        if include_evidence:
            payload["witnesses"] = {str(k): z.tolist() for k, z in self.witnesses.items()}
            payload["certificates"] = {str(k): c.to_dict() for k, c in self.certificates.items()}
        return json.dumps(payload)


def _as_float64(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (any dtype, any device)
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(value)}") from error
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _validated(
    weight: Any, bias: Any, classes: Any, method: str, box: float | None, tol: float,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    w = _as_float64("weight", weight)
    if w.ndim != 2 or w.shape[0] < 2 or w.shape[1] < 1:
        raise ValueError(f"weight must have shape (V, d) with V >= 2, d >= 1; got {w.shape}")
    b = None
    if bias is not None:
        b = _as_float64("bias", bias)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},) to match weight; got {b.shape}")
    if box is not None and not (np.isfinite(box) and box > 0):
        raise ValueError(f"box must be a positive finite number, got {box}")
    if not (0 < tol < 1e-2):
        raise ValueError(f"tol must lie in (0, 0.01), got {tol}")
    if classes is None:
        return w, b, np.arange(w.shape[0])
    ids = np.asarray(classes)
    if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("classes must be a non-empty 1-D sequence of integer class ids")
    if ids.min() < 0 or ids.max() >= w.shape[0]:
        raise ValueError(f"class ids must lie in [0, {w.shape[0] - 1}]")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("classes contains repeated ids")
    return w, b, ids.astype(np.int64)


def power_of_two_scale(weight: np.ndarray) -> float:
    """``2^-p`` with ``2^p`` near the median row norm: an exact rescaling to norms near 1."""
    median = float(np.median(np.linalg.norm(weight, axis=1)))
    return float(np.exp2(-np.round(np.log2(median)))) if median > 0 else 1.0


def duplicate_rows(weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``first[i]``: the lowest id whose row (and bias) equals row ``i`` exactly."""
    rows = weight if bias is None else np.hstack([weight, bias[:, None]])
    probe = np.random.default_rng(0).normal(size=(rows.shape[1], 2))
    keys = rows @ probe  # equal rows give equal keys; equal keys are then compared exactly
    order = np.lexsort((np.arange(len(rows)), keys[:, 1], keys[:, 0]))
    first = np.arange(len(rows))
    same_key = np.all(keys[order[1:]] == keys[order[:-1]], axis=1)
    for start in np.flatnonzero(same_key & ~np.r_[False, same_key[:-1]]):
        stop = start + 1
        while stop < len(same_key) and same_key[stop]:
            stop += 1
        members = order[start:stop + 1]
        for i in members:
            equal = members[np.all(rows[members] == rows[i], axis=1)]
            first[i] = equal.min()
    return first


def _relative(margin: float, z: np.ndarray | None, row_scale: float, bias_scale: float) -> float:
    if z is None or not np.isfinite(margin):
        return -np.inf
    return margin / max(float(np.linalg.norm(z)) * row_scale + bias_scale,
                        np.finfo(np.float64).tiny)


def check_argmaxable(
    weight: Any,
    bias: Any = None,
    *,
    classes: Any = None,
    method: str = "exact",
    box: float | None = None,
    tol: float = 1e-9,
    fw_radius: float = 100.0,
    fw_iterations: int = 200,
    keep_witnesses: bool = True,
    jobs: int = 1,
    show_progress: bool = True,
) -> AuditResult:
    """Decide for each class of ``W z + b`` whether some input ``z`` makes it the strict argmax.

    ``weight`` (V, d) and ``bias`` (V,) are arrays or tensors (any float dtype; computed in
    float64); ``classes`` restricts the audit to these ids (all rows still compete). ``box`` bounds
    the inputs, ``|z|_inf <= box``; without it inputs are unbounded. ``tol`` is the relative
    tolerance that separates ties from the two strict verdicts (module doc). ``fw_radius`` is
    Frank-Wolfe's L2-ball radius without a box. ``keep_witnesses=False`` drops the witness inputs
    (V x d floats for a whole vocabulary) and keeps only certificates. ``jobs`` worker processes
    share the exact stage (classes are independent).
    """
    w, b, ids = _validated(weight, bias, classes, method, box, tol)
    start = time.perf_counter()
    scale = power_of_two_scale(w)
    w = w * scale
    b = None if b is None else b * scale
    first = duplicate_rows(w, b)
    representatives = np.flatnonzero(first == np.arange(len(w)))
    position = np.searchsorted(representatives, first)
    w_r = np.ascontiguousarray(w[representatives])
    b_r = None if b is None else b[representatives]
    needed = np.unique(position[ids])
    row_scale = float(np.median(np.linalg.norm(w, axis=1)))
    bias_scale = 0.0 if b is None else float(np.median(np.abs(b - np.median(b))))
    settings = {"method": method, "box": box, "bias": b is not None, "tol": tol,
                "shape": list(w.shape), "distinct_rows": len(representatives)}
    decisions: dict[int, Decision] = {}
    stages: dict[int, str] = {}
    timings: dict[str, float] = {}
    first_phase = "frank_wolfe" if method == "frank_wolfe" else "nearest rows"
    with progress(total=len(needed), desc=f"audit ({first_phase})", unit="class",
                  disable=not show_progress) as bar:

        def phase(name: str, total: int) -> None:
            bar.reset(total=total)
            bar.set_description(f"audit ({name})")

        if len(representatives) == 1:  # every row is the same: all of them always tie
            decisions[0] = Decision("argmaxable", witness=np.zeros(w.shape[1]), margin=0.0)
            stages[0] = "exact"
        elif method == "frank_wolfe":
            radius = box if box is not None else fw_radius
            settings["fw_radius"] = radius
            outcome = frank_wolfe(w_r, b_r, needed, radius=radius, box=box, tol=tol,
                                  iterations=fw_iterations, on_progress=bar.update)
            decisions = dict(zip(needed.tolist(), outcome, strict=True))
            stages = {k: "frank_wolfe" for k in decisions}
        else:
            fast = certify_fast(w_r, b_r, needed, box=box, on_progress=bar.update,
                                on_phase=phase)
            for j, k in enumerate(needed.tolist()):
                status = "argmaxable" if fast.certified[j] else "unknown"
                decisions[k] = Decision(status, witness=fast.witnesses[j],
                                        margin=float(fast.margins[j]))
                stages[k] = "fast" if fast.certified[j] else "none"
            timings["fast_s"] = time.perf_counter() - start
            if method == "exact":
                remaining = np.flatnonzero(~fast.certified)
                phase("exact stage", len(remaining))
                outcome = decide_many(w_r, b_r, needed[remaining], fast.rivals[remaining], box,
                                      tol, jobs=jobs, on_done=bar.update,
                                      settled=[fast.settled.get(j) for j in remaining.tolist()])
                for j, decision in zip(remaining, outcome, strict=True):
                    k = int(needed[j])
                    if decision.witness is None:
                        decision.witness, decision.margin = fast.witnesses[j], fast.margins[j]
                    decisions[k] = decision
                    stages[k] = "exact" if decision.status != "unknown" else "none"
                timings["exact_s"] = time.perf_counter() - start - timings["fast_s"]
    timings["total_s"] = time.perf_counter() - start
    groups = [np.flatnonzero(first == r) for r in np.unique(first[ids])
              if np.count_nonzero(first == r) > 1]
    status = np.empty(len(ids), dtype=object)
    stage = np.empty(len(ids), dtype=object)
    margins = np.full(len(ids), -np.inf)
    witnesses: dict[int, np.ndarray] = {}
    certificates: dict[int, Certificate] = {}
    for j, k in enumerate(ids.tolist()):
        rep = int(position[k])
        decision = decisions[rep]
        status[j], stage[j] = decision.status, stages[rep]
        margins[j] = _relative(decision.margin, decision.witness, row_scale, bias_scale)
        twins = np.flatnonzero(first == first[k])
        if len(twins) > 1 and decision.status == "argmaxable":
            status[j], stage[j] = "tie", "duplicate"  # it ties with its twins, never beats them
            other = int(twins[twins != k][0])
            certificates[k] = Certificate(support=np.array([other]), weights=np.ones(1),
                                          kind="hull", residual=0.0)
        elif decision.certificate is not None:
            cert = decision.certificate
            certificates[k] = Certificate(support=representatives[cert.support],
                                          weights=cert.weights, kind=cert.kind,
                                          residual=cert.residual, bound=cert.bound / scale)
        if keep_witnesses and decision.witness is not None and status[j] in ("argmaxable", "tie"):
            witnesses[k] = decision.witness
    settings["rescaled_by"] = scale
    return AuditResult(classes=ids, status=status.astype(str), stage=stage.astype(str),
                       margin=margins, witnesses=witnesses, certificates=certificates,
                       duplicate_groups=groups, settings=settings, timings=timings)
