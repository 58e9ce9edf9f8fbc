"""Hugging Face ``transformers.Trainer`` with the fused EMO / TaiLr / CE losses.

Importing this module imports ``transformers`` (the ``hf`` extra); ``import logitkit.losses``
does not. Three lines turn a Trainer script into one that trains with EMO::

    from logitkit.losses import EMOLoss
    from logitkit.losses.hf import FusedLossTrainer
    trainer = FusedLossTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                               loss=EMOLoss(model.lm_head.weight.detach().clone(),
                                            mle_weight="adaptive"))

``FusedLossTrainer`` patches the model (``patch_causal_lm``) so that its forward computes the loss
fused from the final hidden states: in training the logits are never formed, and the Trainer's
own machinery is unchanged: gradient accumulation (``num_items_in_batch``: the sum over the
accumulated batch's tokens, divided by their count, as for Hugging Face's CE), evaluation
(``eval_loss`` is the same loss; logits are returned for ``compute_metrics``), several processes
(``torchrun --nproc_per_node N train.py``: the loss runs inside the DDP-wrapped forward; tested
with 2 CPU processes). For TaiLr's gamma schedule add
``GammaScheduleCallback(loss, start=0.0, end=0.8)`` to ``callbacks``.

Models whose logits are not exactly ``lm_head(last_hidden_state)`` (Granite, Gemma-2 with
soft-capping, Cohere, FalconH1 with a multiplier, MiniCPM3 with hidden scaling, ...) are refused
with a ValueError; train those with ``transformers.Trainer(...,
compute_loss_func=make_compute_loss_func(loss))`` on the model's own logits (not fused).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from logitkit._utils import require
from logitkit.losses.causal_lm import causal_lm_loss, patch_causal_lm, unpatch_causal_lm
from logitkit.losses.functional import tailr_gamma_schedule
from logitkit.losses.modules import OutputLoss

transformers = require("transformers", extra="hf", purpose="logitkit.losses.hf (Trainer)")
require("accelerate", extra="hf", purpose="transformers.Trainer")


class FusedLossTrainer(transformers.Trainer):
    """``transformers.Trainer`` whose model computes ``loss`` (CE by default) fused in its forward.

    ``FusedLossTrainer(model=model, args=args, ..., loss=TaiLrLoss(0.5), chunk_size=None)``; every
    other argument is ``transformers.Trainer``'s. The model is patched in place
    (``patch_causal_lm(model, loss, chunk_size=chunk_size)``; ``unpatch_causal_lm`` undoes it), so
    the training loss is, with ``h`` the final hidden states and Hugging Face's shift::

        loss.linear(h[:, :-1], lm_head.weight, labels[:, 1:], reduction="sum") / num_items_in_batch

    (the mean over counted tokens when Trainer passes no ``num_items_in_batch``).
    ``compute_loss_func``, ``model_init`` and label smoothing are refused: the loss is ``loss``.

    Args:
        model: the Hugging Face causal LM to train (patched in place); required.
        *args: ``transformers.Trainer``'s positional arguments (``args``, ...); default none.
        loss: the ``OutputLoss`` to train with, or None for cross-entropy; default None.
        chunk_size: tokens per chunk of the fused loss, or None for automatic; default None.
        **kwargs: ``transformers.Trainer``'s keyword arguments; default none.

    Returns:
        A ``transformers.Trainer``; ``train()``/``evaluate()`` report the fused loss.

    Raises:
        ValueError: no ``model`` (``model_init`` is unsupported), a ``compute_loss_func``, a
            nonzero ``label_smoothing_factor``, or a model that cannot be fused
            (``patch_causal_lm``).
        TypeError: ``loss`` has no ``linear`` method.

    Reference:
        The loss's own (EMO: Ren et al., ICLR 2024, arXiv 2310.04691; TaiLr: Ji et al., ICLR
        2023, arXiv 2302.13344); the training loop is ``transformers.Trainer``'s.

    Example:
        >>> import tempfile, torch, transformers
        >>> from logitkit.losses import TaiLrLoss
        >>> from logitkit.losses.hf import FusedLossTrainer
        >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
        ...                                  n_positions=8, bos_token_id=0, eos_token_id=0)
        >>> model = transformers.GPT2LMHeadModel(config)  # tiny, random weights
        >>> data = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * 4
        >>> out = tempfile.TemporaryDirectory()
        >>> args = transformers.TrainingArguments(out.name, max_steps=2, report_to=[],
        ...                                       use_cpu=True)
        >>> trainer = FusedLossTrainer(model=model, args=args, train_dataset=data,
        ...                            loss=TaiLrLoss(0.5))
        >>> # Not run here: training prints progress and writes checkpoints under out.name.
        >>> trainer.train()  # doctest: +SKIP
        >>> out.cleanup()
    """

    def __init__(self, model: nn.Module | None = None, *args: Any,
                 loss: OutputLoss | None = None, chunk_size: int | None = None,
                 **kwargs: Any) -> None:
        if model is None:
            raise ValueError("FusedLossTrainer needs model= (model_init is not supported)")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("FusedLossTrainer computes the loss itself (loss=...); do not pass "
                             "compute_loss_func")
        training_args = kwargs.get("args", args[0] if args else None)
        if getattr(training_args, "label_smoothing_factor", 0.0):
            raise ValueError("label_smoothing_factor is not supported by FusedLossTrainer: "
                             "label smoothing needs the logits the fused loss never forms")
        patch_causal_lm(model, loss, chunk_size=chunk_size)
        super().__init__(model, *args, **kwargs)


class GammaScheduleCallback(transformers.TrainerCallback):
    """Ramps ``loss.gamma`` (TaiLr) linearly over training: ``tailr_gamma_schedule``.

    Before each optimizer step::

        loss.gamma = start + (end - start) * min(step / total, 1)

    with ``step = state.global_step`` and ``total = total_steps`` (default: the run's
    ``max_steps``). Works with any Trainer whose loss reads ``loss.gamma`` (``FusedLossTrainer``,
    or ``make_compute_loss_func(loss)``); each process of a distributed run sets the same value.

    Args:
        loss: the loss whose ``gamma`` is set, e.g. a ``TaiLrLoss``; required.
        start: gamma at step 0, in [0, 1]; default 0.0.
        end: gamma from ``total_steps`` on, in [0, 1]; default 1.0.
        total_steps: steps of the ramp, or None for the run's ``max_steps``; default None.

    Returns:
        A ``transformers.TrainerCallback`` for ``Trainer(..., callbacks=[...])``.

    Raises:
        TypeError: ``loss`` has no ``gamma`` attribute.
        ValueError: ``start``/``end`` outside [0, 1], or ``total_steps <= 0``.

    Reference:
        Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
        ICLR 2023, arXiv 2302.13344 (the loss whose ``gamma`` this schedules).

    Example:
        >>> from types import SimpleNamespace
        >>> from logitkit.losses import TaiLrLoss
        >>> from logitkit.losses.hf import GammaScheduleCallback
        >>> loss = TaiLrLoss(0.0)
        >>> callback = GammaScheduleCallback(loss, start=0.0, end=0.8)
        >>> state = SimpleNamespace(global_step=5, max_steps=10)  # what Trainer passes
        >>> callback.on_step_begin(None, state, None)
        >>> loss.gamma
        0.4
    """

    def __init__(self, loss: OutputLoss, *, start: float = 0.0, end: float = 1.0,
                 total_steps: int | None = None) -> None:
        if not hasattr(loss, "gamma"):
            raise TypeError(f"loss must have a gamma attribute (TaiLrLoss), got "
                            f"{type(loss).__name__}")
        tailr_gamma_schedule(0, total_steps or 1, start=start, end=end)  # validates
        self.loss, self.start, self.end, self.total_steps = loss, start, end, total_steps

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        total = self.total_steps or state.max_steps
        self.loss.gamma = tailr_gamma_schedule(state.global_step, total, start=self.start,
                                               end=self.end)


__all__ = ["FusedLossTrainer", "GammaScheduleCallback", "causal_lm_loss", "patch_causal_lm",
           "unpatch_causal_lm"]
