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
    (``patch_causal_lm(model, loss, chunk_size=chunk_size)``; ``unpatch_causal_lm`` undoes it).
    ``compute_loss_func``, ``model_init`` and label smoothing are refused: the loss is ``loss``.
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

    Before each optimizer step ``loss.gamma = start + (end - start) * min(step / total, 1)`` with
    ``step = state.global_step`` and ``total = total_steps`` (default: the run's ``max_steps``).
    Works with any Trainer whose loss reads ``loss.gamma`` (``FusedLossTrainer``, or
    ``make_compute_loss_func(loss)``); each process of a distributed run sets the same value.
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
