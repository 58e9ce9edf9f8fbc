"""Parameter groups for sign optimizers: no decay for biases and norms, embeddings on their own.

``param_groups`` splits a model's trainable parameters into up to three groups:

* ``"decay"``: every parameter with ``dim >= 2`` that is not an embedding -> ``weight_decay``;
* ``"no_decay"``: biases, norm weights (LayerNorm, RMSNorm, GroupNorm, BatchNorm, Hugging Face's
  ``LlamaRMSNorm``, ...: norm layers, below) and every other 1-D (or 0-D) parameter -> decay 0;
* ``"embedding"``: ``nn.Embedding`` weights, plus the weight named by ``head`` (e.g. an untied LM
  head) -> ``weight_decay``, ``lazy=True`` unless ``lazy_embeddings=False``.

With ``relative_lr=True`` the groups are those of the released Tiger (github.com/bojone/tiger),
which matches Keras variable names: matrices step by ``lr * RMS(p)`` (``"decay"``), embedding
matrices by ``lr * RMS(row)`` (``"embedding"``), and biases (``bias``/``beta``) and norm weights
(``gamma``) by ``0.5 * lr`` without decay; norm weights get their own group ``"norm"`` because the
released rule shrinks them towards their neutral value (1), not 0, after a non-finite gradient.
Here vectors play the part of the released rule's names: every 1-D parameter counts as a bias.

Norm layers are found by class and by name, and their neutral value by behaviour:

* a module is a norm layer if it is a torch norm (``nn.LayerNorm``, ``nn.RMSNorm``,
  ``nn.GroupNorm``, ``nn.LocalResponseNorm``, batch and instance norms, or a subclass), or if a
  class in its MRO has ``"norm"`` in its name (any case: ``LlamaRMSNorm``, ``T5LayerNorm``,
  ``GemmaRMSNorm``, ``NoNorm``, ...) and it has its own parameter ``weight`` (else ``gamma``, else
  ``scale``), its *scale*. A named module's scale must be a vector, or, with more dimensions
  (per-head norms such as Cohere's), the probe below must succeed;
* the neutral value (``shrink_center``) is 1 for ``x * w`` norms and 0 for zero-centred
  ``x * (1 + w)`` norms (Gemma, Gemma 2/3, Qwen3-Next, Nemotron's ``LayerNorm1P``, ...). A norm
  that runs a ``torch.nn`` class's own ``forward`` has centre 1. Any other norm is probed: its
  class ``forward`` runs (no hooks) on random inputs with the scale replaced by a constant, through
  ``torch.func.functional_call`` on copies of its tensors, so the module itself is never written
  and the global RNG is not used. If a scale of 0 makes the output independent of the input, the
  centre is 1; if a scale of -1 does, it is 0. The inputs are ``(2, 4, *scale.shape)`` and, for a
  vector scale of length n, ``(2, n, 4)`` and ``(2, n, 2, 2)`` (channels first), on the scale's
  device and dtype (meta tensors: on the CPU in float32, ones for the module's other tensors);
* a norm whose probe cannot run (other forward signatures, outputs other than one tensor shaped
  like the input, devices, DTensors, ...) or finds neither value gets centre 1, the released
  Tiger's.

The norm scales form the group ``"norm"``, with the centre of their kind; a model with both kinds
(e.g. a SigLIP vision tower, ``nn.LayerNorm``, and a Gemma decoder) gets ``"norm"`` with centre 1
and ``"norm_zero_centred"`` with centre 0.

``make_optimizer`` builds Tiger or Lion on those groups; ``embeddings="adamw"`` runs the embedding
group with the ``"adamw"`` algorithm inside the same optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from logitkit.optim.sign_momentum import Lion, Tiger

__all__ = ["make_optimizer", "param_groups"]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm,
          nn.modules.batchnorm._NormBase)
SCALE_NAMES = ("weight", "gamma", "scale")
# (constant scale, centre): the scale that makes a norm's output independent of its input
# is 0 for ``x * w`` (centre 1) and -1 for ``x * (1 + w)`` (centre 0).
SILENCING_SCALES = ((0.0, 1.0), (-1.0, 0.0))
EMBEDDING_MODES = ("lazy", "dense", "adamw")
RELEASED_VECTOR_LR_SCALE = 0.5


class _ClassForward(nn.Module):
    """Calls ``norm``'s class ``forward`` directly: its hooks and per-instance wrappers (e.g.
    offloading hooks) do not run."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Any:
        return type(self.norm).forward(self.norm, x)


def _run(probe: _ClassForward, tensors: dict[str, Tensor], x: Tensor) -> Tensor | None:
    """The norm's output on ``x`` with ``tensors`` in place of its own; None if it fails or is
    not a tensor shaped like ``x``."""
    try:
        y = functional_call(probe, tensors, (x,))
    except Exception:  # odd signatures, another layout, devices, DTensors: no answer
        return None
    return y if isinstance(y, Tensor) and y.shape == x.shape else None


def _probed_centre(module: nn.Module, scale_name: str) -> float | None:
    """The centre of a norm layer by behaviour (module docstring); None if no probe runs or
    neither silencing scale silences it."""
    own = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    meta = any(t.is_meta for t in own.values())
    device = torch.device("cpu") if meta else own[scale_name].device
    dtype = torch.float32 if meta else own[scale_name].dtype
    tensors = {f"norm.{name}": torch.ones(t.shape, device=device, dtype=torch.float32
                                          if t.is_floating_point() else t.dtype)
               if meta else t.detach().clone() for name, t in own.items()}
    key = f"norm.{scale_name}"
    shape = tuple(own[scale_name].shape)
    layouts = [(2, 4, *shape)]  # 8 rows: the (batch, sequence, hidden) of a transformer
    if len(shape) == 1:
        layouts += [(2, shape[0], 4), (2, shape[0], 2, 2)]  # channels first
    probe = _ClassForward(module)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layout in layouts:
            inputs = [torch.randn(layout, generator=generator).to(device, dtype) for _ in range(2)]
            for value, centre in SILENCING_SCALES:
                tensors[key] = torch.full_like(tensors[key], value)
                first, second = (_run(probe, tensors, x) for x in inputs)
                if first is None or second is None:
                    break  # this layout does not fit: try the next
                if torch.allclose(first, second, rtol=1e-5, atol=1e-6):
                    return centre
            else:
                return None  # it runs, but neither scale silences it
    return None


def _norm_scale(module: nn.Module) -> tuple[Tensor, float] | None:
    """A norm layer's scale and centre (module docstring); None if ``module`` is not a norm layer
    with a scale."""
    own = dict(module.named_parameters(recurse=False))
    torch_norm = isinstance(module, _NORMS)
    if torch_norm:
        name = "weight"
    elif any("norm" in cls.__name__.lower() for cls in type(module).__mro__):
        name = next((n for n in SCALE_NAMES if n in own), "")
    else:
        return None
    if name not in own:
        return None
    scale = own[name]
    if torch_norm and type(module).forward.__module__.startswith("torch.nn."):
        return scale, 1.0
    centre = _probed_centre(module, name)
    if centre is None and (torch_norm or scale.dim() == 1):
        centre = 1.0
    return None if centre is None else (scale, centre)


def param_groups(model: nn.Module, *, weight_decay: float = 0.01, lazy_embeddings: bool = True,
                 head: str | None = None, relative_lr: bool = False) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into Tiger/Lion parameter groups.

    The groups, in this order (module docstring), each ``{"name", "params", ...options}``:

    * ``"decay"``: other parameters with ``dim >= 2``: ``weight_decay``
      (``relative_lr=True`` with ``relative_lr``);
    * ``"no_decay"``: biases, norm-layer parameters and every other vector or scalar: decay 0
      (``relative_lr=False, lr_scale=0.5`` with ``relative_lr``);
    * ``"norm"`` (only with ``relative_lr``): the scales of norm layers (module docstring):
      decay 0, ``lr_scale=0.5``, ``shrink_center=1.0``, the neutral value of ``x * w`` norms, or
      ``shrink_center=0.0`` if every norm of the model is zero-centred (``x * (1 + w)``, Gemma);
    * ``"norm_zero_centred"`` (only with ``relative_lr``, and only beside a ``"norm"`` group
      with centre 1, e.g. a SigLIP vision tower with a Gemma decoder): the zero-centred scales:
      as ``"norm"``, with ``shrink_center=0.0``;
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

    A zero-centred norm, as in Gemma: its scale shrinks towards 0, the standard norm's towards 1::

        >>> class ZeroCentredRMSNorm(torch.nn.RMSNorm):
        ...     def forward(self, x):
        ...         return torch.nn.functional.rms_norm(x, self.normalized_shape,
        ...                                             1 + self.weight, self.eps)
        >>> mixed = torch.nn.Sequential(torch.nn.LayerNorm(4), ZeroCentredRMSNorm(4))
        >>> [(group["name"], group.get("shrink_center"))
        ...  for group in param_groups(mixed, relative_lr=True)]
        [('no_decay', None), ('norm', 1.0), ('norm_zero_centred', 0.0)]
        >>> [(group["name"], group.get("shrink_center"))
        ...  for group in param_groups(mixed[1:], relative_lr=True)]
        [('norm', 0.0)]
    """
    named = dict(model.named_parameters(remove_duplicate=False))
    if head is not None and head not in named:
        raise ValueError(f"head {head!r} is not a parameter of the model; "
                         f"parameters: {sorted(named)[:20]}")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if head is not None:
        embeddings.add(id(named[head]))
    centres: dict[int, float] = {}  # id(norm scale) -> shrink centre
    norms: set[int] = set()  # parameters of norm layers: no decay
    for module in model.modules():
        if isinstance(module, _NORMS):
            norms.update(id(p) for p in module.parameters(recurse=False))
        found = _norm_scale(module)
        if found is not None:
            centres[id(found[0])] = found[1]
            norms.add(id(found[0]))
    groups: dict[str, list[Tensor]] = {"decay": [], "no_decay": [], "norm": [],
                                       "norm_zero_centred": [], "embedding": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in embeddings:
            groups["embedding"].append(p)
        elif relative_lr and id(p) in centres:
            groups["norm" if centres[id(p)] == 1.0 else "norm_zero_centred"].append(p)
        elif id(p) in norms or p.dim() < 2:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    options: dict[str, dict[str, Any]] = {
        "decay": {"weight_decay": weight_decay},
        "no_decay": {"weight_decay": 0.0},
        "norm": {"weight_decay": 0.0},
        "norm_zero_centred": {"weight_decay": 0.0},
        "embedding": {"weight_decay": weight_decay, "lazy": lazy_embeddings},
    }
    if relative_lr:
        options["decay"]["relative_lr"] = True
        options["embedding"]["relative_lr"] = "row"
        options["no_decay"].update(relative_lr=False, lr_scale=RELEASED_VECTOR_LR_SCALE)
        for name, centre in (("norm", 1.0), ("norm_zero_centred", 0.0)):
            options[name].update(relative_lr=False, lr_scale=RELEASED_VECTOR_LR_SCALE,
                                 shrink_center=centre)
        if not groups["norm"]:  # every norm is zero-centred: they are the "norm" group
            groups["norm"], groups["norm_zero_centred"] = groups["norm_zero_centred"], []
            options["norm"]["shrink_center"] = 0.0
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
