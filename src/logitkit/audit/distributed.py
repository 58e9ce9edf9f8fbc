"""``check_argmaxable`` split across the ranks of a ``torchrun`` launch (torch.distributed).

``torchrun --nproc_per_node N [--nnodes M ...] -m logitkit audit PATH --json out.json`` gives each
rank an interleaved share of the audited classes, ``classes[rank::world_size]`` (neighbouring ids
tend to be alike, so the hard classes spread evenly), audits it with
:func:`~logitkit.audit.argmaxable.check_argmaxable` (every row of the head still competes; only the
classes asked about are split), gathers the shares on rank 0 (``gather_object``) and merges them
into one :class:`~logitkit.audit.argmaxable.AuditResult` in the original class order:
``settings["world_size"]`` records the number of ranks, timings are the slowest rank's per stage
plus ``rank{r}_total_s`` for each rank. Only rank 0 gets the result (others get None), so only it
prints and writes files. There is no scheduler of its own: torchrun starts, watches and stops the
processes.

Every rank reads the same head and audits it whole: duplicate rows are found over the full head
and the tolerance's scales (median row norm, bias gaps) come from all rows, so a split changes no
verdict. The statuses, stages and duplicate groups are those of one process. Witnesses, margins
and certificates are the same evidence where the audit's batched matrix products round the same
way for a share as for the whole (the test heads, with a bias); the no-bias witness search and
Frank-Wolfe multiply blocks of classes at once, and a BLAS may round a row differently in a
different block, so there they can differ in the last bits (every one is still verified).

Backend: ``nccl`` when the weight is a CUDA tensor (then each rank takes the GPU ``LOCAL_RANK``),
otherwise ``gloo``; the audit itself computes in NumPy on the CPU, so ``gloo`` serves any machine.
A process group that is already initialised is used as it is (and left open); one created here
waits up to :data:`WAIT` for the slowest rank and is destroyed at the end.

Example (one process: the share is everything, as in ``check_argmaxable``)::

    >>> import numpy as np
    >>> from logitkit.audit.distributed import check_argmaxable_distributed
    >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
    >>> check_argmaxable_distributed(W, show_progress=False).unargmaxable.tolist()
    [4]
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from logitkit.audit.argmaxable import AuditResult, _validated, check_argmaxable
from logitkit.audit.evidence_store import CertificateStore

WAIT = timedelta(days=7)  # how long a rank with its share done waits for the slowest one


def launched_distributed() -> bool:
    """Whether this process is one of several ranks: a ``torchrun`` launch (``WORLD_SIZE`` > 1
    with ``RANK`` and ``MASTER_ADDR`` set) or an initialised process group of several ranks.

    Reads the environment first and looks at torch only if it is already imported, so a plain
    ``logitkit audit`` never imports torch for it.

    Returns:
        True under ``torchrun --nproc_per_node 2`` and the like, False in a single process.

    Example:
        >>> launched_distributed()  # a plain interpreter
        False
    """
    env = os.environ
    if int(env.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in env and "MASTER_ADDR" in env:
        return True
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)


def reports() -> bool:
    """Whether this process prints and writes the audit: True but on the ranks other than 0 of a
    distributed launch (:func:`launched_distributed`), whose output folders need not exist.

    Returns:
        False on ranks 1, 2, ... of a launch; True otherwise.

    Example:
        >>> reports()  # a single process
        True
    """
    if not launched_distributed():
        return True
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK") == "0"


def split_classes(classes: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The share of ``rank``: ``classes[rank::world_size]`` (interleaved, so that runs of alike
    neighbouring ids, hard or easy, spread evenly over the ranks).

    Args:
        classes: (n,) ids of the audited classes, in the order asked for.
        rank: this rank, ``0 <= rank < world_size``.
        world_size: the number of ranks, >= 1.

    Returns:
        The ids of this rank's share, in their original order (empty when ``rank >= n``).

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``.

    Example:
        >>> import numpy as np
        >>> split_classes(np.arange(7), 1, 3).tolist()
        [1, 4]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    return np.asarray(classes)[rank::world_size]


def merge_results(parts: Sequence[AuditResult], classes: Any) -> AuditResult:
    """One :class:`~logitkit.audit.argmaxable.AuditResult` from the results of disjoint shares of
    ``classes`` (each audited on the whole head), in the order of ``classes``.

    Statuses, stages, margins, witnesses and certificates are taken per class; duplicate groups
    are united (sorted by their lowest id, as one audit lists them); settings must agree (the
    same head, method and tolerance) and get ``world_size`` = ``len(parts)``; timings are the
    largest per stage (the slowest share sets the wall time) plus ``rank{r}_total_s`` per part.

    Args:
        parts: the results of the shares, part ``r`` being rank ``r``'s.
        classes: the ids of the whole audit, each in exactly one part.

    Returns:
        The merged result.

    Raises:
        ValueError: the parts do not cover ``classes`` exactly once, or their settings differ.

    Example:
        >>> import numpy as np
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> parts = [check_argmaxable(W, classes=split_classes(np.arange(5), r, 2),
        ...                           show_progress=False) for r in range(2)]
        >>> merged = merge_results(parts, np.arange(5))
        >>> merged.status.tolist(), merged.settings["world_size"]
        (['argmaxable', 'argmaxable', 'argmaxable', 'argmaxable', 'unargmaxable'], 2)
    """
    ids = np.asarray(classes, dtype=np.int64)
    got = np.concatenate([part.classes for part in parts])
    if len(got) != len(ids) or not np.array_equal(np.sort(got), np.sort(ids)):
        raise ValueError("the parts must audit every class of `classes` exactly once")
    settings = [{k: v for k, v in part.settings.items() if k != "world_size"} for part in parts]
    if any(s != settings[0] for s in settings[1:]):
        raise ValueError(f"the parts audited different heads or settings: {settings}")
    where = {int(k): (p, j) for p, part in enumerate(parts) for j, k in enumerate(part.classes)}
    rows = [where[k] for k in ids.tolist()]

    def column(name: str) -> np.ndarray:  # numpy widens the strings to the longest status
        return np.array([getattr(parts[p], name)[j] for p, j in rows])

    witnesses = {k: parts[p].witnesses[k] for k, (p, _) in zip(ids.tolist(), rows, strict=True)
                 if k in parts[p].witnesses}
    certificates = CertificateStore()  # past its budget on disk, as in each part
    for k, (p, _) in zip(ids.tolist(), rows, strict=True):
        if k in parts[p].certificates:
            certificates.add(k, parts[p].certificates[k])
    groups = {int(g[0]): g for part in parts for g in part.duplicate_groups}
    timings = {key: max(part.timings.get(key, 0.0) for part in parts)
               for part in parts for key in part.timings}
    timings.update({f"rank{r}_total_s": part.timings.get("total_s", 0.0)
                    for r, part in enumerate(parts)})
    return AuditResult(classes=ids, status=column("status"), stage=column("stage"),
                       margin=column("margin"), witnesses=witnesses, certificates=certificates,
                       duplicate_groups=[groups[first] for first in sorted(groups)],
                       settings={**settings[0], "world_size": len(parts)}, timings=timings)


def _fingerprint(weight: np.ndarray, bias: np.ndarray | None, ids: np.ndarray,
                 options: dict[str, Any]) -> str:
    """A digest of what a rank audits, so that rank 0 can refuse shares of different heads."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (weight, bias, ids):
        if array is not None:
            digest.update(np.ascontiguousarray(array))  # its buffer: no bytes copy of the head
    digest.update(repr(sorted(options.items())).encode())
    return digest.hexdigest()


def check_argmaxable_distributed(
    weight: Any, bias: Any = None, *, classes: Any = None, show_progress: bool = True,
    **options: Any,
) -> AuditResult | None:
    """:func:`~logitkit.audit.argmaxable.check_argmaxable` with the classes split across ranks.

    Under ``torchrun`` (or in an initialised process group) each rank audits
    :func:`split_classes` of the classes, rank 0 gathers and merges the shares
    (:func:`merge_results`) and returns them; the other ranks return None. Every rank must pass
    the same head and arguments (rank 0 checks a digest of them). In a single process this is
    ``check_argmaxable`` itself. A process group is created (``nccl`` for a CUDA weight, else
    ``gloo``; environment variables of torchrun) if none is open, and destroyed at the end. A
    rank that fails still takes part in the gather, so no rank waits forever: rank 0 then
    raises for it.

    Args:
        weight: (V, d) array or tensor, as for ``check_argmaxable``.
        bias: (V,) array or tensor, or None; default None.
        classes: ids to audit, or None for every class; default None.
        show_progress: a progress bar for rank 0's share (other ranks show none); default True.
        **options: the other keywords of ``check_argmaxable`` (``method``, ``box``, ``tol``,
            ``keep_witnesses``, ``jobs``, ...).

    Returns:
        The merged :class:`~logitkit.audit.argmaxable.AuditResult` on rank 0 (with
        ``settings["world_size"]``), None on the other ranks.

    Raises:
        ValueError, TypeError: the arguments, as ``check_argmaxable`` would (on every rank, before
            any communication); rank 0: ranks audited different heads or arguments.
        RuntimeError: on rank 0, when another rank failed (its error is quoted); a failing rank
            raises its own error.

    Example:
        >>> import numpy as np
        >>> W = np.array([[1.0, 0], [1, 0], [0, 1]])  # without torchrun: one process
        >>> check_argmaxable_distributed(W, show_progress=False).tie.tolist()
        [0, 1]
    """
    if not launched_distributed():
        return check_argmaxable(weight, bias, classes=classes, show_progress=show_progress,
                                **options)
    import torch
    import torch.distributed as dist

    on_gpu = isinstance(weight, torch.Tensor) and weight.is_cuda
    w, b, ids = _validated(weight, bias, classes, options.get("method", "exact"),
                           options.get("box"), options.get("tol", 1e-9))
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if on_gpu and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=WAIT)
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        share = split_classes(ids, rank, world_size)
        part: AuditResult | None = None
        failure: BaseException | None = None
        try:
            if len(share):
                part = check_argmaxable(w, b, classes=share,
                                        show_progress=show_progress and rank == 0, **options)
        except Exception as error:  # reported through the gather, then raised
            failure = error
        payload = (_fingerprint(w, b, ids, options), part,
                   None if failure is None else f"{type(failure).__name__}: {failure}")
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(payload, gathered, dst=0)
    finally:
        if created:
            dist.destroy_process_group()
    if failure is not None:
        raise failure
    if gathered is None:
        return None
    errors = [f"rank {r}: {error}" for r, (_, _, error) in enumerate(gathered) if error]
    if errors:
        raise RuntimeError("the audit failed on " + "; ".join(errors))
    if any(digest != gathered[0][0] for digest, _, _ in gathered):
        raise ValueError("the ranks audited different heads, classes or settings")
    merged = merge_results([p for _, p, _ in gathered if p is not None], ids)
    merged.settings["world_size"] = world_size
    return merged
