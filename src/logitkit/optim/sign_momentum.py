"""Tiger and Lion: sign-of-momentum optimizers with one functional core and optional lazy rows.

Lion (Chen et al., 2023), for a gradient ``g`` and momentum ``m``::

    u = sign(b1 * m + (1 - b1) * g)
    m <- b2 * m + (1 - b2) * g
    p <- p - lr * (u + weight_decay * p)          # decoupled decay, i.e. p * (1 - lr wd) - lr u

Tiger (Su, 2023) is Lion with ``b1 = b2 = beta``: ``m <- beta m + (1 - beta) g; u = sign(m)``.
The decay is computed as ``p * (1 - lr * wd) - lr * u``; its fixed point for a constant sign ``u``
is ``p = -u / weight_decay``, the +-1/wd pile-up that ``logitkit.optim.monitor`` detects.

``lazy=True`` (for parameters with ``dim >= 2``; rows are indices along dim 0): a row whose
gradient row is all zero keeps its value and its momentum unchanged this step (no decay either).
Sparse gradients (``nn.Embedding(sparse=True)``) are accepted with lazy rows, at a cost
proportional to the rows they touch. Without ``lazy``, sparse gradients are made dense first.

Gradient accumulation folded into the momentum (Tiger only, as in the original Tiger):
with ``accumulation_steps=k``, call ``c`` (counted per parameter from 0) does
``m <- beta m`` when ``c % k == 0``, then ``m <- m + (1 - beta) g / k``; the parameter moves
(``p <- p - lr (sign(m) + wd p)``) only when ``c % k == k - 1``. After ``k`` calls the momentum
equals one Tiger momentum update with the mean of the ``k`` gradients, and no extra buffer is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["Lion", "Tiger", "sign_momentum_update_", "lazy_rows_update_"]


# On one intra-op thread the plain path works through contiguous tensors in chunks of this many
# elements, so its four element-wise passes stay in cache and its one temporary (the sign) is a
# small reused buffer. With several threads it takes whole tensors: many small parallel regions
# cost more than they save, badly so when the CPU is shared with other processes.
CHUNK = 1 << 18


def _chunk_size() -> int | None:
    return CHUNK if torch.get_num_threads() == 1 else None


def _momentum_direction(m: Tensor, g: Tensor, beta1: float, beta2: float, out: Tensor) -> Tensor:
    """Update ``m`` in place (``m <- b2 m + (1-b2) g``) and return ``sign(b1 m_old + (1-b1) g)``,
    written into ``out`` (a buffer with ``g``'s dtype and at least ``g.numel()`` elements).

    ``m`` may be stored in a lower precision than ``g``; the arithmetic is done in ``g``'s dtype
    and the new momentum is rounded to ``m``'s dtype when stored.
    """
    work = m if m.dtype == g.dtype else m.to(g.dtype)
    direction = out[: g.numel()].view_as(g)
    if beta1 == beta2:
        work.lerp_(g, 1.0 - beta2)
        torch.sign(work, out=direction)
    else:
        torch.lerp(work, g, 1.0 - beta1, out=direction)
        direction.sign_()
        work.lerp_(g, 1.0 - beta2)
    if work is not m:
        m.copy_(work)
    return direction


def _chunkable(*tensors: Tensor) -> bool:
    size = _chunk_size()
    return bool(size) and tensors[0].numel() > size and all(t.is_contiguous() for t in tensors)


def _chunks(p: Tensor, g: Tensor, m: Tensor) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Matching flat chunks of ``CHUNK`` elements when all three are contiguous, else the whole."""
    if _chunkable(p, g, m):
        yield from zip(p.view(-1).split(CHUNK), g.view(-1).split(CHUNK), m.view(-1).split(CHUNK),
                       strict=True)
    else:
        yield p, g, m


def _apply_direction_(p: Tensor, direction: Tensor, lr: float, weight_decay: float) -> None:
    """``p <- p * (1 - lr * weight_decay) - lr * direction``, in place."""
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    p.add_(direction, alpha=-lr)


def sign_momentum_update_(
    params: list[Tensor],
    grads: list[Tensor],
    momenta: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    foreach: bool = False,
) -> None:
    """One Lion step on dense tensors, in place (formula in the module docstring).

    ``foreach=True`` uses torch's multi-tensor ops, ``False`` a loop over tensors; both run the same
    element-wise arithmetic in the same order, so their results are identical. Tensors in one call
    must share a dtype (momenta may share another one).
    """
    if not params:
        return
    if not foreach:
        triples = list(zip(params, grads, momenta, strict=True))
        buffer = grads[0].new_empty(max(CHUNK if _chunkable(*t) else t[0].numel() for t in triples))
        for p, g, m in triples:
            for pc, gc, mc in _chunks(p, g, m):
                direction = _momentum_direction(mc, gc, beta1, beta2, out=buffer)
                _apply_direction_(pc, direction, lr, weight_decay)
        return
    dtype = grads[0].dtype
    work = momenta if momenta[0].dtype == dtype else [m.to(dtype) for m in momenta]
    if beta1 == beta2:
        torch._foreach_lerp_(work, grads, 1.0 - beta2)
        directions = torch._foreach_sign(work)
    else:
        directions = torch._foreach_lerp(work, grads, 1.0 - beta1)
        torch._foreach_sign_(directions)
        torch._foreach_lerp_(work, grads, 1.0 - beta2)
    if work is not momenta:
        torch._foreach_copy_(momenta, work)
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, directions, alpha=-lr)


def _touched_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the rows (dim 0) of ``grad`` that are not all zero, and those gradient rows.

    Sparse COO gradients must have one sparse dimension (as ``nn.Embedding(sparse=True)`` gives);
    duplicate indices are summed (``coalesce``), so the result equals that of the dense gradient.
    """
    if grad.is_sparse:
        if grad.sparse_dim() != 1:
            raise ValueError(
                f"lazy rows need sparse gradients with one sparse dimension (rows), "
                f"got sparse_dim={grad.sparse_dim()}"
            )
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    else:
        rows, values = torch.arange(grad.shape[0], device=grad.device), grad
    nonzero = values.reshape(values.shape[0], -1).any(dim=1)
    if bool(nonzero.all()):
        return rows, values
    keep = nonzero.nonzero().squeeze(1)
    return rows.index_select(0, keep), values.index_select(0, keep)


def lazy_rows_update_(
    param: Tensor,
    grad: Tensor,
    momentum: Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """Lion step on the rows of ``param`` whose gradient row is not all zero; other rows (value
    and momentum) are left untouched. ``grad`` may be dense or sparse COO (rows = dim 0).

    The touched rows are gathered (``index_select``), on one thread in blocks of about ``CHUNK``
    elements into reused buffers, updated with ``sign_momentum_update_`` and written back
    (``index_copy_``), so the cost is proportional to the rows touched (plus one scan of a dense
    gradient to find them).
    """
    rows, grad_rows = _touched_rows(grad)
    if rows.numel() == 0:
        return
    hyper = {"lr": lr, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay}
    if rows.numel() == param.shape[0] and not grad.is_sparse:
        sign_momentum_update_([param], [grad], [momentum], **hyper)
        return
    size = _chunk_size()
    block = max(1, size // max(1, param[0].numel())) if size else rows.numel()
    shape = (min(block, rows.numel()), *param.shape[1:])
    param_buffer, momentum_buffer = param.new_empty(shape), momentum.new_empty(shape)
    for start in range(0, rows.numel(), block):
        index = rows[start : start + block]
        param_rows = torch.index_select(param, 0, index, out=param_buffer[: index.numel()])
        momentum_rows = torch.index_select(momentum, 0, index,
                                           out=momentum_buffer[: index.numel()])
        sign_momentum_update_([param_rows], [grad_rows[start : start + block]], [momentum_rows],
                              **hyper)
        param.index_copy_(0, index, param_rows)
        momentum.index_copy_(0, index, momentum_rows)


def _accumulate_momentum_(momentum: Tensor, grad: Tensor, beta: float, steps: int,
                          first: bool) -> None:
    """Tiger's folded accumulation: ``m <- beta m`` on the first call of a window, then
    ``m <- m + (1 - beta) g / steps``."""
    work = momentum if momentum.dtype == grad.dtype else momentum.to(grad.dtype)
    if first:
        work.mul_(beta)
    work.add_(grad, alpha=(1.0 - beta) / steps)
    if work is not momentum:
        momentum.copy_(work)


def _accumulate_step_(param: Tensor, grad: Tensor, momentum: Tensor, call: int, steps: int,
                      hyper: dict[str, float]) -> None:
    """Call number ``call`` (from 0) of Tiger with folded accumulation over ``steps`` calls."""
    grad = grad.to_dense() if grad.is_sparse else grad
    _accumulate_momentum_(momentum, grad, hyper["beta1"], steps, first=call % steps == 0)
    if call % steps == steps - 1:
        direction = momentum.to(param.dtype).sign()
        _apply_direction_(param, direction, hyper["lr"], hyper["weight_decay"])


def _local(tensor: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2 parameters); any other tensor unchanged."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class _SignMomentum(Optimizer):
    """The shared optimizer wrapper; ``Tiger`` and ``Lion`` only differ in how betas are given."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self.register_load_state_dict_post_hook(_restore_momentum_dtype)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _validate_group(group, self._betas(group))
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(f"complex parameters are not supported, got dtype {p.dtype}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _momentum(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["momentum"] = torch.zeros_like(
                p, dtype=group["momentum_dtype"] or p.dtype, memory_format=torch.preserve_format
            )
        state["step"] += 1
        return state["momentum"]

    def _step_group(self, group: dict[str, Any]) -> None:
        beta1, beta2 = self._betas(group)
        hyper = {"lr": group["lr"], "beta1": beta1, "beta2": beta2,
                 "weight_decay": group["weight_decay"]}
        dense: dict[tuple[Any, ...], tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = _local(p.grad)
            if group["maximize"]:
                grad = -grad
            momentum = _local(self._momentum(p, group))
            param = _local(p)
            if group["accumulation_steps"] > 1:
                call = self.state[p]["step"] - 1
                _accumulate_step_(param, grad, momentum, call, group["accumulation_steps"], hyper)
            elif group["lazy"] and p.dim() >= 2:
                lazy_rows_update_(param, grad, momentum, **hyper)
            else:
                grad = grad.to_dense() if grad.is_sparse else grad
                key = (param.device, param.dtype, momentum.dtype)
                for bucket, tensor in zip(dense.setdefault(key, ([], [], [])),
                                          (param, grad, momentum), strict=True):
                    bucket.append(tensor)
        foreach = group["foreach"]
        for params, grads, momenta in dense.values():
            use_foreach = foreach if foreach is not None else params[0].is_cuda
            sign_momentum_update_(params, grads, momenta, foreach=use_foreach, **hyper)


def _validate_group(group: dict[str, Any], betas: tuple[float, float]) -> None:
    lr, weight_decay = group["lr"], group["weight_decay"]
    if isinstance(lr, Tensor) or not lr >= 0.0:
        raise ValueError(f"lr must be a float >= 0, got {lr!r}")
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    steps = group["accumulation_steps"]
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"accumulation_steps must be an int >= 1, got {steps!r}")
    if steps > 1 and betas[0] != betas[1]:
        raise ValueError("accumulation_steps > 1 folds accumulation into Tiger's single momentum; "
                         f"it needs beta1 == beta2, got {betas}")
    if steps > 1 and group["lazy"]:
        raise ValueError("accumulation_steps > 1 cannot be combined with lazy=True")
    dtype = group["momentum_dtype"]
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"momentum_dtype must be None or a floating torch.dtype, got {dtype!r}")
    if group["foreach"] not in (None, True, False):
        raise ValueError(f"foreach must be None, True or False, got {group['foreach']!r}")


def _restore_momentum_dtype(optimizer: Optimizer) -> None:
    """``Optimizer.load_state_dict`` casts state tensors to the parameter dtype; put the momentum
    back in the group's ``momentum_dtype`` (lossless: it was saved in that dtype)."""
    for group in optimizer.param_groups:
        if group["momentum_dtype"] is None:
            continue
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "momentum" in state:
                state["momentum"] = state["momentum"].to(group["momentum_dtype"])


class Lion(_SignMomentum):
    """Lion: ``p <- p - lr (sign(b1 m + (1-b1) g) + wd p)``, then ``m <- b2 m + (1-b2) g``.

    Args:
        params: parameters or parameter groups (any option below may be set per group).
        lr: step size (>= 0). betas: ``(b1, b2)`` in [0, 1). weight_decay: decoupled decay (>= 0).
        lazy: update only the rows (dim 0) whose gradient row is not all zero, for parameters with
            ``dim >= 2``; accepts sparse gradients.
        maximize: ascend the objective. foreach: multi-tensor path (None: on CUDA only).
        momentum_dtype: dtype of the stored momentum (None: the parameter's dtype), e.g.
            ``torch.bfloat16`` for fp32 parameters; the arithmetic stays in the parameter dtype.
        accumulation_steps: only for ``b1 == b2`` (see the module docstring).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 lazy: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 momentum_dtype: torch.dtype | None = None, accumulation_steps: int = 1) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "lazy": lazy,
                    "maximize": maximize, "foreach": foreach, "momentum_dtype": momentum_dtype,
                    "accumulation_steps": accumulation_steps}
        super().__init__(params, defaults)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        betas = tuple(group["betas"])
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (b1, b2), got {group['betas']!r}")
        return betas  # type: ignore[return-value]


class Tiger(_SignMomentum):
    """Tiger: ``m <- beta m + (1-beta) g; p <- p - lr (sign(m) + wd p)`` (Lion with b1 = b2).

    Takes the same options as ``Lion`` with a single ``beta`` instead of ``betas``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, beta: float = 0.965,
                 weight_decay: float = 0.01, lazy: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, momentum_dtype: torch.dtype | None = None,
                 accumulation_steps: int = 1) -> None:
        defaults = {"lr": lr, "beta": beta, "weight_decay": weight_decay, "lazy": lazy,
                    "maximize": maximize, "foreach": foreach, "momentum_dtype": momentum_dtype,
                    "accumulation_steps": accumulation_steps}
        super().__init__(params, defaults)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return group["beta"], group["beta"]
