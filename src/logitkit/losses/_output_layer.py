"""An output layer as one linear map for the fused losses: plain, or with PEFT adapters.

``head_operands(head, hidden)`` returns ``(x, weight, bias)`` with ``head(hidden) == x @
weight.T + bias`` exactly (up to rounding), so a fused loss on ``(x, weight, bias)`` is the loss
of the layer's own logits, gradients to every trainable part included; ``linear_parts(head)``
checks a layer (and finds its linear map and adapters) without computing anything. Supported
layers:

* ``nn.Linear``: ``(hidden, W, b)``;
* PEFT ``ModulesToSaveWrapper`` (``modules_to_save=["lm_head"]``, common when tokens are added):
  the active copy, or the original layer when adapters are disabled;
* PEFT LoRA ``lora.Linear`` on an ``nn.Linear`` (``target_modules=[..., "lm_head"]``), whose
  logits are ``W h + b + sum_a s_a B_a A_a drop_a(h)`` over the active adapters ``a`` (scale
  ``s_a = lora_alpha / r``). They are one linear map of a wider input::

      x = [h, s_1 drop_1(h) A_1^T, ...]        (d + sum_a r_a columns)
      weight = [W, B_1, ...]                  (V x (d + sum_a r_a))

  so dropout stays exact (the same mask as the layer's own forward would draw), and the
  gradients reach ``A_a`` and ``B_a`` through autograd. The cost is one ``V x (d + r)`` copy of
  the head and its gradient (a frozen ``W`` then gets a gradient block that is thrown away).
  A merged adapter is already inside ``W``. LoRA variants (DoRA, ...) are refused.

Reference: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
arXiv 2106.09685; PEFT (huggingface/peft) for the layer classes.

Example::

    x, weight, bias = head_operands(model.lm_head, hidden)   # then linear_cross_entropy(x, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _is_plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _peft_classes() -> tuple[type, type] | None:
    """PEFT's ``(lora.Linear, ModulesToSaveWrapper)``, or None if PEFT is not importable."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:
        return None
    return LoraLinear, ModulesToSaveWrapper


def _refused(head: nn.Module, why: str) -> ValueError:
    return ValueError(f"the output layer is a {type(head).__module__}.{type(head).__name__}: "
                      f"{why}; the fused loss supports nn.Linear, PEFT LoRA on an nn.Linear and "
                      "PEFT modules_to_save (or use the model's logits with "
                      "make_compute_loss_func(loss))")


@dataclass(frozen=True)
class LoraAdapter:
    """One active LoRA adapter of an output layer: ``s * B(A(drop(h)))``."""

    lora_a: nn.Linear
    lora_b: nn.Linear
    dropout: nn.Module
    scale: float


def linear_parts(head: nn.Module) -> tuple[nn.Linear, list[LoraAdapter]]:
    """The plain ``nn.Linear`` an output layer applies and its active LoRA adapters (none for
    ``nn.Linear`` or ``modules_to_save``); checks the layer, computes nothing.

    Raises:
        ValueError: a layer the fused loss cannot reproduce exactly.
    """
    if _is_plain_linear(head):
        return head, []
    peft = _peft_classes() if type(head).__module__.startswith("peft.") else None
    if peft is None:
        raise _refused(head, "not a plain nn.Linear (quantised or a custom layer)")
    lora_linear, modules_to_save = peft
    if isinstance(head, modules_to_save):
        active = head.active_adapters
        if head.disable_adapters or not active or active[0] not in head.modules_to_save:
            return linear_parts(head.original_module)
        return linear_parts(head.modules_to_save[active[0]])
    if not isinstance(head, lora_linear):
        raise _refused(head, "not a PEFT layer the fused loss knows")
    base = head.base_layer
    if not _is_plain_linear(base):
        raise _refused(head, f"its LoRA adapts a {type(base).__name__}, not an nn.Linear")
    if head.disable_adapters and head.merged:
        head.unmerge()  # as the layer's own forward does
    names = [] if head.disable_adapters or head.merged else \
        [name for name in head.active_adapters if name in head.lora_A]
    variants = [name for name in names if name in head.lora_variant]
    if variants:
        raise _refused(head, f"adapter(s) {variants} use a LoRA variant (e.g. DoRA), which is "
                             "not one linear map")
    adapters = []
    for name in names:
        lora_a, lora_b = head.lora_A[name], head.lora_B[name]
        if not (_is_plain_linear(lora_a) and _is_plain_linear(lora_b)):
            raise _refused(head, f"adapter {name!r} is not a pair of nn.Linear layers")
        adapters.append(LoraAdapter(lora_a, lora_b, head.lora_dropout[name], head.scaling[name]))
    return base, adapters


def head_operands(head: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x, weight, bias)`` with ``head(hidden) = x @ weight.T + bias`` (see the module doc).

    Args:
        head: the model's output layer; required.
        hidden: its input ``(..., d)``; required.

    Returns:
        ``x`` ``(..., d')``, ``weight`` ``(V, d')`` and ``bias`` ``(V,)`` or None, one dtype.

    Raises:
        ValueError: a layer the fused loss cannot reproduce exactly (``linear_parts``).
    """
    base, adapters = linear_parts(head)
    if not adapters:
        return hidden, base.weight, base.bias
    xs, weights, bias = [hidden], [base.weight], base.bias
    for adapter in adapters:
        dropped = adapter.dropout(hidden.to(adapter.lora_a.weight.dtype))
        xs.append(adapter.lora_a(dropped) * adapter.scale)
        weights.append(adapter.lora_b.weight)
        extra = adapter.lora_b.bias  # lora_bias=True: B's bias, scaled, adds to the bias
        if extra is not None:
            bias = extra * adapter.scale if bias is None else bias + extra * adapter.scale
    dtype = base.weight.dtype
    for tensor in weights[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    x = torch.cat([part.to(dtype) for part in xs], dim=-1)
    weight = torch.cat([part.to(dtype) for part in weights], dim=1)
    return x, weight, None if bias is None else bias.to(dtype)
