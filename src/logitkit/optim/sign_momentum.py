"""Tiger and Lion: sign-of-momentum optimizers (``torch.optim.Optimizer`` subclasses).

The update rules live in ``logitkit.optim.functional`` (formulas there). These classes add, per
parameter group (every constructor option may be overridden in a group):

* ``lazy``: rows (dim 0) whose gradient row is all zero keep value and state; sparse gradients
  (``nn.Embedding(sparse=True)``) are accepted.
* ``relative_lr``: ``False`` (absolute step ``lr``), ``True`` (``lr * RMS(p)``) or ``"row"``
  (``lr * RMS`` of each row), the released Tiger's rule for matrices; vectors keep ``lr``.
* ``lr_scale``: the step is ``lr * lr_scale`` (the released Tiger uses 0.5 for biases and norm
  weights); schedulers change ``lr`` and the ratio stays.
* ``algorithm``: ``"sign"`` (Tiger/Lion) or ``"adamw"`` (decoupled AdamW with the group's
  ``betas``, default (0.9, 0.999), and ``eps``): the AdamW-for-embeddings remedy inside one
  optimizer, so schedulers, ``GradScaler``, Hugging Face ``Trainer`` and ``state_dict`` see one
  ``torch.optim.Optimizer``.
* ``accumulation_steps=k``: gradient accumulation counted by one global call counter
  (``micro_step``, stored in every group): calls ``c`` with ``c % k == k - 1`` move the
  parameters. Sign groups fold it into the momentum (Tiger only, as the released Tiger; lazy rows
  keep a bool per row), AdamW groups keep a gradient sum. A parameter whose gradient is None in a
  call contributes zero and stays in phase.
* ``nonfinite``: what to do with a parameter whose gradient has a NaN or inf entry.
  ``"skip"`` (default): leave it and its state untouched this call and warn (at the 1st, 2nd,
  4th, ... such call; counts in ``nonfinite_steps`` / ``nonfinite_updates``); ``"raise"``:
  ``FloatingPointError`` before anything is updated; ``"shrink"``: skip and shrink,
  ``p <- c + shrink_ratio (p - c)`` with ``c = shrink_center`` (the released Tiger: 0.99, and
  c = 1 for norm weights).

* ``process_group`` (constructor only): under torch.distributed every ``step()`` all-reduces one
  small vector of per-parameter flags (``_agreement``), so each decision is the same on every
  rank: a NaN in one rank's gradient or FSDP2 shard skips (or shrinks) the whole parameter
  everywhere, lazy AdamW step counts advance together, and accumulation windows whose replicas
  differ (local gradients folded inside DDP's ``no_sync()``) are averaged on their last call, one
  all-reduce of the accumulator per window. None: the default group once it is initialized;
  ``False``: no agreement (ranks holding different parameters, e.g. pipeline stages). Lazy rows
  and ``relative_lr="row"`` need whole rows on each rank: a DTensor sharded along another dim is
  refused (``ValueError``) before anything moves.

Training loops: ``torch.amp.GradScaler`` calls ``step()`` on every call
(``_step_supports_amp_scaling``); the step unscales the gradients, and a call with an overflow
counts as a call without gradients, so accumulation windows keep their phase.
``torch.compile(optimizer.step)`` runs the step eagerly: it is data-dependent (non-finite checks,
touched rows, the agreement above), so its results equal the eager step's, without recompiles.
Under ``relative_lr`` an all-zero matrix (or row, ``"row"``) never moves; its first step warns
and names it. Schedulers: both classes expose ``betas``, so ``OneCycleLR``/``CyclicLR`` with
``cycle_momentum=True`` (their default) cycle Lion's beta1 (refused by ``step()`` with
``accumulation_steps > 1``, which needs beta1 == beta2, as the constructor does) and Tiger's only
beta (Tiger stores ``(beta, beta)`` and uses ``betas[0]``; it warns once when a scheduler changes
it: pass ``cycle_momentum=False`` to keep it).

Example::

    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = Tiger(model.parameters(), lr=1e-3, relative_lr=True)
    >>> scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=10,
    ...                                                 cycle_momentum=False)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from logitkit.optim import _agreement
from logitkit.optim.functional import (
    RELATIVE_MODES,
    _accumulate_lazy_sign_,
    _accumulate_sign_,
    _adamw_update_,
    _all_finite,
    _gradient_sums,
    _lazy_rows_apply_,
    _local,
    _row_max_abs,
    _rows,
    _step_size,
    _touched_rows,
    lazy_rows_update_,
    sign_momentum_update_,
)

__all__ = ["Lion", "Tiger"]

ALGORITHMS = ("sign", "adamw")
NONFINITE = ("skip", "raise", "shrink")
ADAMW_BETAS = (0.9, 0.999)
# options every group has; the constructors set the first ones, the rest are per-group only
GROUP_DEFAULTS = {"lr_scale": 1.0, "algorithm": "sign", "eps": 1e-8, "shrink_center": 0.0,
                  "micro_step": 0}


class _SignMomentum(Optimizer):
    """The shared optimizer; ``Tiger`` and ``Lion`` differ only in how betas are read."""

    # torch.amp.GradScaler then calls step() on every call, overflow or not (see
    # ``_unscale_for_grad_scaler``), so accumulation windows keep their phase
    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any],
                 process_group: Any = None) -> None:
        self.process_group = process_group
        self.nonfinite_steps = 0
        self.nonfinite_updates = 0
        self._decay_warned: set[tuple[int, torch.dtype]] = set()
        self._cycled_warned: set[int] = set()
        super().__init__(params, {**defaults, **GROUP_DEFAULTS})
        self.register_load_state_dict_post_hook(_after_load_state_dict)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        raise NotImplementedError

    def _normalize(self, group: dict[str, Any]) -> None:
        """Hook for subclasses to rewrite a group's keys before validation."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, validated first: an invalid group is never appended.

        The group is completed from the constructor's options (``defaults``) and checked as a
        whole; Tiger also accepts ``{"beta": b}`` (stored as ``betas = (b, b)``), and an
        ``"adamw"`` group without ``betas`` gets (0.9, 0.999). A new group joins the accumulation
        window in phase with the first group (same ``micro_step``).

        Args:
            param_group (dict): ``{"params": ...}`` and any option of the class (required)

        Returns:
            None: the group is appended to ``param_groups``.

        Raises:
            TypeError: ``param_group`` is not a dict.
            ValueError: an option is unknown or out of range, a parameter is complex, or (from
                ``torch.optim.Optimizer``) a parameter is already in another group.

        Example::

            >>> import torch
            >>> from logitkit.optim import Tiger
            >>> optimizer = Tiger(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
            >>> optimizer.add_param_group({"params": torch.nn.Linear(2, 1).parameters(),
            ...                            "beta": 0.9, "lr_scale": 0.5})
            >>> optimizer.param_groups[1]["betas"], optimizer.param_groups[1]["lr_scale"]
            ((0.9, 0.9), 0.5)
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params", [])
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        self._normalize(group)
        if group.get("algorithm", self.defaults["algorithm"]) == "adamw":
            group.setdefault("betas", ADAMW_BETAS)
        group.setdefault("micro_step", self.param_groups[0]["micro_step"] if self.param_groups
                         else 0)
        candidate = {**self.defaults, **group}
        _validate_group(candidate, self._group_betas(candidate))
        for p in group["params"]:
            if isinstance(p, Tensor) and p.is_complex():
                raise ValueError(f"complex parameters are not supported, got dtype {p.dtype}")
        super().add_param_group(group)

    def _group_betas(self, group: dict[str, Any]) -> tuple[float, float]:
        if group["algorithm"] == "adamw":
            return _pair(group["betas"])
        return self._betas(group)

    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (with ``accumulation_steps = k > 1``: one call of the
        window of ``k``; the parameters move on its last call).

        The gradients of every group are checked for NaN/inf before any parameter moves; see
        ``nonfinite`` in the class docstring.

        Args:
            closure (Callable, optional): re-evaluates the model, returns the loss (default: None)

        Returns:
            The value returned by ``closure``, or None without a closure.

        Raises:
            ValueError: a group's ``lr``, ``weight_decay``, ``lr_scale`` or ``betas`` is no longer
                finite and in range (e.g. set so by a scheduler); nothing is updated.
            FloatingPointError: a gradient in a ``nonfinite="raise"`` group has a NaN or inf
                entry; nothing is updated.

        Warns:
            RuntimeWarning: updates were skipped for non-finite gradients (``"skip"``,
                ``"shrink"``), or ``1 - lr * weight_decay`` rounds to 1 in a bfloat16/float16
                parameter (decay has no effect; once per group and dtype).

        Example::

            >>> import torch
            >>> from logitkit.optim import Lion
            >>> model = torch.nn.Linear(2, 1)
            >>> optimizer = Lion(model.parameters(), lr=1e-3)
            >>> def closure():
            ...     optimizer.zero_grad()
            ...     loss = model(torch.ones(1, 2)).pow(2).sum()
            ...     loss.backward()
            ...     return loss
            >>> loss = optimizer.step(closure)
            >>> loss.dim()
            0
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            _check_step_values(group, self._group_betas(group))
            self._notice_betas(index, group)
        overflow = self._unscale_for_grad_scaler()
        work = [(group, self._entries(group)) for group in self.param_groups]
        for group, entries in work:
            if group["lazy"] or group["relative_lr"] == "row":
                for p, _ in entries:
                    if not self.state.get(p):
                        self._check_whole_rows(p, group)
        lazy = {id(p) for group, entries in work if group["lazy"] for p, _ in entries}
        sums, bad = self._scan([entry for _, entries in work for entry in entries], lazy)
        work, bad, overflow, decisions = self._agree(work, sums, bad, overflow)
        if overflow:  # GradScaler found inf/NaN: the call counts as one with no gradient
            for group, entries in work:
                if group["accumulation_steps"] > 1:
                    entries = [(p, None) for p, _ in entries if self.state.get(p)]
                    [(_, entries)] = self._average_diverged_windows([(group, entries)], set(), {},
                                                                    decisions)
                    self._step_group(group, entries, {}, decisions)
                group["micro_step"] += 1
            return loss
        raising = [e for group, entries in work if group["nonfinite"] == "raise"
                   for e in entries if id(e[0]) in bad]
        if raising:
            raise FloatingPointError(
                f"{type(self).__name__}: {len(raising)} parameter(s) have a non-finite gradient "
                f"(shapes {[tuple(e[0].shape) for e in raising[:5]]}); nothing was updated")
        work = self._average_diverged_windows(work, bad, sums, decisions)
        for group, entries in work:
            self._warn_if_decay_underflows(group)
            kept = [e for e in entries if id(e[0]) not in bad]
            self._step_group(group, kept, sums, decisions)
            if group["nonfinite"] == "shrink":
                for p, _ in entries:
                    if id(p) in bad:
                        _local(p).sub_(group["shrink_center"]).mul_(group["shrink_ratio"]).add_(
                            group["shrink_center"])
            group["micro_step"] += 1
        if bad:
            self._count_skipped(len(bad))
        return loss

    def _check_whole_rows(self, p: Tensor, group: dict[str, Any]) -> None:
        """Lazy rows and ``relative_lr="row"`` read whole rows (dim 0) of a parameter: refuse a
        DTensor sharded along another dim (tensor parallelism's column shards, FSDP2 with a
        ``shard_placement_fn``), whose local rows are partial, before anything moves."""
        for placement in getattr(p, "placements", ()):
            if placement.is_shard() and placement.dim % p.dim() != 0 and p.dim() >= 2:
                raise ValueError(
                    f"{type(self).__name__}: {self._describe(p, group)} is sharded along dim "
                    f"{placement.dim} ({p.placements}), so no rank holds whole rows; lazy=True "
                    "and relative_lr='row' need them. Shard it along dim 0 (FSDP2's default), "
                    "or use lazy=False and relative_lr=True or False for this group.")

    def _notice_betas(self, index: int, group: dict[str, Any]) -> None:
        """Hook for subclasses to look at a group's betas before a step."""

    def _unscale_for_grad_scaler(self) -> bool:
        """``torch.amp.GradScaler`` calls ``step()`` of optimizers with
        ``_step_supports_amp_scaling`` every time, with ``grad_scale`` (None once the user called
        ``scaler.unscale_``) and ``found_inf`` set: unscale the gradients here (multiplied by the
        inverse scale in float32, as ``GradScaler.unscale_`` does) and report the overflow, so
        that a skipped micro-step still counts and the accumulation window keeps its phase."""
        found_inf = getattr(self, "found_inf", None)
        if found_inf is None:
            return False
        if bool(found_inf.item()):
            return True
        scale = getattr(self, "grad_scale", None)
        if scale is not None:
            inverse = scale.double().reciprocal().float()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        grad = _local(p.grad)
                        grad.mul_(inverse.to(grad.device))
        return False

    def _entries(self, group: dict[str, Any]) -> list[tuple[Tensor, Tensor | None]]:
        """(parameter, gradient) pairs to process: those with a gradient, and under accumulation
        also those with state (their gradient None counts as zero and keeps them in phase)."""
        accumulating = group["accumulation_steps"] > 1
        return [(p, p.grad) for p in group["params"]
                if p.grad is not None or (accumulating and self.state.get(p))]

    def _scan(self, entries: Sequence[tuple[Tensor, Tensor | None]], lazy: set[int]
              ) -> tuple[dict[int, Tensor], set[int]]:
        """Gradient sums (row sums for the dense matrix gradients of ``lazy`` parameters, reused
        to find touched rows) and the ids of parameters whose gradient has a non-finite entry.
        One host sync per device; a non-finite sum is confirmed by an exact scan (a finite sum
        can overflow)."""
        sums: dict[int, Tensor] = {}
        for p, grad in entries:
            if grad is not None:
                local = _local(grad)
                per_row = id(p) in lazy and local.dim() >= 2 and not local.is_sparse
                sums[id(p)] = _gradient_sums(local, per_row=per_row)
        by_device: dict[torch.device, list[int]] = {}
        for key, value in sums.items():
            by_device.setdefault(value.device, []).append(key)
        suspects = []
        for keys in by_device.values():
            totals = torch.stack([sums[k].sum() if sums[k].dim() else sums[k] for k in keys])
            flags = torch.isfinite(totals).tolist()
            suspects += [k for k, ok in zip(keys, flags, strict=True) if not ok]
        grads = {id(p): grad for p, grad in entries}
        bad = {k for k in suspects if not _all_finite(_local(grads[k]))}
        return sums, bad

    def _agree(self, work: list[tuple[dict[str, Any], list[tuple[Tensor, Tensor | None]]]],
               sums: dict[int, Tensor], bad: set[int], overflow: bool
               ) -> tuple[list[tuple[dict[str, Any], list[tuple[Tensor, Tensor | None]]]],
                          set[int], bool, _Decisions]:
        """Under torch.distributed, make every rank take the same decisions (``_agreement``):
        one all-reduce of per-parameter flags. Returns the entries (a parameter with a gradient
        on some rank has one on every rank: zeros where absent), the non-finite set, the
        GradScaler overflow, and the decisions ``_step_group`` needs (module ``_agreement``)."""
        process_group = _agreement.resolve_group(self.process_group)
        if process_group is None:
            return work, bad, overflow, _Decisions()
        pairs = [(group, p) for group in self.param_groups for p in group["params"]]
        grads = {id(p): grad for _, entries in work for p, grad in entries}
        flags, fingerprints, slots = [float(overflow)], [], []
        for i, (group, p) in enumerate(pairs):
            grad = grads.get(id(p))
            touched = 0.0
            if group["algorithm"] == "adamw" and group["lazy"] and p.dim() >= 2:
                touched = self._adamw_touched(p, grad, group, sums.get(id(p)))
            flags += [float(grad is not None), float(id(p) in bad), touched, 0.0, 0.0]
            if self._window_closes(group) and not _agreement.is_sharded(p):
                fingerprints.append(self._window_fingerprint(p, grad))
                slots.append(1 + _agreement.SLOTS * i + 3)
        device = pairs[0][1].device
        local = torch.tensor(flags, dtype=torch.float64, device=device)
        if fingerprints:
            values = torch.stack([f.to(device) for f in fingerprints]).double()
            index = torch.tensor(slots, device=device)
            local[index] = values
            local[index + 1] = -values
        agreed = _agreement.agree(local, process_group)
        decisions = _Decisions(touched=set(), group=process_group)
        agreed_bad: set[int] = set()
        rebuilt: dict[int, list[tuple[Tensor, Tensor | None]]] = {id(g): [] for g, _ in work}
        for i, (group, p) in enumerate(pairs):
            has_grad, is_bad, touched, high, low = agreed[1 + _agreement.SLOTS * i:][
                :_agreement.SLOTS]
            if is_bad:
                agreed_bad.add(id(p))
            if high != -low:
                decisions.average.add(id(p))
            if touched:
                decisions.touched.add(id(p))
            if has_grad or (group["accumulation_steps"] > 1 and self.state.get(p)):
                grad = grads.get(id(p))
                rebuilt[id(group)].append(
                    (p, torch.zeros_like(p) if grad is None and has_grad else grad))
        work = [(group, rebuilt[id(group)]) for group, _ in work]
        return work, agreed_bad, bool(agreed[0]), decisions

    def _adamw_touched(self, p: Tensor, grad: Tensor | None, group: dict[str, Any],
                       row_sums: Tensor | None) -> float:
        """1.0 when a lazy AdamW parameter moves some local row this call (its step count then
        advances on every rank), else 0.0."""
        if group["accumulation_steps"] > 1:
            if not self._window_closes(group):
                return 0.0
            state = self.state.get(p)
            parts = ([_local(state["grad_sum"])] if state else []) + (
                [_dense(_local(grad))] if grad is not None else [])
            if not parts:
                return 0.0
            grad, row_sums = sum(parts[1:], parts[0].clone()), None
        elif grad is None:
            return 0.0
        found = _touched_rows(_local(grad), row_sums)
        return float(found is None or found[0].numel() > 0)

    def _average_diverged_windows(
            self, work: list[tuple[dict[str, Any], list[tuple[Tensor, Tensor | None]]]],
            bad: set[int], sums: dict[int, Tensor], decisions: _Decisions
    ) -> list[tuple[dict[str, Any], list[tuple[Tensor, Tensor | None]]]]:
        """On the last call of a window whose replicas differ between ranks (``decisions``):
        fold this call's gradient into the accumulator (momentum, or AdamW's gradient sum), then
        average the accumulators over the ranks, all in one all-reduce (lazy rows: one per
        parameter, ``_agreement.average_rows_``). Returns the entries with those gradients
        consumed (None), so that the step only applies the window."""
        if not decisions.average:
            return work
        bucket, rebuilt = [], []
        for group, entries in work:
            if not self._window_closes(group):
                rebuilt.append((group, entries))
                continue
            kept = []
            for p, grad in entries:
                if id(p) not in decisions.average or id(p) in bad:
                    kept.append((p, grad))
                    continue
                state = self._state(p, group)
                grad = None if grad is None else _local(grad)
                if grad is not None and group["maximize"]:
                    grad = -grad
                if group["algorithm"] == "adamw":
                    if grad is not None:
                        _local(state["grad_sum"]).add_(_dense(grad))
                    bucket.append(_local(state["grad_sum"]))
                else:
                    beta, momentum = self._betas(group)[0], _local(state["momentum"])
                    window = {"first": False, "last": False, "beta": beta,
                              "steps": group["accumulation_steps"]}
                    unused = {"lr": 0.0, "weight_decay": 0.0}  # nothing moves: last is False
                    self._accumulate(_local(p), grad, momentum, state, sums.get(id(p)), window,
                                     unused)
                    if "window_rows" in state:
                        _agreement.average_rows_(momentum, _local(state["window_rows"]), beta,
                                                 p.dtype, decisions.group)
                    else:
                        bucket.append(momentum)
                kept.append((p, None))
            rebuilt.append((group, kept))
        _agreement.average_all_(bucket, decisions.group)
        return rebuilt

    @staticmethod
    def _window_closes(group: dict[str, Any]) -> bool:
        steps = group["accumulation_steps"]
        return steps > 1 and group["micro_step"] % steps == steps - 1

    def _window_fingerprint(self, p: Tensor, grad: Tensor | None) -> Tensor:
        """The accumulator before this call (momentum, lazy window marks, AdamW gradient sum)
        and this call's gradient, summarised exactly (``_agreement.fingerprint``)."""
        state = self.state.get(p, {})
        parts = [state[key] for key in ("momentum", "window_rows", "grad_sum") if key in state]
        if grad is not None and not grad.is_sparse:
            parts.append(grad)
        return _agreement.combined_fingerprint(parts, p.device)

    def _count_skipped(self, count: int) -> None:
        self.nonfinite_steps += 1
        self.nonfinite_updates += count
        if self.nonfinite_steps & (self.nonfinite_steps - 1) == 0:  # 1, 2, 4, 8, ...
            warnings.warn(
                f"{type(self).__name__}: skipped the update of {count} parameter(s) whose gradient "
                f"has NaN or inf entries; {self.nonfinite_steps} step(s) with skipped updates so "
                f"far ({self.nonfinite_updates} updates; next warning at "
                f"{2 * self.nonfinite_steps}). Use nonfinite='raise' to stop instead.",
                RuntimeWarning, stacklevel=2)

    def _warn_if_decay_underflows(self, group: dict[str, Any]) -> None:
        """Warn once per group and dtype when ``1 - lr * weight_decay`` rounds to 1 in a half
        precision parameter dtype (lr * wd below ~2^-9 in bfloat16, ~2^-11 in float16, common
        values): decoupled decay then does nothing at all. float32 needs lr * wd < ~3e-8, the
        tail of an annealed schedule, and is not reported."""
        decay = group["lr"] * group["lr_scale"] * group["weight_decay"]
        if decay <= 0.0:
            return
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        for dtype in {p.dtype for p in group["params"]} & {torch.bfloat16, torch.float16}:
            if (index, dtype) in self._decay_warned:
                continue
            if torch.tensor(1.0 - decay, dtype=dtype).item() == 1.0:
                self._decay_warned.add((index, dtype))
                warnings.warn(
                    f"{type(self).__name__}: weight decay has no effect on the {dtype} parameters "
                    f"of group {index}: 1 - lr * weight_decay = 1 - {decay:.3g} rounds to 1 in "
                    f"{dtype} (relative_lr makes the factor smaller still). Keep float32 master "
                    "weights, or expect no decay.", RuntimeWarning, stacklevel=2)

    def _state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The parameter's state, created on first use for the group's algorithm."""
        state = self.state[p]
        if state:
            return state
        state["step"] = 0
        if group["algorithm"] == "adamw":
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["accumulation_steps"] > 1:
                state["grad_sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            state["momentum"] = torch.zeros_like(
                p, dtype=group["momentum_dtype"] or p.dtype, memory_format=torch.preserve_format)
            if group["accumulation_steps"] > 1 and group["lazy"] and p.dim() >= 2:
                state["window_rows"] = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        return state

    def _step_group(self, group: dict[str, Any], entries: list[tuple[Tensor, Tensor | None]],
                    sums: dict[int, Tensor], decisions: _Decisions) -> None:
        if group["algorithm"] == "adamw":
            for p, grad in entries:
                self._adamw(p, grad, group, sums.get(id(p)), decisions)
            return
        beta1, beta2 = self._betas(group)
        steps, call = group["accumulation_steps"], group["micro_step"]
        dense: dict[tuple[Any, ...], tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
        for p, grad in entries:
            state = self._state(p, group)
            state["step"] += 1
            lr, relative = self._lr(p, group)
            param, momentum = _local(p), _local(state["momentum"])
            grad = None if grad is None else _local(grad)
            if grad is not None and group["maximize"]:
                grad = -grad
            hyper = {"lr": lr, "weight_decay": group["weight_decay"], "relative_lr": relative}
            if state["step"] == 1 and group["relative_lr"] and p.dim() >= 2:
                self._warn_if_stuck_at_zero(p, grad, group, lr)
            if steps > 1:
                window = {"first": call % steps == 0, "last": call % steps == steps - 1,
                          "steps": steps, "beta": beta1}
                self._accumulate(param, grad, momentum, state, sums.get(id(p)), window, hyper)
            elif group["lazy"] and p.dim() >= 2:
                lazy_rows_update_(param, grad, momentum, beta1=beta1, beta2=beta2,
                                  row_sums=sums.get(id(p)), **hyper)
            elif isinstance(lr, Tensor) or relative:
                sign_momentum_update_([param], [_dense(grad)], [momentum], beta1=beta1,
                                      beta2=beta2, **hyper)
            else:
                key = (param.device, param.dtype, momentum.dtype)
                for bucket, tensor in zip(dense.setdefault(key, ([], [], [])),
                                          (param, _dense(grad), momentum), strict=True):
                    bucket.append(tensor)
        for params, grads, momenta in dense.values():
            foreach = group["foreach"] if group["foreach"] is not None else params[0].is_cuda
            sign_momentum_update_(params, grads, momenta, lr=group["lr"] * group["lr_scale"],
                                  beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                                  foreach=foreach)

    @staticmethod
    def _accumulate(param: Tensor, grad: Tensor | None, momentum: Tensor, state: dict[str, Any],
                    row_sums: Tensor | None, window: dict[str, Any], hyper: dict[str, Any]
                    ) -> None:
        """One call of the accumulation window (lazy rows when the state marks them)."""
        if "window_rows" in state:
            _accumulate_lazy_sign_(param, grad, momentum, _local(state["window_rows"]),
                                   row_sums=row_sums, **window, **hyper)
        else:
            _accumulate_sign_(param, grad, momentum, **window, **hyper)

    def _warn_if_stuck_at_zero(self, p: Tensor, grad: Tensor | None, group: dict[str, Any],
                               lr: float | Tensor) -> None:
        """Under ``relative_lr`` the step is ``lr * RMS``: a matrix (``True``; ``lr`` is then its
        step size, of the full tensor under FSDP2) or a row (``"row"``) that is exactly zero
        never moves, whatever its gradient (LoRA's B, zero-initialised projections). Checked
        once, at the parameter's first step."""
        if grad is None:
            return
        param, grad = _local(p), _dense(_local(grad))
        if group["relative_lr"] == "row":
            zero_rows = _row_max_abs(_rows(param)).eq(0) & _row_max_abs(_rows(grad)).ne(0)
            count = int(zero_rows.sum())
            what = f"{count} of its {param.shape[0]} rows are"
        else:
            zero = (torch.as_tensor(lr).eq(0) if group["lr"] * group["lr_scale"] > 0
                    else _row_max_abs(_rows(param)).eq(0).all())  # lr 0 (warm-up): the shard
            count = int(bool(zero))
            what = "it is"
        if count and bool(grad.ne(0).any()):
            warnings.warn(
                f"{type(self).__name__}: {self._describe(p, group)}: {what} exactly zero. "
                f"relative_lr={group['relative_lr']!r} steps by lr * RMS, which is 0 there, so "
                "they stay zero although their gradient is not. Initialise with non-zero values, "
                "or put the parameter in a group with relative_lr=False (e.g. LoRA's B).",
                RuntimeWarning, stacklevel=4)

    def _describe(self, p: Tensor, group: dict[str, Any]) -> str:
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        position = next(i for i, q in enumerate(group["params"]) if q is p)
        names = group.get("param_names")
        label = f"group {index}" + (f" ({group['name']!r})" if "name" in group else "")
        if names:
            return f"parameter {names[position]!r} ({label}, shape {tuple(p.shape)})"
        return f"parameter {position} of {label} (shape {tuple(p.shape)})"

    @staticmethod
    def _lr(p: Tensor, group: dict[str, Any]) -> tuple[float | Tensor, bool | str]:
        """The step size to hand to the functional core: the whole-tensor relative rate is
        computed here, on the full parameter (a DTensor's RMS is global)."""
        lr, relative = group["lr"] * group["lr_scale"], group["relative_lr"]
        if relative is True and p.dim() >= 2:
            return _step_size(p, lr, True), False
        return lr, relative

    def _adamw(self, p: Tensor, grad: Tensor | None, group: dict[str, Any],
               row_sums: Tensor | None, decisions: _Decisions) -> None:
        state = self._state(p, group)
        param = _local(p)
        grad = None if grad is None else _local(grad)
        if grad is not None and group["maximize"]:
            grad = -grad
        steps = group["accumulation_steps"]
        if steps > 1:
            grad_sum = _local(state["grad_sum"])
            if group["micro_step"] % steps == 0:
                grad_sum.zero_()
            if grad is not None:
                grad_sum.add_(_dense(grad))
            if group["micro_step"] % steps != steps - 1:
                return
            grad, row_sums = grad_sum / steps, None
        beta1, beta2 = _pair(group["betas"])
        hyper = {"lr": group["lr"] * group["lr_scale"], "beta1": beta1, "beta2": beta2,
                 "eps": group["eps"], "weight_decay": group["weight_decay"]}
        moments = [_local(state["exp_avg"]), _local(state["exp_avg_sq"])]
        found = _touched_rows(grad, row_sums) if group["lazy"] and p.dim() >= 2 else None
        if found is not None and found[0].numel() == 0:
            if decisions.touched is not None and id(p) in decisions.touched:
                state["step"] += 1  # rows of another rank's shard moved: one count everywhere
            return
        state["step"] += 1
        if found is None:
            _adamw_update_(param, _dense(grad), *moments, step=state["step"], **hyper)
            return

        def update(p_rows: Tensor, g_rows: Tensor, state_rows: Sequence[Tensor]) -> None:
            _adamw_update_(p_rows, g_rows, *state_rows, step=state["step"], **hyper)

        _lazy_rows_apply_(param, found[0], found[1], moments, update)


@dataclass
class _Decisions:
    """What the ranks agreed on in a step (``_SignMomentum._agree``): replicated parameters whose
    accumulation window differs between ranks (averaged before the window's update), and the
    lazy AdamW parameters with a touched row on some rank (None: single process, local facts)."""

    average: set[int] = field(default_factory=set)
    touched: set[int] | None = None
    group: Any = None


def _dense(grad: Tensor) -> Tensor:
    return grad.to_dense() if grad.is_sparse else grad


def _pair(betas: Any) -> tuple[float, float]:
    betas = tuple(betas)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (b1, b2), got {betas!r}")
    return betas  # type: ignore[return-value]


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_step_values(group: dict[str, Any], betas: tuple[float, float]) -> None:
    """The values schedulers and users change between steps: finite, in range."""
    for name in ("lr", "weight_decay", "lr_scale"):
        value = group[name]
        if not (_finite_number(value) and value >= 0.0):
            raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    if not all(_finite_number(b) and 0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    if group["accumulation_steps"] > 1 and group["algorithm"] == "sign" and betas[0] != betas[1]:
        raise ValueError(
            "accumulation_steps > 1 folds accumulation into Tiger's single momentum; it needs "
            f"beta1 == beta2, got {betas}. A scheduler with cycle_momentum=True (the default of "
            "OneCycleLR and CyclicLR) changes beta1 only: pass cycle_momentum=False")


def _validate_group(group: dict[str, Any], betas: tuple[float, float]) -> None:
    steps = group["accumulation_steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"accumulation_steps must be an int >= 1, got {steps!r}")
    if group["algorithm"] not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {group['algorithm']!r}")
    _check_step_values(group, betas)
    if group["relative_lr"] not in RELATIVE_MODES:
        raise ValueError(f"relative_lr must be one of {RELATIVE_MODES}, "
                         f"got {group['relative_lr']!r}")
    if group["nonfinite"] not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {NONFINITE}, got {group['nonfinite']!r}")
    ratio = group["shrink_ratio"]
    if not (_finite_number(ratio) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"shrink_ratio must lie in [0, 1], got {ratio!r}")
    if not _finite_number(group["shrink_center"]):
        raise ValueError(f"shrink_center must be a finite float, got {group['shrink_center']!r}")
    if not (_finite_number(group["eps"]) and group["eps"] > 0.0):
        raise ValueError(f"eps must be a finite float > 0, got {group['eps']!r}")
    dtype = group["momentum_dtype"]
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"momentum_dtype must be None or a floating torch.dtype, got {dtype!r}")
    if group["foreach"] not in (None, True, False):
        raise ValueError(f"foreach must be None, True or False, got {group['foreach']!r}")


def _after_load_state_dict(optimizer: Optimizer) -> None:
    """``Optimizer.load_state_dict`` replaces the groups with the saved ones and casts state
    tensors to the parameter dtype. Complete groups saved by older versions (Tiger's ``beta``,
    keys added since), and put the momentum back in ``momentum_dtype`` and the lazy window marks
    back to bool (both lossless)."""
    for group in optimizer.param_groups:
        optimizer._normalize(group)  # type: ignore[attr-defined]
        if "micro_step" not in group:
            steps = [optimizer.state[p]["step"] for p in group["params"] if optimizer.state.get(p)]
            group["micro_step"] = max(steps, default=0)
        for key, value in optimizer.defaults.items():
            group.setdefault(key, value)
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            if group["momentum_dtype"] is not None and "momentum" in state:
                state["momentum"] = state["momentum"].to(group["momentum_dtype"])
            if "window_rows" in state:
                state["window_rows"] = state["window_rows"].bool()


class Lion(_SignMomentum):
    r"""Implements Lion (EvoLved Sign Momentum), with lazy rows, relative step sizes, gradient
    accumulation and a non-finite gradient guard.

    Every parameter tensor :math:`\theta` is updated on its own; :math:`\theta_i` is its row
    :math:`i` (index along dim 0), :math:`\mathrm{RMS}(x) = \sqrt{\mathrm{mean}(x^2)}` (in
    float32 for half-precision weights), :math:`\mathrm{sign}(0) = 0`, and :math:`t` counts the
    calls of ``step()`` (the group's ``micro_step`` is :math:`t - 1`).

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                                 \\
            &\textbf{input}: \gamma \text{ (lr)}, \: \kappa \text{ (lr\_scale)},
                \: \beta_1, \beta_2 \text{ (betas)}, \: \lambda \text{ (weight\_decay)},
                \: \theta_0 \text{ (params)}, \: f(\theta) \text{ (objective)},                  \\
            &\hspace{13mm} k \text{ (accumulation\_steps)}, \: \textit{relative\_lr},
                \: \textit{lazy}, \: \textit{maximize}                                           \\
            &\textbf{initialize}: m_0 \leftarrow 0 \text{ (momentum)},
                \: W \leftarrow \emptyset \text{ (rows touched in the window, } k > 1)    \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                                 \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                         \\
            &\hspace{5mm}\textbf{if} \: \textit{maximize}:                                       \\
            &\hspace{10mm}g_t \leftarrow -\nabla_{\theta} f_t (\theta_{t-1})                     \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}g_t \leftarrow \nabla_{\theta} f_t (\theta_{t-1})                      \\
            &\hspace{5mm}\textbf{if} \: g_t \text{ has a NaN or inf entry}: \:
                \text{see } \textit{nonfinite} \text{ below; } \theta, m
                \text{ take no step}                                                             \\
            &\hspace{5mm}\textbf{if} \: \textit{relative\_lr} = \text{"row"}
                \textbf{ and } \dim \theta \geq 2:                                               \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa \, \mathrm{RMS}(\theta_{t-1,i})
                \text{ for each row } i                                                          \\
            &\hspace{5mm}\textbf{else if} \: \textit{relative\_lr} = \text{True}
                \textbf{ and } \dim \theta \geq 2:                                               \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa \, \mathrm{RMS}(\theta_{t-1})             \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa                                           \\
            &\hspace{5mm}\textbf{if} \: \textit{lazy} \textbf{ and } \dim \theta \geq 2:         \\
            &\hspace{10mm}R_t \leftarrow \{ i : g_{t,i} \text{ has a nonzero entry} \}          \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}R_t \leftarrow \text{all rows}                                         \\
            &\hspace{5mm}\theta_t \leftarrow \theta_{t-1}, \: m_t \leftarrow m_{t-1}
                \text{ (rows not written below keep their values)}                               \\
            &\hspace{5mm}\textbf{if} \: k = 1:                                                   \\
            &\hspace{10mm}\textbf{for} \: i \in R_t:                                             \\
            &\hspace{15mm}c_{t,i} \leftarrow \beta_1 m_{t-1,i} + (1 - \beta_1) g_{t,i}           \\
            &\hspace{15mm}m_{t,i} \leftarrow \beta_2 m_{t-1,i} + (1 - \beta_2) g_{t,i}           \\
            &\hspace{15mm}\theta_{t,i} \leftarrow \theta_{t-1,i} (1 - s_i \lambda)
                - s_i \, \mathrm{sign}(c_{t,i})                                                  \\
            &\hspace{5mm}\textbf{else} \: (\text{only } \beta_1 = \beta_2 = \beta
                \text{, as Tiger})                                                               \\
            &\hspace{10mm}\textbf{if} \: t \equiv 1 \pmod{k}: \: W \leftarrow \emptyset          \\
            &\hspace{10mm}\textbf{for} \: i \in R_t:                                             \\
            &\hspace{15mm}\textbf{if} \: i \notin W: \: m_{t,i} \leftarrow \beta m_{t,i},
                \: W \leftarrow W \cup \{i\}                                                     \\
            &\hspace{15mm}m_{t,i} \leftarrow m_{t,i} + (1 - \beta) \, g_{t,i} / k                \\
            &\hspace{10mm}\textbf{if} \: t \equiv 0 \pmod{k}:                                    \\
            &\hspace{15mm}\textbf{for} \: i \in W:                                               \\
            &\hspace{20mm}\theta_{t,i} \leftarrow \theta_{t-1,i} (1 - s_i \lambda)
                - s_i \, \mathrm{sign}(m_{t,i})                                                  \\
            &\rule{110mm}{0.4pt}                                                          \\[-1.ex]
            &\bf{return} \: \theta_t                                                      \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                          \\[-1.ex]
       \end{aligned}

    The decay is decoupled and scaled by the step size: :math:`\theta (1 - s \lambda) - s u =
    \theta - s (u + \lambda \theta)`. Parameters whose gradient is None are left alone; with
    :math:`k > 1`, one that has state takes :math:`g_t = 0` and stays in phase. After a window of
    :math:`k` calls the momentum is one step with the mean gradient of the window; with ``lazy``
    a row's :math:`m_i \leftarrow \beta m_i` waits for the row's first gradient in the window,
    and only rows with a gradient in the window move. Without ``lazy``, or when every row is
    touched, the update is the dense one. The momentum is stored in ``momentum_dtype``; the
    arithmetic is done in the gradient's dtype.

    Non-finite gradients (``nonfinite``) are found in every group before any parameter moves.
    ``"skip"``: such a parameter and its state are left as they are, with a ``RuntimeWarning`` at
    the 1st, 2nd, 4th, ... step with skips (counted in ``nonfinite_steps`` and
    ``nonfinite_updates``); ``"shrink"``: also :math:`\theta \leftarrow c + r (\theta - c)`
    (:math:`c` = ``shrink_center``, :math:`r` = ``shrink_ratio``); ``"raise"``:
    ``FloatingPointError``, and nothing is updated.

    Groups with ``algorithm="adamw"`` (``make_optimizer(..., embeddings="adamw")``) take decoupled
    AdamW steps instead, with the group's ``betas`` (default (0.9, 0.999)) and ``eps``, on the rows
    :math:`R_t` and ignoring ``relative_lr``: :math:`\theta \leftarrow \theta (1 - \gamma \kappa
    \lambda)`, :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`, :math:`v \leftarrow \beta_2 v +
    (1 - \beta_2) g^2`, :math:`\theta \leftarrow \theta - \gamma \kappa / (1 - \beta_1^n) \, m /
    (\sqrt{v} / \sqrt{1 - \beta_2^n} + \epsilon)`, with :math:`n` the number of updates of
    :math:`\theta` so far (the arithmetic of ``torch.optim.AdamW(foreach=False)``); with
    :math:`k > 1`, :math:`g` is the mean gradient of the window, applied on its last call.

    Args:
        params (iterable): parameters, or dicts defining parameter groups (options per group)
        lr (float, optional): learning rate :math:`\gamma` (default: 1e-4)
        betas (tuple[float, float], optional): :math:`(\beta_1, \beta_2)` (default: (0.9, 0.99))
        weight_decay (float, optional): decoupled weight decay :math:`\lambda` (default: 0.0)
        lazy (bool, optional): for ``dim >= 2``, move only rows with a gradient (default: False)
        maximize (bool, optional): maximize the objective instead of minimizing (default: False)
        foreach (bool, optional): multi-tensor ops for plain steps; None: on CUDA (default: None)
        momentum_dtype (torch.dtype, optional): dtype of m; None: the parameter's (default: None)
        accumulation_steps (int, optional): calls :math:`k` per update; betas equal (default: 1)
        relative_lr (bool or str, optional): False, True or ``"row"``, as above (default: False)
        nonfinite (str, optional): ``"skip"``, ``"raise"`` or ``"shrink"`` (default: ``"skip"``)
        shrink_ratio (float, optional): :math:`r` of ``nonfinite="shrink"`` (default: 0.99)
        process_group (ProcessGroup or False, optional): ranks that must take the same
            decisions (module docstring); None: the default group if initialized (default: None)

    Options set only in a group's dict (besides those above):
        lr_scale (float): :math:`\kappa`; schedulers change ``lr``, the ratio stays (default: 1.0)
        algorithm (str): ``"sign"`` (the algorithm above) or ``"adamw"`` (default: ``"sign"``)
        eps (float): :math:`\epsilon` of ``"adamw"`` groups, > 0 (default: 1e-8)
        shrink_center (float): :math:`c` of ``nonfinite="shrink"`` (default: 0.0)

    Raises:
        ValueError: an option is unknown or out of range, a parameter is complex, ``params`` is
            empty, or ``accumulation_steps > 1`` with :math:`\beta_1 \neq \beta_2` in a sign group.
        TypeError: ``params`` is a single tensor.

    Example::

        >>> import torch
        >>> from logitkit.optim import Lion
        >>> model = torch.nn.Linear(2, 1)
        >>> _ = torch.nn.init.ones_(model.weight), torch.nn.init.zeros_(model.bias)
        >>> optimizer = Lion(model.parameters(), lr=0.1, weight_decay=0.5)
        >>> model(torch.tensor([[1.0, -2.0]])).sum().backward()
        >>> optimizer.step()
        >>> model.weight.detach(), model.bias.detach()
        (tensor([[0.8500, 1.0500]]), tensor([-0.1000]))

    Schedulers: the groups hold ``betas``, so ``OneCycleLR`` and ``CyclicLR`` with
    ``cycle_momentum=True`` cycle :math:`\beta_1`; with ``accumulation_steps > 1`` ``step()``
    refuses the unequal betas that gives (pass ``cycle_momentum=False``). Distributed training,
    ``GradScaler`` and ``torch.compile``: see the module docstring.

    References:
        Chen et al., `Symbolic Discovery of Optimization Algorithms`_, NeurIPS 2023.

    .. _Symbolic Discovery of Optimization Algorithms:
        https://arxiv.org/abs/2302.06675
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 lazy: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 momentum_dtype: torch.dtype | None = None, accumulation_steps: int = 1,
                 relative_lr: bool | str = False, nonfinite: str = "skip",
                 shrink_ratio: float = 0.99, process_group: Any = None) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "lazy": lazy,
                    "maximize": maximize, "foreach": foreach, "momentum_dtype": momentum_dtype,
                    "accumulation_steps": accumulation_steps, "relative_lr": relative_lr,
                    "nonfinite": nonfinite, "shrink_ratio": shrink_ratio}
        super().__init__(params, defaults, process_group)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return _pair(group["betas"])


class Tiger(_SignMomentum):
    r"""Implements Tiger (Tight-fisted Optimizer): Lion with one momentum coefficient
    (:math:`\beta_1 = \beta_2 = \beta`), with lazy rows, the released code's relative step sizes,
    gradient accumulation folded into the momentum and a non-finite gradient guard.

    Every parameter tensor :math:`\theta` is updated on its own; :math:`\theta_i` is its row
    :math:`i` (index along dim 0), :math:`\mathrm{RMS}(x) = \sqrt{\mathrm{mean}(x^2)}` (in
    float32 for half-precision weights), :math:`\mathrm{sign}(0) = 0`, and :math:`t` counts the
    calls of ``step()`` (the group's ``micro_step`` is :math:`t - 1`).

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                                 \\
            &\textbf{input}: \gamma \text{ (lr)}, \: \kappa \text{ (lr\_scale)},
                \: \beta \text{ (beta)}, \: \lambda \text{ (weight\_decay)},
                \: \theta_0 \text{ (params)}, \: f(\theta) \text{ (objective)},                  \\
            &\hspace{13mm} k \text{ (accumulation\_steps)}, \: \textit{relative\_lr},
                \: \textit{lazy}, \: \textit{maximize}                                           \\
            &\textbf{initialize}: m_0 \leftarrow 0 \text{ (momentum)},
                \: W \leftarrow \emptyset \text{ (rows touched in the window, } k > 1)    \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                                 \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                         \\
            &\hspace{5mm}\textbf{if} \: \textit{maximize}:                                       \\
            &\hspace{10mm}g_t \leftarrow -\nabla_{\theta} f_t (\theta_{t-1})                     \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}g_t \leftarrow \nabla_{\theta} f_t (\theta_{t-1})                      \\
            &\hspace{5mm}\textbf{if} \: g_t \text{ has a NaN or inf entry}: \:
                \text{see } \textit{nonfinite} \text{ below; } \theta, m
                \text{ take no step}                                                             \\
            &\hspace{5mm}\textbf{if} \: \textit{relative\_lr} = \text{"row"}
                \textbf{ and } \dim \theta \geq 2:                                               \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa \, \mathrm{RMS}(\theta_{t-1,i})
                \text{ for each row } i                                                          \\
            &\hspace{5mm}\textbf{else if} \: \textit{relative\_lr} = \text{True}
                \textbf{ and } \dim \theta \geq 2:                                               \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa \, \mathrm{RMS}(\theta_{t-1})             \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}s_i \leftarrow \gamma \kappa                                           \\
            &\hspace{5mm}\textbf{if} \: \textit{lazy} \textbf{ and } \dim \theta \geq 2:         \\
            &\hspace{10mm}R_t \leftarrow \{ i : g_{t,i} \text{ has a nonzero entry} \}          \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}R_t \leftarrow \text{all rows}                                         \\
            &\hspace{5mm}\theta_t \leftarrow \theta_{t-1}, \: m_t \leftarrow m_{t-1}
                \text{ (rows not written below keep their values)}                               \\
            &\hspace{5mm}\textbf{if} \: k = 1:                                                   \\
            &\hspace{10mm}\textbf{for} \: i \in R_t:                                             \\
            &\hspace{15mm}m_{t,i} \leftarrow \beta m_{t-1,i} + (1 - \beta) g_{t,i}               \\
            &\hspace{15mm}\theta_{t,i} \leftarrow \theta_{t-1,i} (1 - s_i \lambda)
                - s_i \, \mathrm{sign}(m_{t,i})                                                  \\
            &\hspace{5mm}\textbf{else}                                                           \\
            &\hspace{10mm}\textbf{if} \: t \equiv 1 \pmod{k}: \: W \leftarrow \emptyset          \\
            &\hspace{10mm}\textbf{for} \: i \in R_t:                                             \\
            &\hspace{15mm}\textbf{if} \: i \notin W: \: m_{t,i} \leftarrow \beta m_{t,i},
                \: W \leftarrow W \cup \{i\}                                                     \\
            &\hspace{15mm}m_{t,i} \leftarrow m_{t,i} + (1 - \beta) \, g_{t,i} / k                \\
            &\hspace{10mm}\textbf{if} \: t \equiv 0 \pmod{k}:                                    \\
            &\hspace{15mm}\textbf{for} \: i \in W:                                               \\
            &\hspace{20mm}\theta_{t,i} \leftarrow \theta_{t-1,i} (1 - s_i \lambda)
                - s_i \, \mathrm{sign}(m_{t,i})                                                  \\
            &\rule{110mm}{0.4pt}                                                          \\[-1.ex]
            &\bf{return} \: \theta_t                                                      \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                          \\[-1.ex]
       \end{aligned}

    The decay is decoupled and scaled by the step size: :math:`\theta (1 - s \lambda) - s u =
    \theta - s (u + \lambda \theta)`; for a constant sign :math:`u` it has the fixed point
    :math:`-u / \lambda`, the pile-up that ``SaturationMonitor`` watches. Parameters whose
    gradient is None are left alone; with :math:`k > 1`, one that has state takes
    :math:`g_t = 0` and stays in phase. After a window of :math:`k` calls the momentum is one
    Tiger step with the mean gradient of the window (no gradient buffer is kept); with ``lazy`` a
    row's :math:`m_i \leftarrow \beta m_i` waits for the row's first gradient in the window, and
    only rows with a gradient in the window move. Without ``lazy``, or when every row is touched,
    the update is the dense one. The momentum is stored in ``momentum_dtype``; the arithmetic is
    done in the gradient's dtype.

    Non-finite gradients (``nonfinite``) are found in every group before any parameter moves.
    ``"skip"``: such a parameter and its state are left as they are, with a ``RuntimeWarning`` at
    the 1st, 2nd, 4th, ... step with skips (counted in ``nonfinite_steps`` and
    ``nonfinite_updates``); ``"shrink"``: also :math:`\theta \leftarrow c + r (\theta - c)`
    (:math:`c` = ``shrink_center``, :math:`r` = ``shrink_ratio``), the released code's rule;
    ``"raise"``: ``FloatingPointError``, and nothing is updated.

    Groups with ``algorithm="adamw"`` (``make_optimizer(..., embeddings="adamw")``) take decoupled
    AdamW steps instead, with the group's ``betas`` (default (0.9, 0.999)) and ``eps``, on the rows
    :math:`R_t` and ignoring ``relative_lr``: :math:`\theta \leftarrow \theta (1 - \gamma \kappa
    \lambda)`, :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`, :math:`v \leftarrow \beta_2 v +
    (1 - \beta_2) g^2`, :math:`\theta \leftarrow \theta - \gamma \kappa / (1 - \beta_1^n) \, m /
    (\sqrt{v} / \sqrt{1 - \beta_2^n} + \epsilon)`, with :math:`n` the number of updates of
    :math:`\theta` so far (the arithmetic of ``torch.optim.AdamW(foreach=False)``); with
    :math:`k > 1`, :math:`g` is the mean gradient of the window, applied on its last call.

    The released Tiger is ``make_optimizer(model, relative_lr=True, nonfinite="shrink")``: matrices
    ``relative_lr=True``, embeddings ``"row"``, vectors ``lr_scale=0.5`` without decay, and
    ``shrink_center=1`` for norm weights (see ``param_groups`` and the README for differences).

    Args:
        params (iterable): parameters, or dicts defining parameter groups (options per group)
        lr (float, optional): learning rate :math:`\gamma` (default: 1e-3)
        beta (float, optional): momentum coefficient :math:`\beta`, in [0, 1) (default: 0.965)
        weight_decay (float, optional): decoupled weight decay :math:`\lambda` (default: 0.01)
        lazy (bool, optional): for ``dim >= 2``, move only rows with a gradient (default: False)
        maximize (bool, optional): maximize the objective instead of minimizing (default: False)
        foreach (bool, optional): multi-tensor ops for plain steps; None: on CUDA (default: None)
        momentum_dtype (torch.dtype, optional): dtype of m; None: the parameter's (default: None)
        accumulation_steps (int, optional): calls :math:`k` per update (default: 1)
        relative_lr (bool or str, optional): False, True or ``"row"``, as above (default: False)
        nonfinite (str, optional): ``"skip"``, ``"raise"`` or ``"shrink"`` (default: ``"skip"``)
        shrink_ratio (float, optional): :math:`r` of ``nonfinite="shrink"`` (default: 0.99)
        process_group (ProcessGroup or False, optional): ranks that must take the same
            decisions (module docstring); None: the default group if initialized (default: None)

    Options set only in a group's dict (besides those above):
        lr_scale (float): :math:`\kappa`; schedulers change ``lr``, the ratio stays (default: 1.0)
        algorithm (str): ``"sign"`` (the algorithm above) or ``"adamw"`` (default: ``"sign"``)
        betas (tuple[float, float]): Tiger reads ``betas[0]`` (default: ``(beta, beta)``)
        eps (float): :math:`\epsilon` of ``"adamw"`` groups, > 0 (default: 1e-8)
        shrink_center (float): :math:`c` of ``nonfinite="shrink"`` (default: 0.0)

    Raises:
        ValueError: an option is unknown or out of range, a parameter is complex, or ``params``
            is empty.
        TypeError: ``params`` is a single tensor.

    Example::

        >>> import torch
        >>> from logitkit.optim import Tiger
        >>> embed = torch.nn.Embedding(3, 2)
        >>> _ = torch.nn.init.ones_(embed.weight)
        >>> optimizer = Tiger(embed.parameters(), lr=0.1, weight_decay=0.01, lazy=True)
        >>> embed(torch.tensor([0])).sum().backward()
        >>> optimizer.step()
        >>> embed.weight.detach()
        tensor([[0.8990, 0.8990],
                [1.0000, 1.0000],
                [1.0000, 1.0000]])

    Schedulers: a group may be given ``{"beta": b}``; it is stored as ``betas = (b, b)``, so
    ``OneCycleLR`` and ``CyclicLR`` with ``cycle_momentum=True`` (their default) cycle
    :math:`\beta = ` ``betas[0]``, with a warning at the first step that sees it changed (pass
    ``cycle_momentum=False`` to keep :math:`\beta`). Distributed training, ``GradScaler`` and
    ``torch.compile``: see the module docstring.

    References:
        Su Jianlin, `Tiger: a tight-fisted optimizer`_, 2023; released code: `bojone/tiger`_.

    .. _Tiger\: a tight-fisted optimizer:
        https://kexue.fm/archives/9512
    .. _bojone/tiger:
        https://github.com/bojone/tiger
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, beta: float = 0.965,
                 weight_decay: float = 0.01, lazy: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, momentum_dtype: torch.dtype | None = None,
                 accumulation_steps: int = 1, relative_lr: bool | str = False,
                 nonfinite: str = "skip", shrink_ratio: float = 0.99,
                 process_group: Any = None) -> None:
        defaults = {"lr": lr, "betas": (beta, beta), "weight_decay": weight_decay, "lazy": lazy,
                    "maximize": maximize, "foreach": foreach, "momentum_dtype": momentum_dtype,
                    "accumulation_steps": accumulation_steps, "relative_lr": relative_lr,
                    "nonfinite": nonfinite, "shrink_ratio": shrink_ratio}
        super().__init__(params, defaults, process_group)

    def _notice_betas(self, index: int, group: dict[str, Any]) -> None:
        """Warn once per group when something set ``betas[0]`` alone: a scheduler with
        ``cycle_momentum=True`` (OneCycleLR's and CyclicLR's default) now drives Tiger's only
        momentum coefficient over a range meant for SGD/Adam."""
        first, second = _pair(group["betas"])
        if group["algorithm"] == "sign" and first != second and index not in self._cycled_warned:
            self._cycled_warned.add(index)
            warnings.warn(
                f"Tiger: group {index}'s beta is now betas[0] = {first:g}, no longer {second:g}: "
                "a scheduler with cycle_momentum=True (the default of OneCycleLR and CyclicLR) "
                "is cycling Tiger's only momentum coefficient. Pass cycle_momentum=False to keep "
                "it; set betas = (b, b) to change it on purpose.", RuntimeWarning, stacklevel=4)

    def _normalize(self, group: dict[str, Any]) -> None:
        if "beta" in group:
            beta = group.pop("beta")
            group["betas"] = (beta, beta)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        beta = _pair(group["betas"])[0]
        return beta, beta
