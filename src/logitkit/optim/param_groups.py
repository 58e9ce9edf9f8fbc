"""Parameter groups for sign optimizers: no decay for biases and norms, embeddings on their own.

``param_groups`` splits a model's trainable parameters into up to three groups:

* ``"decay"``: every parameter with ``dim >= 2`` that is not an embedding -> ``weight_decay``;
* ``"no_decay"``: biases, norm weights (LayerNorm, RMSNorm, GroupNorm, BatchNorm, ...) and every
  other 1-D (or 0-D) parameter -> weight decay 0;
* ``"embedding"``: ``nn.Embedding`` weights, plus the weight named by ``head`` (e.g. an untied LM
  head) -> ``weight_decay``, ``lazy=True`` unless ``lazy_embeddings=False``.

With ``relative_lr=True`` the groups are those of the released Tiger (github.com/bojone/tiger),
which matches Keras variable names: matrices step by ``lr * RMS(p)`` (``"decay"``), embedding
matrices by ``lr * RMS(row)`` (``"embedding"``), and biases (``bias``/``beta``) and norm weights
(``gamma``) by ``0.5 * lr`` without decay; norm weights get their own group ``"norm"`` because the
released rule shrinks them towards 1, not 0, after a non-finite gradient. Here vectors play the part
of the released rule's names: every 1-D parameter counts as a bias.

``make_optimizer`` builds Tiger or Lion on those groups; ``embeddings="adamw"`` runs the embedding
group with the ``"adamw"`` algorithm inside the same optimizer.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from logitkit.optim.sign_momentum import Lion, Tiger

__all__ = ["make_optimizer", "param_groups"]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm,
          nn.modules.batchnorm._NormBase)
EMBEDDING_MODES = ("lazy", "dense", "adamw")
RELEASED_VECTOR_LR_SCALE = 0.5


def param_groups(model: nn.Module, *, weight_decay: float = 0.01, lazy_embeddings: bool = True,
                 head: str | None = None, relative_lr: bool = False) -> list[dict[str, Any]]:
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
    norm_modules = [m for m in model.modules() if isinstance(m, _NORMS)]
    norms = {id(p) for m in norm_modules for p in m.parameters(recurse=False)}
    norm_weights = {id(m.weight) for m in norm_modules if getattr(m, "weight", None) is not None}
    groups: dict[str, list[Tensor]] = {"decay": [], "no_decay": [], "norm": [], "embedding": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in embeddings:
            groups["embedding"].append(p)
        elif relative_lr and id(p) in norm_weights:
            groups["norm"].append(p)
        elif id(p) in norms or p.dim() < 2:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    options: dict[str, dict[str, Any]] = {
        "decay": {"weight_decay": weight_decay},
        "no_decay": {"weight_decay": 0.0},
        "norm": {"weight_decay": 0.0},
        "embedding": {"weight_decay": weight_decay, "lazy": lazy_embeddings},
    }
    if relative_lr:
        options["decay"]["relative_lr"] = True
        options["embedding"]["relative_lr"] = "row"
        options["no_decay"].update(relative_lr=False, lr_scale=RELEASED_VECTOR_LR_SCALE)
        options["norm"].update(relative_lr=False, lr_scale=RELEASED_VECTOR_LR_SCALE,
                               shrink_center=1.0)
    return [{"name": name, "params": params, **options[name]}
            for name, params in groups.items() if params]


def make_optimizer(model: nn.Module, *, optimizer: str = "tiger", lr: float = 1e-3,
                   weight_decay: float = 0.01, embeddings: str = "lazy",
                   embedding_lr: float | None = None, head: str | None = None,
                   relative_lr: bool = False, **options: Any) -> Tiger | Lion:
    """Tiger or Lion (``optimizer``) on ``param_groups(model)``.

    ``embeddings``: ``"lazy"`` (lazy rows), ``"dense"`` (plain sign steps) or ``"adamw"`` (the
    embedding group uses the ``"adamw"`` algorithm: decoupled AdamW with ``weight_decay`` and
    betas (0.9, 0.999), dense updates). ``embedding_lr`` (default ``lr``) is the embedding group's
    step size. ``relative_lr=True``: the released Tiger's step sizes (``param_groups``); add
    ``nonfinite="shrink"`` for its NaN rule. ``options`` go to the Tiger/Lion constructor (e.g.
    ``beta``, ``betas``, ``foreach``, ``accumulation_steps``).

    Example::

        optimizer = make_optimizer(model, lr=1e-3, embeddings="adamw", embedding_lr=3e-3)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=100)
    """
    classes = {"tiger": Tiger, "lion": Lion}
    if optimizer not in classes:
        raise ValueError(f"optimizer must be one of {sorted(classes)}, got {optimizer!r}")
    if embeddings not in EMBEDDING_MODES:
        raise ValueError(f"embeddings must be one of {EMBEDDING_MODES}, got {embeddings!r}")
    groups = param_groups(model, weight_decay=weight_decay, lazy_embeddings=embeddings == "lazy",
                          head=head, relative_lr=relative_lr)
    for group in groups:
        if group["name"] != "embedding":
            continue
        if embedding_lr is not None:
            group["lr"] = embedding_lr
        if embeddings == "adamw":
            group.update(algorithm="adamw", relative_lr=False)
    return classes[optimizer](groups, lr=lr, weight_decay=weight_decay, **options)
