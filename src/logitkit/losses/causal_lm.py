"""Fused losses inside a Hugging Face causal LM's own forward (no ``transformers`` import here).

``patch_causal_lm(model, loss)`` makes ``model(**batch, labels=labels).loss`` the fused loss
(``loss.linear(hidden[:, :-1], lm_head.weight, labels[:, 1:], bias=lm_head.bias)``, CE by
default) computed *inside* ``model.forward``. So every hook that wraps the forward runs as for the
unpatched model: DDP's gradient synchronisation, FSDP2's un-sharding of the root's parameters (the
embedding and the head), accelerate's autocast wrapper. The model's own forward still runs; it is
asked for the logits of no position (``logits_to_keep`` = an empty index tensor), and the final
hidden states are read from the base model's output, so in training the (batch x length x V)
logits never exist.

The fused loss equals the model's loss only if its logits are exactly ``lm_head(h)`` with ``h``
the base model's ``last_hidden_state``. This is checked, once per model, by running it on four
tokens with the output layer's result replaced by known values (``_check_logits_are_the_head``):
the model must feed the base model's hidden states unchanged to its ``nn.Linear`` output layer,
call it once, and return that layer's output unchanged. Any scaling, soft-capping, clamping or
multiplier before or after the head (Granite ``logits_scaling``, Gemma-2
``final_logit_softcapping``, Cohere ``logit_scale``, FalconH1 ``lm_head_multiplier``, MiniCPM3
hidden scaling, ...) fails the check with a ``ValueError``, whatever the config field is called.

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
from contextlib import contextmanager
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch
from torch import Tensor, nn

from logitkit.losses._base import OutputLoss, reduce_by_items, shifted
from logitkit.losses.fused import linear_cross_entropy

IGNORE_INDEX = -100
_PROBE_LENGTH = 4
_STATE = "_logitkit_fused_loss"
_VERIFIED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_MISSING = object()


# ----------------------------------------------------------------------------------------------
# Which models can be fused.


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP/DataParallel (``.module``) or torch.compile."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``(base model, output layer)``, or ValueError if the model is not a fusable causal LM."""
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(base, nn.Module) or base is model or head is None:
        raise ValueError("model must be a Hugging Face causal LM with a base model and an output "
                         f"layer (model.base_model, model.get_output_embeddings()), got "
                         f"{type(model).__name__}")
    if not isinstance(head, nn.Linear) or type(head).forward is not nn.Linear.forward:
        raise ValueError(f"{type(model).__name__}'s output layer is a {type(head).__name__}; the "
                         "fused loss needs a plain nn.Linear (not quantised, not an adapter)")
    return base, head


def _last_hidden_state(output: Any) -> Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    return output[0] if hidden is None else hidden


def _check_logits_are_the_head(model: nn.Module) -> None:
    """Refuse a model whose logits are not ``lm_head(base_model(...).last_hidden_state)``.

    One forward on ``_PROBE_LENGTH`` tokens, in eval mode without gradients, with hooks that
    record the base model's output and the output layer's input, and replace the output layer's
    result by planted values spread over [-64, 64]. Accepted iff the output layer ran once, on
    exactly the base model's hidden states, and the model returned exactly the planted values.
    Cached per model object.
    """
    if model in _VERIFIED:
        return
    base, head = _parts(model)
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"{type(model).__name__}.forward has no logits_to_keep argument (needs "
                         "transformers >= 4.50), so its logits cannot be skipped")
    seen: dict[str, Any] = {"head_calls": 0}

    def record_hidden(module, args, output):
        seen["hidden"] = _last_hidden_state(output)

    def plant_logits(module, args, output):
        seen["head_calls"] += 1
        seen["head_input"] = args[0]
        planted = torch.linspace(-64.0, 64.0, output.numel(), device=output.device)
        seen["planted"] = planted.reshape(output.shape).to(output.dtype)
        return seen["planted"]

    vocab_size = head.weight.shape[0]
    ids = (torch.arange(_PROBE_LENGTH, device=head.weight.device) % vocab_size)[None]
    handles = [base.register_forward_hook(record_hidden), head.register_forward_hook(plant_logits)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    name = type(model).__name__
    logits = output["logits"] if isinstance(output, Mapping) else output[0]
    if seen["head_calls"] != 1 or "hidden" not in seen:
        raise ValueError(f"{name} called its output layer {seen['head_calls']} times for one "
                         "forward; the fused loss needs exactly one lm_head(hidden) call")
    hidden, head_input = seen["hidden"], seen["head_input"]
    if hidden.shape != head_input.shape or not torch.equal(hidden, head_input):
        raise ValueError(f"{name} transforms the final hidden states before its output layer "
                         "(e.g. a scaling such as MiniCPM's), so its logits are not "
                         "lm_head(last_hidden_state) and the fused loss would be wrong; use the "
                         "model's logits with make_compute_loss_func(loss) instead")
    planted = seen["planted"]
    if logits.shape != planted.shape or not torch.equal(logits.float(), planted.float()):
        raise ValueError(f"{name} transforms the output layer's logits (e.g. Granite's "
                         "logits_scaling, Gemma-2's final_logit_softcapping, Cohere's "
                         "logit_scale), so the fused loss on lm_head(hidden) would be wrong; use "
                         "the model's logits with make_compute_loss_func(loss) instead")
    _VERIFIED.add(model)


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


def _fused_head_loss(patch: _Patch, head: nn.Linear, hidden: Tensor, labels: Tensor | None,
                     shift_labels: Tensor | None,
                     num_items_in_batch: int | Tensor | None) -> Tensor:
    """The loss of ``head(hidden)`` (HF's shift and reduction), fused and chunked, in float32+."""
    if shift_labels is None:
        hidden, target = shifted(hidden, labels)
    else:
        target = shift_labels
    weight, bias = head.weight, head.bias
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


def _patched_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The model's forward; with labels, its loss is the fused loss set by patch_causal_lm."""
    patch: _Patch = self.__dict__[_STATE]
    bound = patch.signature.bind(*args, **kwargs)
    arguments = bound.arguments
    labels = arguments.get("labels")
    extra = bound.kwargs
    shift_labels = extra.get("shift_labels")
    if labels is None and shift_labels is None:
        return patch.forward(*args, **kwargs)
    base, head = _parts(self)
    arguments["labels"] = None
    skip_logits = self.training or not patch.eval_logits
    if skip_logits:
        keep = arguments.get("logits_to_keep", 0)
        if not (isinstance(keep, int) and keep == 0):
            raise ValueError("logits_to_keep cannot be combined with labels in a model patched "
                             "by patch_causal_lm: the loss covers every position")
        device = (labels if labels is not None else shift_labels).device
        arguments["logits_to_keep"] = torch.empty(0, dtype=torch.long, device=device)
    seen: dict[str, Tensor] = {}
    handle = base.register_forward_hook(
        lambda module, inputs, out: seen.__setitem__("hidden", _last_hidden_state(out)))
    try:
        output = patch.forward(*bound.args, **bound.kwargs)
    finally:
        handle.remove()
    loss = _fused_head_loss(patch, head, seen["hidden"], labels, shift_labels,
                            extra.get("num_items_in_batch"))
    return _with_loss(output, loss)


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
    ``labels[:, 1:]`` (or ``shift_labels`` if passed). The loss module is kept outside the model's
    state dict; its buffers follow the head's device; changing its attributes (e.g. a TaiLr
    ``gamma``) takes effect at the next forward.

    With labels, in training mode the model returns empty logits (shape (batch, 0, V)): they are
    never formed. In eval mode it returns the model's full logits too (for metrics), unless
    ``eval_logits=False``. Without labels the model behaves as before. Patch before wrapping
    (``DDP(patch_causal_lm(model, loss))``, or before ``fully_shard``); patching again replaces
    the loss. The check that the logits are exactly ``lm_head(last_hidden_state)`` (see the
    module docstring) runs one tiny forward, once per model.

    Args:
        model: a Hugging Face causal LM, possibly wrapped (DDP, torch.compile); required.
        loss: the ``OutputLoss`` to compute, or None for cross-entropy; default None.
        chunk_size: tokens per chunk of the fused loss, or None for automatic; default None.
        eval_logits: in eval mode, also return the model's full logits; default True.

    Returns:
        ``model`` itself, patched in place.

    Raises:
        ValueError: ``model`` is not a fusable causal LM (no base model or plain ``nn.Linear``
            head, no ``logits_to_keep``, or logits that are not ``lm_head(last_hidden_state)``).
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
        model_.__dict__[_STATE] = _Patch(loss, chunk_size, eval_logits, forward,
                                         model_.__dict__.get("forward"), signature,
                                         model_.__dict__.get("loss_type", _MISSING))
        model_.forward = MethodType(_patched_function(signature), model_)
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
