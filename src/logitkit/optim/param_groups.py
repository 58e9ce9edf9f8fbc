"""Parameter groups for sign optimizers: no decay for biases and norms, embeddings on their own.

``param_groups`` splits a model's trainable parameters into up to three groups:

* ``"decay"``: every parameter with ``dim >= 2`` that is not an embedding -> ``weight_decay``;
* ``"no_decay"``: biases, norm weights (LayerNorm, RMSNorm, GroupNorm, BatchNorm, ...) and every
  other 1-D (or 0-D) parameter -> weight decay 0;
* ``"embedding"``: ``nn.Embedding`` weights, plus the weight named by ``head`` (e.g. an untied LM
  head) -> ``weight_decay``, ``lazy=True`` unless ``lazy_embeddings=False``.

``make_optimizer`` builds Tiger/Lion on those groups, or, with ``embeddings="adamw"``, Tiger/Lion on
the first two and ``torch.optim.AdamW`` on the embeddings, stepped as one by ``MixedOptimizer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from logitkit.optim.sign_momentum import Lion, Tiger

__all__ = ["MixedOptimizer", "make_optimizer", "param_groups"]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm,
          nn.modules.batchnorm._NormBase)
EMBEDDING_MODES = ("lazy", "dense", "adamw")


def param_groups(model: nn.Module, *, weight_decay: float = 0.01, lazy_embeddings: bool = True,
                 head: str | None = None) -> list[dict[str, Any]]:
    """Groups ``[{"name", "params", "weight_decay", ...}]`` for Tiger/Lion (module docstring).

    ``head`` is the full name of a weight to route with the embeddings (e.g. ``"head.weight"``);
    a weight tied to an embedding is listed once, in the embedding group. Empty groups are dropped;
    frozen parameters (``requires_grad=False``) are left out.
    """
    named = dict(model.named_parameters(remove_duplicate=False))
    if head is not None and head not in named:
        raise ValueError(f"head {head!r} is not a parameter of the model; "
                         f"parameters: {sorted(named)[:20]}")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if head is not None:
        embeddings.add(id(named[head]))
    norms = {id(p) for m in model.modules() if isinstance(m, _NORMS)
             for p in m.parameters(recurse=False)}
    groups: dict[str, list[Tensor]] = {"decay": [], "no_decay": [], "embedding": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in embeddings:
            groups["embedding"].append(p)
        elif id(p) in norms or p.dim() < 2:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    options = {"decay": {"weight_decay": weight_decay}, "no_decay": {"weight_decay": 0.0},
               "embedding": {"weight_decay": weight_decay, "lazy": lazy_embeddings}}
    return [{"name": name, "params": params, **options[name]}
            for name, params in groups.items() if params]


class MixedOptimizer:
    """Several optimizers stepped as one: ``step``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` act on all of them; ``param_groups`` lists every group (for LR changes)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("MixedOptimizer needs at least one optimizer")
        seen: set[int] = set()
        for optimizer in optimizers:
            ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if ids & seen:
                raise ValueError("a parameter belongs to more than one of the optimizers")
            seen |= ids
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for optimizer in self.optimizers for g in optimizer.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("optimizers")
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(f"expected a state_dict with {len(self.optimizers)} optimizer states "
                             "under 'optimizers'")
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def make_optimizer(model: nn.Module, *, optimizer: str = "tiger", lr: float = 1e-3,
                   weight_decay: float = 0.01, embeddings: str = "lazy",
                   embedding_lr: float | None = None, head: str | None = None,
                   **options: Any) -> torch.optim.Optimizer | MixedOptimizer:
    """Tiger or Lion (``optimizer``) on ``param_groups(model)``.

    ``embeddings``: ``"lazy"`` (lazy rows), ``"dense"`` (plain sign steps) or ``"adamw"``
    (``torch.optim.AdamW`` with ``weight_decay`` on the embedding group; returns a
    ``MixedOptimizer``). ``embedding_lr`` (default ``lr``) is the embedding group's step size.
    ``options`` go to the Tiger/Lion constructor (e.g. ``beta``, ``betas``, ``foreach``).
    """
    classes = {"tiger": Tiger, "lion": Lion}
    if optimizer not in classes:
        raise ValueError(f"optimizer must be one of {sorted(classes)}, got {optimizer!r}")
    if embeddings not in EMBEDDING_MODES:
        raise ValueError(f"embeddings must be one of {EMBEDDING_MODES}, got {embeddings!r}")
    groups = param_groups(model, weight_decay=weight_decay, lazy_embeddings=embeddings == "lazy",
                          head=head)
    for group in groups:
        if group["name"] == "embedding" and embedding_lr is not None:
            group["lr"] = embedding_lr
    sign_groups = [g for g in groups if embeddings != "adamw" or g["name"] != "embedding"]
    sign = classes[optimizer](sign_groups, lr=lr, weight_decay=weight_decay, **options)
    if embeddings != "adamw":
        return sign
    adam_groups = [{k: v for k, v in g.items() if k != "lazy"}
                   for g in groups if g["name"] == "embedding"]
    if not adam_groups:
        return sign
    adam = torch.optim.AdamW(adam_groups, lr=lr, weight_decay=weight_decay)
    return MixedOptimizer([sign, adam])
