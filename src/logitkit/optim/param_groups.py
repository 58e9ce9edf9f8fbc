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
    """Split a model's trainable parameters into Tiger/Lion parameter groups.

    The groups, in this order (module docstring), each ``{"name", "params", ...options}``:

    * ``"decay"``: other parameters with ``dim >= 2``: ``weight_decay``
      (``relative_lr=True`` with ``relative_lr``);
    * ``"no_decay"``: biases, norm-layer parameters and every other vector or scalar: decay 0
      (``relative_lr=False, lr_scale=0.5`` with ``relative_lr``);
    * ``"norm"`` (only with ``relative_lr``): norm-layer weights: decay 0, ``lr_scale=0.5``,
      ``shrink_center=1.0``;
    * ``"embedding"``: ``nn.Embedding`` weights and ``head``: ``weight_decay``,
      ``lazy=lazy_embeddings`` (``relative_lr="row"`` with ``relative_lr``).

    A weight tied to an embedding is listed once, in the embedding group; empty groups are
    dropped and frozen parameters (``requires_grad=False``) are left out.

    Args:
        model (nn.Module): the model (required)
        weight_decay (float, optional): decay of the "decay" and "embedding" groups (default: 0.01)
        lazy_embeddings (bool, optional): ``lazy`` of the embedding group (default: True)
        head (str, optional): full name of a weight to group with the embeddings (default: None)
        relative_lr (bool, optional): the released Tiger's groups, as above (default: False)

    Returns:
        list[dict]: the non-empty groups, for ``Tiger(groups, ...)`` or ``Lion(groups, ...)``.

    Raises:
        ValueError: ``head`` is not the name of a parameter of ``model``.

    Reference: Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
    (decay on matrices only); seed 001 (https://kexue.fm/archives/9736) for the embedding group.

    Example::

        >>> import torch
        >>> from logitkit.optim import param_groups
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4),
        ...                             torch.nn.Linear(4, 10))
        >>> [(group["name"], len(group["params"])) for group in param_groups(model)]
        [('decay', 1), ('no_decay', 3), ('embedding', 1)]
        >>> released = param_groups(model, relative_lr=True)
        >>> [(group["name"], len(group["params"])) for group in released]
        [('decay', 1), ('no_decay', 2), ('norm', 1), ('embedding', 1)]
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
    """Build Tiger or Lion on ``param_groups(model)``.

    ``embeddings`` sets the embedding group: ``"lazy"`` (lazy rows), ``"dense"`` (plain sign
    steps) or ``"adamw"`` (the ``"adamw"`` algorithm: decoupled AdamW with ``weight_decay``, betas
    (0.9, 0.999), dense updates and an absolute step size). With ``relative_lr=True`` the groups
    and step sizes are the released Tiger's; add ``nonfinite="shrink"`` for its NaN rule.

    Args:
        model (nn.Module): the model (required)
        optimizer (str, optional): ``"tiger"`` or ``"lion"`` (default: ``"tiger"``)
        lr (float, optional): learning rate of every group but the embeddings' (default: 1e-3)
        weight_decay (float, optional): decay of the "decay" and "embedding" groups (default: 0.01)
        embeddings (str, optional): ``"lazy"``, ``"dense"`` or ``"adamw"`` (default: ``"lazy"``)
        embedding_lr (float, optional): the embedding group's lr; None: ``lr`` (default: None)
        head (str, optional): full name of a weight to group with the embeddings (default: None)
        relative_lr (bool, optional): the released Tiger's groups and steps (default: False)
        **options: passed to the Tiger/Lion constructor, e.g. ``beta``, ``betas``, ``nonfinite``

    Returns:
        Tiger or Lion: the optimizer, one group per non-empty group of ``param_groups``.

    Raises:
        ValueError: ``optimizer`` or ``embeddings`` is unknown, ``head`` is not a parameter name,
            or Tiger/Lion rejects an option.
        TypeError: ``options`` holds a keyword that Tiger/Lion does not take.

    Reference: seed 001 (https://kexue.fm/archives/9736) for the embedding remedies; Loshchilov
    and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, for no decay on norms and
    biases.

    Example::

        >>> import torch
        >>> from logitkit.optim import make_optimizer
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
        >>> optimizer = make_optimizer(model, lr=1e-3, embeddings="adamw", embedding_lr=3e-3)
        >>> [(group["name"], group["algorithm"], group["lr"]) for group in optimizer.param_groups]
        [('decay', 'sign', 0.001), ('no_decay', 'sign', 0.001), ('embedding', 'adamw', 0.003)]
        >>> model(torch.tensor([1, 2])).sum().backward()
        >>> optimizer.step()
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
