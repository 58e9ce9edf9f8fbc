"""Fused losses inside a Hugging Face causal LM's own forward (no ``transformers`` import here).

``patch_causal_lm(model, loss)`` makes ``model(**batch, labels=labels).loss`` the fused loss
(``loss.linear(hidden[:, :-1], lm_head.weight, labels[:, 1:], bias=lm_head.bias)``, CE by
default) computed *inside* ``model.forward``. So every hook that wraps the forward runs as for the
unpatched model: DDP's gradient synchronisation, FSDP2's un-sharding of the root's parameters (the
embedding and the head), accelerate's autocast wrapper. The model's own forward still runs; it is
asked for the logits of no position (``logits_to_keep`` = an empty index tensor), and the final
hidden states are read from the submodule that feeds the output layer, so in training the
(batch x length x V) logits never exist.

The fused loss equals the model's loss only if its logits are exactly ``lm_head(h)`` with ``h``
the output of one submodule of the base model (its own output, or e.g. OPT's ``model.decoder``)
and its loss is the cross-entropy of those logits, plus ``coef * aux_loss`` for a mixture of
experts that returns a router ``aux_loss`` (``router_aux_loss_coef``, or JetMoe's
``aux_loss_coef``; the patched loss adds the same term). This is checked, once per model, by
running it on four tokens with the output layer's result replaced by known values
(``_check_logits_are_the_head``): the model must feed those hidden states unchanged to its
``nn.Linear`` output layer, call it once, return that layer's output unchanged, and report
exactly that loss; any other extra term (a z-loss, say) is refused, naming the model. Any
scaling, soft-capping, clamping or multiplier before or after the head (Granite
``logits_scaling``, Gemma-2 ``final_logit_softcapping``, Cohere ``logit_scale``, FalconH1
``lm_head_multiplier``, MiniCPM3 hidden scaling, ...) fails the check with a ``ValueError``,
whatever the config field is called.

PEFT: a ``PeftModel`` is patched through its inner model (``get_base_model()``, whose forward
the PEFT model calls), and an output layer with a LoRA adapter or ``modules_to_save`` is fused as
the one linear map it is (``_output_layer.head_operands``: ``W h + s B A drop(h)`` as ``[W, B]``
applied to ``[h, s A drop(h)]``); LoRA variants such as DoRA are refused.

Reduction is Hugging Face's: the mean over counted tokens (labels != ignore_index), or, when
``num_items_in_batch`` is passed (Trainer does so under gradient accumulation and across devices),
their sum divided by it.

Example::

    model = patch_causal_lm(LlamaForCausalLM(config), EMOLoss(cost, mle_weight="adaptive"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()  # synchronised
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch
from torch import Tensor, nn

from logitkit.losses._base import OutputLoss, reduce_by_items, shifted
from logitkit.losses._output_layer import head_operands, linear_parts
from logitkit.losses.fused import linear_cross_entropy

IGNORE_INDEX = -100
_PROBE_LENGTH = 4
_STATE = "_logitkit_fused_loss"
_OWNER = "_logitkit_patched_model"  # on the base model: the patched model that owns it
_MISSING = object()


# ----------------------------------------------------------------------------------------------
# Which models can be fused.


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP/DataParallel (``.module``), torch.compile or a PEFT
    ``PeftModel`` (``get_base_model()``: its forward calls the inner model's forward)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None and hasattr(model, "peft_config") and callable(
                getattr(model, "get_base_model", None)):
            inner = model.get_base_model()
        if not isinstance(inner, nn.Module) or inner is model:
            return model
        model = inner


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(base model, output layer)``, or ValueError if the model is not a fusable causal LM
    (the output layer must be one linear map, see ``head_operands``)."""
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(base, nn.Module) or base is model or head is None:
        raise ValueError("model must be a Hugging Face causal LM with a base model and an output "
                         f"layer (model.base_model, model.get_output_embeddings()), got "
                         f"{type(model).__name__}")
    try:
        linear_parts(head)
    except ValueError as error:
        raise ValueError(f"{type(model).__name__}: {error}") from None
    return base, head


def _hidden_of(output: Any) -> Tensor | None:
    """The hidden states a module returned: a tensor, ``last_hidden_state``, or a tuple's first."""
    if isinstance(output, Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, tuple) and output:
        hidden = output[0]
    return hidden if isinstance(hidden, Tensor) else None


def _aux_loss_coefficient(model: nn.Module) -> float | None:
    """The weight a MoE model gives its router ``aux_loss`` (None if it names none).

    Transformers' MoE causal LMs add ``router_aux_loss_coef * aux_loss`` (JetMoe:
    ``aux_loss_coef``), read from the model, its config or its text config.
    """
    config = getattr(model, "config", None)
    owners = [model, config]
    with suppress(AttributeError, ValueError):  # no config, or several text configs
        owners.append(config.get_text_config())
    for owner in owners:
        for name in ("router_aux_loss_coef", "aux_loss_coef"):
            value = getattr(owner, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return None


@dataclass
class _Fusable:
    """What the check found: where the output layer's input comes from, and the aux weight."""

    hidden_module: str  # name, inside the base model, of the module whose output feeds the head
    aux_reproducible: bool  # whether _aux_loss_coefficient(model) * aux_loss is what it adds


_VERIFIED: weakref.WeakKeyDictionary[nn.Module, _Fusable] = weakref.WeakKeyDictionary()


def _run_probe(model: nn.Module, base: nn.Module, head: nn.Module,
               **extra: Any) -> tuple[Any, dict[str, Any], Tensor]:
    """One no-grad eval forward on ``_PROBE_LENGTH`` tokens with planted logits and labels.

    Records the output of the base model and of each of its submodules (with call counts) and
    the output layer's input, and replaces the output layer's result by values spread over
    [-64, 64]. The labels are the last vocabulary index, the largest planted logit of each row,
    so the model's cross-entropy is small and an added term stands out. Returns
    ``(model output, records, labels)``.
    """
    seen: dict[str, Any] = {"head_calls": 0, "calls": {}, "hidden": {}}

    def record(name):
        def hook(module, args, output):
            seen["calls"][name] = seen["calls"].get(name, 0) + 1
            seen["hidden"][name] = _hidden_of(output)
        return hook

    def plant_logits(module, args, output):
        seen["head_calls"] += 1
        seen["head_input"] = args[0]
        planted = torch.linspace(-64.0, 64.0, output.numel(), device=output.device)
        seen["planted"] = planted.reshape(output.shape).to(output.dtype)
        return seen["planted"]

    weight = linear_parts(head)[0].weight
    vocab_size = weight.shape[0]
    ids = (torch.arange(_PROBE_LENGTH, device=weight.device) % vocab_size)[None]
    labels = torch.full_like(ids, vocab_size - 1)
    handles = [module.register_forward_hook(record(name))
               for name, module in base.named_modules() if module is not head]
    handles.append(head.register_forward_hook(plant_logits))
    patch = model.__dict__.get(_STATE)  # a patched copy (deepcopy) runs its own forward
    forward = model if patch is None else patch.forward
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _running(patch):
            output = forward(input_ids=ids, labels=labels, use_cache=False, **extra)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return output, seen, labels


def _field(output: Any, name: str, index: int | None = None) -> Any:
    if isinstance(output, Mapping):
        return output.get(name)
    return None if index is None else output[index]


def _adds_exactly(output: Any, planted: Tensor, labels: Tensor, coefficient: float | None) -> bool:
    """Whether the model's loss is the cross-entropy of the planted logits plus, when it returned
    an ``aux_loss``, ``coefficient * aux_loss``."""
    loss = _field(output, "loss", 0)
    expected = nn.functional.cross_entropy(planted[0, :-1].float(), labels[0, 1:])
    aux = _field(output, "aux_loss")
    if aux is not None:
        if coefficient is None:
            return False
        expected = expected + coefficient * aux.to(expected.device)
    return (isinstance(loss, Tensor) and loss.numel() == 1
            and torch.allclose(loss.float(), expected.float(), rtol=1e-5, atol=1e-6))


def _check_logits_are_the_head(model: nn.Module) -> _Fusable:
    """Refuse a model whose logits are not ``lm_head(h)`` or whose loss adds unknown terms.

    ``_run_probe`` runs the model once. Accepted iff the output layer ran once, on exactly the
    output ``h`` of the base model or, failing that, of one of its submodules called once (the
    outermost: OPT's forward calls ``model.decoder``, not ``model``); the model returned exactly
    the planted logits; and its loss is their cross-entropy plus, if it returned an ``aux_loss``
    (a MoE router's load-balancing loss), ``_aux_loss_coefficient(model) * aux_loss``. If the
    model takes ``output_router_logits`` and returned no ``aux_loss``, a second run with
    ``output_router_logits=True`` checks that coefficient; if it does not reproduce the loss, the
    model is accepted but a forward that returns an ``aux_loss`` is refused. Cached per model.
    """
    fusable = _VERIFIED.get(model)
    if fusable is not None:
        return fusable
    base, head = _parts(model)
    name = type(model).__name__
    parameters = inspect.signature(model.forward).parameters
    if "logits_to_keep" not in parameters:
        raise ValueError(f"{name}.forward has no logits_to_keep argument (needs "
                         "transformers >= 4.50), so its logits cannot be skipped")
    output, seen, labels = _run_probe(model, base, head)
    if seen["head_calls"] != 1:
        raise ValueError(f"{name} called its output layer {seen['head_calls']} times for one "
                         "forward; the fused loss needs exactly one lm_head(hidden) call")
    head_input = seen["head_input"]
    hidden = seen["hidden"]
    sources = [module for module, _ in base.named_modules()  # outermost first
               if seen["calls"].get(module) == 1 and hidden[module] is not None
               and hidden[module].shape == head_input.shape
               and torch.equal(hidden[module], head_input)]
    if not sources:
        if "" in seen["calls"]:
            raise ValueError(f"{name} transforms the final hidden states before its output "
                             "layer (e.g. a scaling such as MiniCPM's), so its logits are not "
                             "lm_head(last_hidden_state) and the fused loss would be wrong; use "
                             "the model's logits with make_compute_loss_func(loss) instead")
        raise ValueError(f"{name}'s output layer reads no output of its base model "
                         f"({type(base).__name__}) or of a submodule of it called once, so the "
                         "fused loss cannot find its hidden states; use the model's logits with "
                         "make_compute_loss_func(loss) instead")
    planted = seen["planted"]
    logits = _field(output, "logits", 1)
    if logits.shape != planted.shape or not torch.equal(logits.float(), planted.float()):
        raise ValueError(f"{name} transforms the output layer's logits (e.g. Granite's "
                         "logits_scaling, Gemma-2's final_logit_softcapping, Cohere's "
                         "logit_scale), so the fused loss on lm_head(hidden) would be wrong; use "
                         "the model's logits with make_compute_loss_func(loss) instead")
    coefficient = _aux_loss_coefficient(model)
    if not _adds_exactly(output, planted, labels, coefficient):
        raise ValueError(_unreproducible(name, _field(output, "aux_loss") is not None))
    if _field(output, "aux_loss") is None and "output_router_logits" in parameters:
        routed, seen, labels = _run_probe(model, base, head, output_router_logits=True)
        reproducible = _adds_exactly(routed, seen["planted"], labels, coefficient)
    else:
        reproducible = coefficient is not None
    fusable = _VERIFIED[model] = _Fusable(sources[0], reproducible)
    return fusable


def _unreproducible(name: str, routed: bool) -> str:
    if routed:
        return (f"{name} adds its router's aux_loss to its loss in a way the fused loss cannot "
                "reproduce (a weight other than router_aux_loss_coef, or a z-loss); set "
                "output_router_logits=False (in the config or the call) to train without it, "
                "or use the model's logits with make_compute_loss_func(loss)")
    return (f"{name}'s own loss is not the cross-entropy of its logits: it adds a term the "
            "fused loss cannot reproduce (e.g. a z-loss on the logits); turn that term off in "
            "the config (e.g. z_loss_coefficient=0) or use the model's logits with "
            "make_compute_loss_func(loss)")


# ----------------------------------------------------------------------------------------------
# The patched forward.


@dataclass
class _Patch:
    loss: OutputLoss | None
    chunk_size: int | None
    eval_logits: bool
    forward: Callable[..., Any]  # the forward the patch wraps (bound to the model)
    previous: Callable[..., Any] | None  # an instance-level forward that was there before
    signature: inspect.Signature
    loss_type: Any  # the model's own loss_type attribute (_MISSING if it had none)
    function: Callable[..., Any] | None = None  # the patched forward's function
    guard: int | None = None  # the id of _guard_the_base_model's hook on the base model
    running: int = 0  # how many calls of the patched forward (or the probe) are under way


@contextmanager
def _running(patch: _Patch | None) -> Iterator[None]:
    if patch is None:
        yield
        return
    patch.running += 1
    try:
        yield
    finally:
        patch.running -= 1


def _wrapped_chain(function: Any) -> list[Any]:
    """A function and the functions it wraps (``__wrapped__``, a method's ``__func__``)."""
    chain: list[Any] = []
    while function is not None and len(chain) < 16:
        chain.append(function)
        function = getattr(function, "__wrapped__", None) or getattr(function, "__func__", None)
    return chain


def _guard_the_base_model(model: nn.Module, base: nn.Module, patch: _Patch) -> None:
    """Refuse a forward that replaced the patched one and runs the base model without it.

    Some trainers replace ``model.forward`` after it was patched with a forward that runs the
    base model and computes a loss of their own (TRL's ``SFTTrainer`` adds a fused LM head that
    computes cross-entropy): the chosen loss would silently not be trained. A forward pre-hook
    on the base model (``_check_base_model_call``) raises when it runs outside the patched
    forward while ``model.forward`` neither is nor wraps (``__wrapped__``) the patched one
    (accelerate's autocast wrapper, say, is fine). The hook finds the model through the base model's
    ``_OWNER`` entry, so a deep copy of the model checks itself, not the original.
    """
    base.__dict__[_OWNER] = model  # not a submodule: kept out of named_modules and state_dict
    patch.guard = base.register_forward_pre_hook(_check_base_model_call).id


def _check_base_model_call(base: nn.Module, args: Any) -> None:
    model = base.__dict__.get(_OWNER)
    patch = None if model is None else model.__dict__.get(_STATE)
    if patch is None:
        return
    chain = _wrapped_chain(model.__dict__.get("forward"))
    if patch.running or any(function is patch.function for function in chain):
        return  # inside the patched forward, or a direct call while it is (wrapped) in place
    # The modules that define the replacing functions (functools.wraps does not copy globals).
    owners = list(dict.fromkeys(getattr(function, "__globals__", {}).get("__name__", "?")
                                for function in chain))
    common = ("torch.", "accelerate.", "transformers.")
    owners = [owner for owner in owners if not owner.startswith(common)] or owners
    hint = (" TRL's SFTTrainer computes its own cross-entropy: train with "
            "logitkit.losses.trl.FusedLossSFTTrainer(model=..., loss=...) instead."
            if any(owner.startswith("trl") for owner in owners) else "")
    raise RuntimeError(f"{type(model).__name__} was patched by patch_causal_lm, but its "
                       f"forward was replaced afterwards (by {', '.join(owners)}) and runs "
                       "the base model without the patched forward, so its loss is not the "
                       f"one set by patch_causal_lm.{hint}")


def _fused_head_loss(patch: _Patch, head: nn.Module, hidden: Tensor, labels: Tensor | None,
                     shift_labels: Tensor | None,
                     num_items_in_batch: int | Tensor | None) -> Tensor:
    """The loss of ``head(hidden)`` (HF's shift and reduction), fused and chunked, in float32+.

    The head is taken as one linear map of its input (``head_operands``: LoRA's dropout is drawn
    on every position, as the layer's own forward draws it, before the shift)."""
    hidden, weight, bias = head_operands(head, hidden)
    if shift_labels is None:
        hidden, target = shifted(hidden, labels)
    else:
        target = shift_labels
    if hasattr(weight, "full_tensor"):
        raise ValueError("the output layer's weight is a sharded DTensor inside the model's "
                         "forward: shard the blocks and the whole model with fully_shard, not "
                         "lm_head on its own")
    loss = patch.loss
    if isinstance(loss, nn.Module):
        loss.to(weight.device)
    hidden = hidden.to(weight.dtype)
    target = target.to(hidden.device)

    def compute(reduction: str) -> Tensor:
        if loss is None:
            return linear_cross_entropy(hidden, weight, target, bias=bias,
                                        ignore_index=IGNORE_INDEX, reduction=reduction,
                                        chunk_size=patch.chunk_size)
        return loss.linear(hidden, weight, target, bias=bias, chunk_size=patch.chunk_size,
                           reduction=reduction)

    with torch.autocast(hidden.device.type, enabled=False):
        return reduce_by_items(compute, num_items_in_batch)


def _with_loss(output: Any, loss: Tensor) -> Any:
    """The model's output with ``loss`` in front (ModelOutput field order, or a tuple)."""
    if isinstance(output, tuple):
        return (loss, *output)
    fields = {key: value for key, value in output.items() if key != "loss"}
    return type(output)(loss=loss, **fields)


def _ask_for_dict(patch: _Patch, model: nn.Module, arguments: dict[str, Any]) -> bool:
    """Set ``return_dict=True`` in the call (so ``aux_loss`` can be read by name); returns
    whether the caller asked for a tuple (``return_dict=False``, in the call or the config)."""
    parameters = patch.signature.parameters
    if "return_dict" in parameters:
        asked = arguments.get("return_dict")
        arguments["return_dict"] = True
    else:
        var_keyword = next((name for name, parameter in parameters.items()
                            if parameter.kind is inspect.Parameter.VAR_KEYWORD), None)
        if var_keyword is None:
            return False
        asked = arguments.setdefault(var_keyword, {}).get("return_dict")
        arguments[var_keyword]["return_dict"] = True
    if asked is None:
        asked = getattr(getattr(model, "config", None), "return_dict", True)
    return asked is False


def _patched_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The model's forward; with labels, its loss is the fused loss set by patch_causal_lm
    (plus ``coefficient * aux_loss`` when the model returns a router ``aux_loss``)."""
    patch: _Patch = self.__dict__[_STATE]
    with _running(patch):
        return _fused_forward(self, patch, *args, **kwargs)


def _fused_forward(self: nn.Module, patch: _Patch, *args: Any, **kwargs: Any) -> Any:
    bound = patch.signature.bind(*args, **kwargs)
    arguments = bound.arguments
    labels = arguments.get("labels")
    extra = bound.kwargs
    shift_labels = extra.get("shift_labels")
    if labels is None and shift_labels is None:
        return patch.forward(*args, **kwargs)
    base, head = _parts(self)
    fusable = _check_logits_are_the_head(self)
    arguments["labels"] = None
    as_tuple = _ask_for_dict(patch, self, arguments)
    skip_logits = self.training or not patch.eval_logits
    if skip_logits:
        keep = arguments.get("logits_to_keep", 0)
        if not (isinstance(keep, int) and keep == 0):
            raise ValueError("logits_to_keep cannot be combined with labels in a model patched "
                             "by patch_causal_lm: the loss covers every position")
        device = (labels if labels is not None else shift_labels).device
        arguments["logits_to_keep"] = torch.empty(0, dtype=torch.long, device=device)
    seen: dict[str, Tensor | None] = {}
    handle = base.get_submodule(fusable.hidden_module).register_forward_hook(
        lambda module, inputs, out: seen.__setitem__("hidden", _hidden_of(out)))
    try:
        output = patch.forward(*bound.args, **bound.kwargs)
    finally:
        handle.remove()
    loss = _fused_head_loss(patch, head, seen["hidden"], labels, shift_labels,
                            extra.get("num_items_in_batch"))
    aux = _field(output, "aux_loss")
    if aux is not None:
        coefficient = _aux_loss_coefficient(self)  # read now: it may have been changed
        if not fusable.aux_reproducible or coefficient is None:
            raise ValueError(_unreproducible(type(self).__name__, routed=True))
        loss = loss + coefficient * aux.to(loss.device)
    output = _with_loss(output, loss)
    return output.to_tuple() if as_tuple and not isinstance(output, tuple) else output


def _patched_function(signature: inspect.Signature) -> Callable[..., Any]:
    """``_patched_forward`` showing the wrapped forward's signature (Trainer reads it to choose
    dataset columns and to decide whether to pass ``num_items_in_batch``)."""

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return _patched_forward(self, *args, **kwargs)

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(
        parameters=[self_parameter, *signature.parameters.values()])
    forward.__doc__ = _patched_forward.__doc__
    return forward


def patch_causal_lm(model: nn.Module, loss: OutputLoss | None = None, *,
                    chunk_size: int | None = None, eval_logits: bool = True) -> nn.Module:
    """Make ``model(**batch, labels=labels).loss`` the fused ``loss`` (CE by default); returns it.

    With ``h = base_model(...).last_hidden_state`` and the output layer ``lm_head``, the patched
    model's loss is (Hugging Face's shift and reduction)::

        loss.linear(h[:, :-1], lm_head.weight, labels[:, 1:], bias=lm_head.bias, reduction="mean")
        # or, with num_items_in_batch: the "sum" reduction divided by num_items_in_batch

    ``loss`` is an ``OutputLoss`` (``CrossEntropyLoss``, ``EMOLoss``, ``TaiLrLoss``); its
    ``linear`` method is called with ``hidden[:, :-1]``, the output layer's weight and bias and
    ``labels[:, 1:]`` (or ``shift_labels`` if passed). A MoE model that returns a router
    ``aux_loss`` (``output_router_logits=True``) gets ``router_aux_loss_coef * aux_loss`` added,
    as its own forward does; a model whose loss adds anything the check cannot reproduce (another
    weight, a z-loss) is refused with a ValueError (turn the term off, e.g.
    ``output_router_logits=False``). The loss module is kept outside the model's
    state dict; its buffers follow the head's device; changing its attributes (e.g. a TaiLr
    ``gamma``) takes effect at the next forward.

    With labels, in training mode the model returns empty logits (shape (batch, 0, V)): they are
    never formed. In eval mode it returns the model's full logits too (for metrics), unless
    ``eval_logits=False``. Without labels the model behaves as before. Patch before wrapping
    (``DDP(patch_causal_lm(model, loss))``, or before ``fully_shard``); patching again replaces
    the loss. The check that the logits are exactly ``lm_head(last_hidden_state)`` (see the
    module docstring) runs one tiny forward, once per model.

    A PEFT ``PeftModel`` is accepted as it is (LoRA, prompt tuning, ...); LoRA or
    ``modules_to_save`` on the output layer is fused exactly (see the module docstring).

    Args:
        model: a Hugging Face causal LM, possibly wrapped (DDP, torch.compile, a PEFT
            ``PeftModel``); required.
        loss: the ``OutputLoss`` to compute, or None for cross-entropy; default None.
        chunk_size: tokens per chunk of the fused loss, or None for automatic; default None.
        eval_logits: in eval mode, also return the model's full logits; default True.

    Returns:
        ``model`` itself, patched in place.

    Raises:
        ValueError: ``model`` is not a fusable causal LM (no base model, an output layer that
            is not one linear map (quantised, DoRA), no ``logits_to_keep``, or logits that are
            not ``lm_head(last_hidden_state)``).
        TypeError: ``loss`` has no ``linear`` method.

    Reference:
        The loss's own (EMO: Ren et al., ICLR 2024, arXiv 2310.04691; TaiLr: Ji et al., ICLR
        2023, arXiv 2302.13344); the shift and reduction are Hugging Face's ``ForCausalLMLoss``.

    Example:
        >>> import torch, transformers
        >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
        ...                                  n_positions=8, bos_token_id=0, eos_token_id=0)
        >>> model = transformers.GPT2LMHeadModel(config).eval()  # tiny, random weights
        >>> from logitkit.losses import TaiLrLoss, patch_causal_lm, unpatch_causal_lm
        >>> ids = torch.tensor([[1, 5, 2, 7, 3]])
        >>> own = model(input_ids=ids, labels=ids).loss
        >>> fused = patch_causal_lm(model)(input_ids=ids, labels=ids).loss  # CE, fused
        >>> torch.allclose(fused, own)
        True
        >>> _ = patch_causal_lm(model, TaiLrLoss(0.5))  # patching again replaces the loss
        >>> bool(model(input_ids=ids, labels=ids).loss < own)  # TaiLr < CE when gamma > 0
        True
        >>> _ = unpatch_causal_lm(model)
    """
    model_ = _unwrap(model)
    _check_logits_are_the_head(model_)
    if loss is not None and not callable(getattr(loss, "linear", None)):
        raise TypeError(f"loss must be an OutputLoss (with a .linear method), got "
                        f"{type(loss).__name__}")
    current = model_.__dict__.get(_STATE)
    if current is None:
        forward = model_.forward
        signature = inspect.signature(forward)
        patch = model_.__dict__[_STATE] = _Patch(loss, chunk_size, eval_logits, forward,
                                                 model_.__dict__.get("forward"), signature,
                                                 model_.__dict__.get("loss_type", _MISSING))
        patch.function = _patched_function(signature)
        model_.forward = MethodType(patch.function, model_)
        _guard_the_base_model(model_, _parts(model_)[0], patch)
        # Hugging Face's name for a loss that shifts labels: Trainer then counts
        # num_items_in_batch over labels[:, 1:] (for GPT-2, whose loss_type is None, it would
        # count position 0 too, which is never a target).
        model_.loss_type = "ForCausalLM"
    else:
        current.loss, current.chunk_size, current.eval_logits = loss, chunk_size, eval_logits
    return model


def unpatch_causal_lm(model: nn.Module) -> nn.Module:
    """Undo ``patch_causal_lm``: the model's own forward and loss again; returns the model.

    Restores ``model.forward`` (and an instance-level forward that was there before) and the
    model's ``loss_type``, so afterwards ``model(**batch, labels=labels).loss`` is again the
    model's own ``CE(lm_head(h)[:, :-1], labels[:, 1:])``. A model that is not patched is
    returned unchanged.

    Args:
        model: a model patched by ``patch_causal_lm``, possibly wrapped; required.

    Returns:
        ``model`` itself.

    Reference:
        Hugging Face ``transformers`` causal LMs (no paper; see ``patch_causal_lm``).

    Example:
        >>> import torch, transformers
        >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
        ...                                  n_positions=8, bos_token_id=0, eos_token_id=0)
        >>> model = transformers.GPT2LMHeadModel(config).eval()  # tiny, random weights
        >>> from logitkit.losses import patch_causal_lm, unpatch_causal_lm
        >>> _ = patch_causal_lm(model)
        >>> "forward" in vars(model)
        True
        >>> "forward" in vars(unpatch_causal_lm(model))
        False
    """
    model_ = _unwrap(model)
    patch = model_.__dict__.pop(_STATE, None)
    if patch is not None:
        base = _parts(model_)[0]
        base._forward_pre_hooks.pop(patch.guard, None)  # by id: a deep copy has its own hooks
        base.__dict__.pop(_OWNER, None)
        del model_.forward
        if patch.previous is not None:
            model_.forward = patch.previous
        if patch.loss_type is _MISSING:
            del model_.loss_type
        else:
            model_.loss_type = patch.loss_type
    return model


@contextmanager
def _patched(model: nn.Module, loss: OutputLoss | None, chunk_size: int | None) -> Iterator[None]:
    """``model`` computes ``loss`` (never forming logits) inside the block, then as before."""
    model_ = _unwrap(model)
    before = model_.__dict__.get(_STATE)
    saved = None if before is None else (before.loss, before.chunk_size, before.eval_logits)
    patch_causal_lm(model_, loss, chunk_size=chunk_size, eval_logits=False)
    try:
        yield
    finally:
        if saved is None:
            unpatch_causal_lm(model_)
        else:
            before.loss, before.chunk_size, before.eval_logits = saved


def causal_lm_loss(model: nn.Module, batch: Mapping[str, Tensor], loss: OutputLoss | None = None,
                   *, chunk_size: int | None = None,
                   num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Next-token loss of a Hugging Face causal LM, fused on its final hidden states.

    With ``h = base_model(**batch).last_hidden_state`` and labels ``y``::

        loss(lm_head(h)[:, :-1], y[:, 1:])   # mean over counted tokens, or sum / num_items

    computed by ``loss.linear`` in chunks, so the logits are never formed. ``model`` may be
    wrapped (DDP, FSDP2, torch.compile): the loss is computed inside its forward (see
    ``patch_causal_lm``, applied for this call only), so the wrapper's hooks run. ``batch`` holds
    the model inputs (``input_ids``, ``attention_mask``, ...) and optionally ``labels`` (-100 is
    ignored); without labels, the targets are ``input_ids`` with padding (``attention_mask ==
    0``) ignored. ``loss`` defaults to cross-entropy, which reproduces
    ``model(**batch, labels=labels).loss``. The loss's own ``reduction`` is replaced by Hugging
    Face's: the mean over counted tokens, or their sum over ``num_items_in_batch``.

    Args:
        model: a Hugging Face causal LM, possibly wrapped (DDP, FSDP2, torch.compile); required.
        batch: the model inputs, with ``input_ids`` and optionally ``labels``; required.
        loss: the ``OutputLoss`` to compute, or None for cross-entropy; default None.
        chunk_size: tokens per chunk of the fused loss, or None for automatic; default None.
        num_items_in_batch: divide the summed loss by this, or None for the mean; default None.

    Returns:
        The scalar loss (float32, or float64 for a float64 model), differentiable wrt the model.

    Raises:
        ValueError: ``batch`` has no ``input_ids``, or ``model`` cannot be fused (see
            ``patch_causal_lm``).
        TypeError: ``loss`` has no ``linear`` method.

    Reference:
        The loss's own (EMO: Ren et al., ICLR 2024, arXiv 2310.04691; TaiLr: Ji et al., ICLR
        2023, arXiv 2302.13344); the shift and reduction are Hugging Face's ``ForCausalLMLoss``.

    Example:
        >>> import torch, transformers
        >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
        ...                                  n_positions=8, bos_token_id=0, eos_token_id=0)
        >>> model = transformers.GPT2LMHeadModel(config).eval()  # tiny, random weights
        >>> from logitkit.losses import EMOLoss, causal_lm_loss
        >>> batch = {"input_ids": torch.tensor([[1, 5, 2, 7, 3]])}
        >>> fused = causal_lm_loss(model, batch)  # cross-entropy, logits never formed
        >>> torch.allclose(fused, model(**batch, labels=batch["input_ids"]).loss)
        True
        >>> emo = EMOLoss(model.lm_head.weight.detach().clone(), mle_weight="adaptive")
        >>> causal_lm_loss(model, batch, emo).backward()
    """
    if "input_ids" not in batch:
        raise ValueError("batch must contain input_ids")
    inputs = dict(batch)
    if inputs.get("labels") is None:
        labels = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is not None:
            labels = labels.masked_fill(mask == 0, getattr(loss, "ignore_index", IGNORE_INDEX))
        inputs["labels"] = labels
    if num_items_in_batch is not None:
        inputs["num_items_in_batch"] = num_items_in_batch
    with _patched(model, loss, chunk_size):
        output = model(**inputs)
    return output["loss"] if isinstance(output, Mapping) else output[0]
