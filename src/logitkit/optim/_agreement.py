"""One decision per parameter on every rank: the collectives behind Tiger/Lion under
torch.distributed (DDP, FSDP2, replicated parameters in any data-parallel setup).

Each rank sees only its own gradients: its shard of an FSDP2 (DTensor) gradient, or, inside DDP's
``no_sync()``, its local un-reduced gradient. Decisions taken from them alone differ between ranks
(a NaN in one shard), and collectives issued per decision then pair up wrongly or hang. So every
``step()`` packs the per-parameter facts into one small float64 vector and all-reduces it with
MAX (as ``GradScaler``'s found_inf): "has a gradient", "non-finite", "some row touched", and an
order-independent fingerprint of the replicated accumulators, whose max and -min tell whether the
replicas agree. Every rank then acts on the same facts.

``fingerprint`` sums the bit patterns of a tensor as integers (exact, so independent of thread
count and reduction order): bit-identical replicas always agree, diverged ones almost never do.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# per parameter: has a gradient, non-finite, some row touched, fingerprint, -fingerprint
SLOTS = 5
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_FINGERPRINT_MODULUS = 2**50  # below 2**53: every value is an exact float64


def resolve_group(option: Any) -> Any:
    """The process group whose ranks must agree, or None (single process, or ``option=False``).

    ``option`` None: the default group once torch.distributed is initialized with several ranks.
    """
    if option is False or not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.group.WORLD if option is None else option
    return group if dist.get_world_size(group) > 1 else None


def is_sharded(tensor: Tensor) -> bool:
    """A DTensor (FSDP2): each rank holds its own shard, so there is nothing to compare."""
    return callable(getattr(tensor, "to_local", None))


def fingerprint(tensor: Tensor) -> Tensor:
    """An exact, order-independent 0-dim int64 summary of ``tensor``'s bits (dense tensors)."""
    bits = tensor.view(_BITS[tensor.element_size()])
    return bits.sum(dtype=torch.int64).remainder(_FINGERPRINT_MODULUS)


def combined_fingerprint(parts: list[Tensor], device: torch.device) -> Tensor:
    """One fingerprint of several tensors (each weighted by its position, so that exchanging two
    of them changes it), on ``device``."""
    total = torch.zeros((), dtype=torch.int64, device=device)
    for weight, part in enumerate(parts, start=1):
        total = total + weight * fingerprint(part).to(device)
    return total.remainder(_FINGERPRINT_MODULUS)


def agree(local: Tensor, group: Any) -> list[float]:
    """Element-wise MAX of ``local`` over the ranks of ``group``, as a list (one host sync)."""
    dist.all_reduce(local, op=dist.ReduceOp.MAX, group=group)
    return local.tolist()


def average_(tensor: Tensor, group: Any) -> None:
    """Replace ``tensor`` by its mean over the ranks (summed in at least float32)."""
    work = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
    dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    work.div_(dist.get_world_size(group))
    if work is not tensor:
        tensor.copy_(work)


def average_all_(tensors: list[Tensor], group: Any) -> None:
    """``average_`` on each tensor, with one all-reduce per device and dtype (the tensors are
    flattened into one buffer, summed in at least float32, and copied back)."""
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        buckets.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for members in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in members])
        average_(flat, group)
        for tensor, part in zip(members, flat.split([t.numel() for t in members]), strict=True):
            tensor.copy_(part.view(tensor.shape))


def average_rows_(momentum: Tensor, window: Tensor, beta: float, dtype: torch.dtype,
                  group: Any) -> None:
    """Average a lazily accumulated momentum over the ranks: the rows touched on any rank join the
    window; a row another rank touched but this one did not takes its deferred ``m <- beta m``
    first (as if touched with a zero gradient), then the window's rows are averaged."""
    marks = window.to(torch.float32)
    dist.all_reduce(marks, op=dist.ReduceOp.MAX, group=group)
    union = marks.gt(0)
    late = (union & ~window).nonzero().squeeze(1)
    if late.numel():
        decayed = momentum.index_select(0, late).to(dtype).mul_(beta)
        momentum.index_copy_(0, late, decayed.to(momentum.dtype))
    window.copy_(union)
    rows = union.nonzero().squeeze(1)
    selected = momentum.index_select(0, rows)
    average_(selected, group)
    momentum.index_copy_(0, rows, selected)
