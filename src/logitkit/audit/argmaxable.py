"""Which classes of a softmax layer ``W z + b`` can win the argmax? ``check_argmaxable``.

Class ``k`` is argmaxable iff some input ``z`` gives ``(w_k - w_i) . z + (b_k - b_i) > 0`` for all
``i != k`` (strictly: a tie is not a win), optionally with ``|z|_inf <= B``. By the Gordan/Motzkin
alternative (lift ``z -> (z, s)``, ``s > 0``, to make the bias homogeneous), without a box ``k`` is
unargmaxable iff a convex combination ``a`` of the other rows has ``sum_i a_i (w_k - w_i) = 0`` and
``sum_i a_i (b_k - b_i) <= 0``: without a bias, iff ``w_k`` lies in the convex hull of the other
rows (it is not a vertex of the hull). With a box the certificate is ``a`` with
``B |sum_i a_i (w_k - w_i)|_1 + sum_i a_i (b_k - b_i) <= 0`` (LP duality). Every answer carries
its evidence, checked numerically (see :mod:`logitkit.audit.verify` for the tolerances).

Methods:

* ``"exact"``: fast batched certification (:mod:`~logitkit.audit.certify`), then the margin LP
  with constraint generation (:mod:`~logitkit.audit.exact`) for the classes left.
* ``"fast"``: the certification stage only; classes it cannot certify are "unknown".
* ``"frank_wolfe"``: the blog's Frank-Wolfe method (:mod:`~logitkit.audit.frank_wolfe`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from logitkit._utils import progress
from logitkit.audit.certify import certify_fast
from logitkit.audit.exact import decide_class
from logitkit.audit.frank_wolfe import frank_wolfe
from logitkit.audit.verify import Certificate, margin_scale

METHODS = ("exact", "fast", "frank_wolfe")
STATUSES = ("argmaxable", "unargmaxable", "unknown")


@dataclass
class AuditResult:
    """Per audited class: ``status`` and the ``stage`` that decided it, plus the evidence.

    ``witnesses[k]`` is an input ``z`` with ``argmax(W z + b) == k`` (verified with a strict
    margin); ``certificates[k]`` a convex combination of rows proving that no input lets ``k``
    win. ``stage`` is "fast", "exact", "frank_wolfe" or "none" (undecided).
    """

    classes: np.ndarray
    status: np.ndarray
    stage: np.ndarray
    witnesses: dict[int, np.ndarray]
    certificates: dict[int, Certificate]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def _with(self, status: str) -> np.ndarray:
        return self.classes[self.status == status]

    @property
    def unargmaxable(self) -> np.ndarray:
        """Ids of the classes proved unargmaxable."""
        return self._with("unargmaxable")

    @property
    def argmaxable(self) -> np.ndarray:
        return self._with("argmaxable")

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

    def to_json(self, *, include_witnesses: bool = False) -> str:
        """JSON with settings, counts, timings, unargmaxable ids and their certificates."""
        payload: dict[str, Any] = {
            "settings": self.settings,
            "n_classes": len(self.classes),
            "counts": self.counts,
            "stage_counts": self.stage_counts,
            "timings": self.timings,
            "unargmaxable": self.unargmaxable.tolist(),
            "unknown": self.unknown.tolist(),
            "certificates": {str(k): c.to_dict() for k, c in self.certificates.items()},
        }
        if include_witnesses:
            payload["witnesses"] = {str(k): z.tolist() for k, z in self.witnesses.items()}
        return json.dumps(payload)


def _as_float64(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(value)}") from error
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _validated(
    weight: Any, bias: Any, classes: Any, method: str, box: float | None
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
    if classes is None:
        ids = np.arange(w.shape[0])
    else:
        ids = np.asarray(classes)
        if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError("classes must be a non-empty 1-D sequence of integer class ids")
        if ids.min() < 0 or ids.max() >= w.shape[0]:
            raise ValueError(f"class ids must lie in [0, {w.shape[0] - 1}]")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("classes contains repeated ids")
        ids = ids.astype(np.int64)
    return w, b, ids


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
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> AuditResult:
    """Decide for each class of ``W z + b`` whether some input ``z`` makes it the strict argmax.

    ``weight`` (V, d) and ``bias`` (V,) are arrays or tensors; ``classes`` restricts the audit to
    these ids (all rows still compete). ``box`` bounds the inputs, ``|z|_inf <= box``; without it
    inputs are unbounded. ``tol`` is the relative tolerance of certificates: "unargmaxable" means
    that no input (in the normalised box) reaches a margin above ``tol`` times the largest possible
    margin. ``fw_radius`` is Frank-Wolfe's L2-ball radius when there is no box (with a box it is
    ``box``). The fast stage runs in float32 on ``device`` (default CPU); the LP stage uses HiGHS.
    """
    w, b, ids = _validated(weight, bias, classes, method, box)
    compute = torch.device(device) if device is not None else torch.device("cpu")
    threshold = tol * margin_scale(w, b, box)
    status = np.full(len(ids), "unknown", dtype=object)
    stage = np.full(len(ids), "none", dtype=object)
    witnesses: dict[int, np.ndarray] = {}
    certificates: dict[int, Certificate] = {}
    timings: dict[str, float] = {}
    settings = {"method": method, "box": box, "bias": b is not None, "tol": tol,
                "shape": list(w.shape)}
    start = time.perf_counter()
    with progress(total=len(ids), desc=f"audit ({method})", unit="class",
                  **({} if show_progress else {"disable": True})) as bar:
        if method == "frank_wolfe":
            radius = box if box is not None else fw_radius
            settings["fw_radius"] = radius
            outcome = frank_wolfe(w, b, ids, radius=radius, box=box, threshold=threshold,
                                  iterations=fw_iterations, on_progress=bar.update)
            status[:] = outcome.status
            stage[status != "unknown"] = "frank_wolfe"
            witnesses, certificates = outcome.witnesses, outcome.certificates
        else:
            w32 = torch.from_numpy(w.astype(np.float32)).to(compute)  # a writable copy
            b32 = None if b is None else torch.from_numpy(b.astype(np.float32)).to(compute)
            fast = certify_fast(w32, b32, ids, box=box, on_progress=bar.update)
            del w32, b32
            status[fast.certified] = "argmaxable"
            stage[fast.certified] = "fast"
            if keep_witnesses:
                witnesses = {int(k): fast.witnesses[j] for j, k in enumerate(ids)
                             if fast.certified[j]}
            timings["fast_s"] = time.perf_counter() - start
            if method == "exact":
                remaining = np.flatnonzero(~fast.certified)
                bar.reset(total=len(remaining))
                bar.set_description("audit (exact LP)")
                for j in remaining:
                    k = int(ids[j])
                    decision = decide_class(w, b, k, fast.rivals[j], box, threshold)
                    status[j] = decision.status
                    stage[j] = "exact" if decision.status != "unknown" else "none"
                    if decision.witness is not None and keep_witnesses:
                        witnesses[k] = decision.witness
                    if decision.certificate is not None:
                        certificates[k] = decision.certificate
                    bar.update(1)
                timings["exact_s"] = time.perf_counter() - start - timings["fast_s"]
    timings["total_s"] = time.perf_counter() - start
    return AuditResult(classes=ids, status=status.astype(str), stage=stage.astype(str),
                       witnesses=witnesses, certificates=certificates, settings=settings,
                       timings=timings)
